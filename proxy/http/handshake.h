// RFC 6455 opening handshake: validate the client's upgrade request (§4.2.1), build the request
// sent upstream, and check the backend's answer (§4.1) before anything is tunnelled.
//
// Pure apart from OpenSSL's digest and base64; no libevent, so it is unit-tested and fuzzed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http/extensions.h"
#include "proxy/http/head_parser.h"

namespace wsgate::http {

// Sec-WebSocket-Accept for |key|: base64(SHA-1(key + GUID)), via OpenSSL's EVP digest and
// EVP_EncodeBlock.
std::string ComputeAccept(std::string_view key);

// A Host field value without its port ("[::1]:80" -> "::1").
std::string_view StripPort(std::string_view host);

// True if |value| is a non-empty Host value: uri-host [":" port] (RFC 9112 §3.2, RFC 3986
// §3.2.2), where uri-host is a reg-name (IPv4 literals included) or a bracketed IPv6 literal,
// and port is 1 to 5 digits, at most 65535. Refuses "a b", "u@h", "h/p", "h:1:2", "[v1.x]".
bool IsValidHostValue(std::string_view value);

// The fields no forwarded request may get wrong, beyond the parser's checks: at most one Host,
// whose value, when not empty, IsValidHostValue; at most one Authorization and one
// Proxy-Authorization, so the credentials the auth hook checks are the only ones the backend
// can read. Returns the reason to answer 400 with, or nullptr.
const char* CheckHostAndCredentials(const HeadView& request);

// True if |key| is base64 that decodes to exactly 16 bytes.
bool IsValidWebSocketKey(std::string_view key);

struct ClientHandshakePolicy {
  const std::vector<std::string>* allowed_origins = nullptr;  // empty or null = any
};

// Outcome of checking a client request head.
struct ClientHandshake {
  int status = 0;               // 0 = valid upgrade; otherwise the HTTP status to answer with
  std::string reason;           // for logs and the response body
  std::string extra_header;     // e.g. "Sec-WebSocket-Version: 13\r\n"
  std::string_view host;        // Host without port, as sent
  std::string_view host_field;  // Host as sent (with port)
  std::string_view path;        // request target without query
  std::string_view key;         // Sec-WebSocket-Key
  bool is_upgrade = false;      // the request asked for a WebSocket upgrade
};

// Check a complete request head against RFC 6455 §4.2.1 and the Origin policy.
ClientHandshake CheckClientHandshake(const HeadView& request, const ClientHandshakePolicy& policy);

// A complete HTTP/1.1 error response that ends with a close: status line, Content-Type,
// Content-Length, Connection: close, |extra_header| (CRLF-terminated lines), then a short body.
std::string BuildErrorResponse(int status, std::string_view reason, std::string_view extra_header);

const char* StatusText(int status);

// The fields of a head that must not be forwarded: hop-by-hop by name (Connection, Keep-Alive,
// TE, Trailer, Upgrade, Transfer-Encoding, Proxy-*; RFC 9110 §7.6.1) or named by one of its
// Connection fields, except Host and Content-Length. The Connection lists are read once, so
// testing every field of a head costs no scan of all its fields per field.
class HopByHopFields {
 public:
  explicit HopByHopFields(const HeadView& head);
  bool Contains(std::string_view name) const;

 private:
  std::vector<std::string_view> named_;  // views into the head's buffer
};

// Who the client is, for the forwarding headers.
struct ForwardingInfo {
  std::string client_ip;  // "1.2.3.4" or "2001:db8::1": the connecting peer
  bool client_tls = false;
  std::string request_id;        // sent as X-Request-Id unless the client sent one
  bool peer_trusted = false;     // the peer is in trusted_proxies: its forwarding fields are kept
  std::string_view target = {};  // request target sent upstream (normalised); empty = as sent
};

// The upgrade request sent to the backend: the client's request line and fields, minus
// hop-by-hop fields (except the Upgrade/Connection pair the handshake needs), with the
// forwarding fields wsgate owns:
// * from an untrusted peer, every X-Forwarded-For, X-Real-IP, Forwarded, X-Forwarded-Proto,
//   X-Forwarded-Host and X-Forwarded-Port the client sent is dropped, and wsgate states
//   X-Forwarded-For and X-Real-IP (the peer), X-Forwarded-Proto, X-Forwarded-Host (Host) and
//   Forwarded (for, host, proto);
// * from a trusted peer (|info|.peer_trusted), X-Forwarded-For gets the peer appended, Forwarded
//   gets wsgate's element appended, and X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host and
//   X-Forwarded-Port are kept as sent (wsgate's own when absent).
// |proxy_fields| ("Name: value\r\n" lines wsgate states itself, e.g. X-Wsgate-Connection-Id) go
// last; any X-Wsgate-* field the client sent is dropped, so none can be spoofed, and so is any
// field named in |drop_fields| (the auth hook's copy_headers, on every route).
std::string BuildUpstreamRequest(const HeadView& request, const ForwardingInfo& info,
                                 std::string_view proxy_fields = {},
                                 const std::vector<std::string>* drop_fields = nullptr);

// How the body of a forwarded request is framed towards the backend.
enum class ForwardedBody { kWebSocketUpgrade, kNone, kLength, kChunked };

// The same rewrite for any request: a plain one loses Upgrade and every other hop-by-hop field;
// kChunked states "Transfer-Encoding: chunked" again (Content-Length is end-to-end and stays).
std::string BuildForwardedRequest(const HeadView& request, const ForwardingInfo& info,
                                  ForwardedBody body, std::string_view proxy_fields = {},
                                  const std::vector<std::string>* drop_fields = nullptr);

// Outcome of checking the backend's response head.
struct UpstreamVerdict {
  enum Kind { kUpgraded, kNotUpgraded, kInvalidUpgrade } kind = kInvalidUpgrade;
  std::string reason;
  bool permessage_deflate = false;  // RSV1 allowed on data frames
  bool other_extension = false;     // an unknown extension: all RSV bits allowed
  DeflateParams deflate;            // what permessage-deflate agreed, when it did
  bool deflate_frame = false;       // a per-frame deflate draft (also counts as other_extension)
  std::string deflate_frame_name;   // which one, as the 101 spelled it
};

UpstreamVerdict CheckUpstreamResponse(const HeadView& response, std::string_view expected_accept);

// The backend's non-101 response head rewritten for the client: the same status line and fields,
// minus hop-by-hop fields, plus "Connection: close".
std::string BuildRelayedResponseHead(const HeadView& response);

struct ResponseHeadOptions {
  bool keep_transfer_encoding = true;  // false when the body is relayed de-chunked
  bool close = true;                   // append "Connection: close"
  std::string_view extra_header;       // CRLF-terminated lines, e.g. a Set-Cookie
};

// A backend response head rewritten for the client: status line as HTTP/1.1, hop-by-hop fields
// removed, then |options|.
std::string BuildForwardedResponseHead(const HeadView& response,
                                       const ResponseHeadOptions& options);

}  // namespace wsgate::http
