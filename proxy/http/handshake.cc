#include "proxy/http/handshake.h"

#include <algorithm>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>

#include <cstring>
#include <memory>

namespace wsgate::http {
namespace {

constexpr std::string_view kWebSocketGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

bool IsBase64Char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

// Fields that describe one hop and must not be forwarded (RFC 9110 §7.6.1), plus the
// Upgrade/Connection pair, which wsgate rewrites itself.
bool IsHopByHopName(std::string_view name) {
  bool listed = false;
  switch (name.size()) {  // compare only against names of the same length
    case 2:
      listed = EqualsIgnoreCase(name, "te");
      break;
    case 7:
      listed = EqualsIgnoreCase(name, "trailer") || EqualsIgnoreCase(name, "upgrade");
      break;
    case 10:
      listed = EqualsIgnoreCase(name, "connection") || EqualsIgnoreCase(name, "keep-alive");
      break;
    case 17:
      listed = EqualsIgnoreCase(name, "transfer-encoding");
      break;
    default:
      break;
  }
  // Proxy-Connection, Proxy-Authorization, Proxy-Authenticate, ...: meant for this hop only.
  return listed || (name.size() > 6 && EqualsIgnoreCase(name.substr(0, 6), "proxy-"));
}

void AppendLine(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

// RFC 7239 §4: a node or host that is not a token must be a quoted-string.
std::string ForwardedValue(std::string_view value, bool is_ipv6_node) {
  std::string out = "\"";
  if (is_ipv6_node) out.push_back('[');
  for (char c : value) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  if (is_ipv6_node) out.push_back(']');
  out.push_back('"');
  return out;
}

// A Host name as host names are written: RFC 3986's reg-name without its percent-encoding and
// sub-delims. Those are legal in a URI but no DNS name has them, and parsers disagree on them
// (WHATWG URL decodes "adm%69n", some take "a.test,b.test" as a list), so a host-based route
// could be dodged: they are refused rather than guessed at.
bool IsRegName(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '.' || c == '_' || c == '~';
    if (!unreserved) return false;
  }
  return true;
}

// RFC 3986 port, bounded to what TCP can address: 1 to 5 digits, at most 65535.
bool IsPort(std::string_view port) {
  if (port.empty() || port.size() > 5) return false;
  unsigned value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value <= 65535;
}

// The forwarding fields wsgate states itself unless a trusted proxy already did.
enum class PeerStated { kNone, kRealIp, kProto, kHost, kPort };

PeerStated PeerStatedField(std::string_view name) {
  switch (name.size()) {
    case 9:
      return EqualsIgnoreCase(name, "x-real-ip") ? PeerStated::kRealIp : PeerStated::kNone;
    case 16:
      if (EqualsIgnoreCase(name, "x-forwarded-host")) return PeerStated::kHost;
      if (EqualsIgnoreCase(name, "x-forwarded-port")) return PeerStated::kPort;
      return PeerStated::kNone;
    case 17:
      return EqualsIgnoreCase(name, "x-forwarded-proto") ? PeerStated::kProto : PeerStated::kNone;
    default:
      return PeerStated::kNone;
  }
}

// |name| lower-cased with "_" read as "-": how CGI-style servers (WSGI, Rack, PHP-FPM) name a
// field, where "X_User_Id" and "X-User-Id" both become HTTP_X_USER_ID.
std::string CgiName(std::string_view name) {
  std::string out(name);
  for (char& c : out) {
    if (c == '_') c = '-';
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

// True if |name| (which holds a "_") is, to a CGI-style backend, a field wsgate states itself or
// drops: a forwarding field, an X-Wsgate-* field, or one of |drop_fields|.
bool IsOwnedFieldAlias(std::string_view name, const std::vector<std::string>* drop_fields) {
  const std::string alias = CgiName(name);
  if (alias == "x-forwarded-for" || alias == "forwarded" ||
      PeerStatedField(alias) != PeerStated::kNone || alias.rfind("x-wsgate-", 0) == 0) {
    return true;
  }
  return drop_fields != nullptr &&
         std::any_of(drop_fields->begin(), drop_fields->end(),
                     [&alias](const std::string& drop) { return CgiName(drop) == alias; });
}

ClientHandshake Reject(ClientHandshake result, int status, std::string reason,
                       std::string extra = {}) {
  result.status = status;
  result.reason = std::move(reason);
  result.extra_header = std::move(extra);
  return result;
}

}  // namespace

HopByHopFields::HopByHopFields(const HeadView& head) {
  for (const auto& field : head.parser().fields()) {
    if (!EqualsIgnoreCase(head.Get(field.name), "connection")) continue;
    ForEachListItem(head.Get(field.value), [this](std::string_view item) {
      // Host is end-to-end and never dropped, and neither is Content-Length: "Connection:
      // content-length" must not make the next hop frame the body differently from wsgate
      // (request smuggling). Hop-by-hop names go anyway; leaving them out keeps the usual
      // "Upgrade" and "keep-alive" lists from allocating.
      if (!item.empty() && !IsHopByHopName(item) && !EqualsIgnoreCase(item, "host") &&
          !EqualsIgnoreCase(item, "content-length")) {
        named_.push_back(item);
      }
      return false;
    });
  }
}

bool HopByHopFields::Contains(std::string_view name) const {
  if (IsHopByHopName(name)) return true;
  return std::any_of(named_.begin(), named_.end(),
                     [name](std::string_view named) { return EqualsIgnoreCase(named, name); });
}

std::string_view StripPort(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(1, close - 1);
  }
  size_t colon = host.rfind(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}

bool IsValidHostValue(std::string_view value) {
  std::string_view port;
  bool has_port = false;
  if (!value.empty() && value.front() == '[') {
    size_t close = value.find(']');
    if (close == std::string_view::npos) return false;
    // IPv6address only: no zone (RFC 6874 is for URIs, not Host) and no IPvFuture.
    std::string_view literal = value.substr(1, close - 1);
    char text[INET6_ADDRSTRLEN] = {};  // inet_pton wants a NUL-terminated copy
    if (literal.size() >= sizeof(text) || literal.find('\0') != std::string_view::npos) {
      return false;
    }
    literal.copy(text, literal.size());
    in6_addr address{};
    if (inet_pton(AF_INET6, text, &address) != 1) return false;
    std::string_view rest = value.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      has_port = true;
      port = rest.substr(1);
    }
  } else {
    size_t colon = value.find(':');
    if (!IsRegName(value.substr(0, colon))) return false;  // an IPv4 literal is a reg-name too
    if (colon != std::string_view::npos) {
      has_port = true;
      port = value.substr(colon + 1);
    }
  }
  return !has_port || IsPort(port);
}

const char* CheckHostAndCredentials(const HeadView& request) {
  // One pass over the fields, comparing only names of the right length.
  std::string_view host;
  int hosts = 0;
  int authorizations = 0;
  int proxy_authorizations = 0;
  for (const auto& field : request.parser().fields()) {
    std::string_view name = request.Get(field.name);
    if (name.size() == 4 && EqualsIgnoreCase(name, "host")) {
      if (++hosts == 1) host = request.Get(field.value);
    } else if (name.size() == 13 && EqualsIgnoreCase(name, "authorization")) {
      ++authorizations;
    } else if (name.size() == 19 && EqualsIgnoreCase(name, "proxy-authorization")) {
      ++proxy_authorizations;
    }
  }
  if (hosts > 1) return "more than one Host field";
  if (!host.empty() && !IsValidHostValue(host)) {
    return "invalid Host field (expected host[:port] or [IPv6]:port)";
  }
  if (authorizations > 1) return "more than one Authorization field";
  if (proxy_authorizations > 1) return "more than one Proxy-Authorization field";
  return nullptr;
}

std::string ComputeAccept(std::string_view key) {
  // EVP_sha1() makes every digest fetch SHA-1 from the provider again (OpenSSL 3), and a new
  // context costs two allocations: fetch once, and keep one context per thread.
  static EVP_MD* const sha1 = EVP_MD_fetch(nullptr, "SHA1", nullptr);
  struct ContextFree {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
  };
  thread_local const std::unique_ptr<EVP_MD_CTX, ContextFree> ctx(EVP_MD_CTX_new());
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (sha1 == nullptr || ctx == nullptr || EVP_DigestInit_ex(ctx.get(), sha1, nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), key.data(), key.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), kWebSocketGuid.data(), kWebSocketGuid.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), digest, &digest_len) != 1) {
    return {};
  }
  unsigned char encoded[64];
  int n = EVP_EncodeBlock(encoded, digest, static_cast<int>(digest_len));
  return std::string(reinterpret_cast<char*>(encoded), static_cast<size_t>(n));
}

bool IsValidWebSocketKey(std::string_view key) {
  // 16 bytes encode to 22 base64 characters plus "==".
  if (key.size() != 24 || key[22] != '=' || key[23] != '=') return false;
  for (size_t i = 0; i < 22; ++i) {
    if (!IsBase64Char(key[i])) return false;
  }
  return true;
}

const char* StatusText(int status) {
  switch (status) {
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 413:
      return "Content Too Large";
    case 426:
      return "Upgrade Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Error";
  }
}

std::string BuildErrorResponse(int status, std::string_view reason, std::string_view extra_header) {
  std::string body(reason);
  body.push_back('\n');
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + StatusText(status) + "\r\n";
  out.append("Content-Type: text/plain; charset=utf-8\r\n");
  out.append("Content-Length: " + std::to_string(body.size()) + "\r\n");
  out.append("Connection: close\r\n");
  out.append(extra_header);
  out.append("\r\n");
  out.append(body);
  return out;
}

ClientHandshake CheckClientHandshake(const HeadView& request, const ClientHandshakePolicy& policy) {
  const HeadParser& head = request.parser();
  ClientHandshake result;
  std::string_view target = request.Get(head.target());
  result.path = target.substr(0, target.find('?'));
  bool host_found = false;
  result.host_field = request.Field("host", &host_found);
  result.host = StripPort(result.host_field);

  if (head.version_major() != 1) return Reject(result, 505, "only HTTP/1.1 is supported");
  result.is_upgrade = request.FieldHasToken("upgrade", "websocket");
  if (!result.is_upgrade) {
    return Reject(result, 426, "this endpoint only accepts WebSocket upgrades",
                  "Upgrade: websocket\r\n");
  }
  if (request.Get(head.method()) != "GET") {
    return Reject(result, 400, "a WebSocket upgrade must use GET");
  }
  if (head.version_minor() != 1) return Reject(result, 400, "a WebSocket upgrade needs HTTP/1.1");
  if (target.empty() || target.front() != '/') {
    return Reject(result, 400, "request target must be in origin-form");
  }
  if (request.FieldCount("host") != 1 || result.host.empty()) {
    return Reject(result, 400, "exactly one non-empty Host field is required");
  }
  if (const char* bad = CheckHostAndCredentials(request)) return Reject(result, 400, bad);
  if (!request.FieldHasToken("connection", "upgrade")) {
    return Reject(result, 400, "Connection must contain the Upgrade token");
  }
  if (request.FieldCount("content-length") != 0 || request.FieldCount("transfer-encoding") != 0) {
    return Reject(result, 400, "a WebSocket upgrade must not carry a body");
  }
  if (request.FieldCount("sec-websocket-key") != 1) {
    return Reject(result, 400, "exactly one Sec-WebSocket-Key field is required");
  }
  result.key = request.Field("sec-websocket-key");
  if (!IsValidWebSocketKey(result.key)) {
    return Reject(result, 400, "Sec-WebSocket-Key must be base64 of 16 bytes");
  }
  if (request.FieldCount("sec-websocket-version") != 1 ||
      request.Field("sec-websocket-version") != "13") {
    return Reject(result, 426, "only WebSocket version 13 is supported",
                  "Sec-WebSocket-Version: 13\r\n");
  }
  if (policy.allowed_origins != nullptr && !policy.allowed_origins->empty()) {
    bool found = false;
    std::string_view origin = request.Field("origin", &found);
    bool allowed = false;
    if (found && request.FieldCount("origin") == 1) {
      for (const auto& candidate : *policy.allowed_origins) {
        if (origin == candidate) allowed = true;
      }
    }
    if (!allowed) return Reject(result, 403, "Origin not allowed");
  }
  return result;
}

std::string BuildUpstreamRequest(const HeadView& request, const ForwardingInfo& info,
                                 std::string_view proxy_fields,
                                 const std::vector<std::string>* drop_fields) {
  return BuildForwardedRequest(request, info, ForwardedBody::kWebSocketUpgrade, proxy_fields,
                               drop_fields);
}

std::string BuildForwardedRequest(const HeadView& request, const ForwardingInfo& info,
                                  ForwardedBody body, std::string_view proxy_fields,
                                  const std::vector<std::string>* drop_fields) {
  const HeadParser& head = request.parser();
  std::string out;
  out.reserve(head.head_length() + 256);
  out.append(request.Get(head.method()));
  out.push_back(' ');
  out.append(info.target.empty() ? request.Get(head.target()) : info.target);
  out.append(" HTTP/1.1\r\n");

  std::string forwarded_for;
  std::string forwarded;
  std::string_view host_field;
  bool has_real_ip = false;
  bool has_proto = false;
  bool has_host = false;
  const HopByHopFields hop_by_hop(request);
  for (const auto& field : head.fields()) {
    std::string_view name = request.Get(field.name);
    std::string_view value = request.Get(field.value);
    if (hop_by_hop.Contains(name)) continue;
    // "X_Forwarded_For" or "X_User_Id" is another field to wsgate, but the same one to a
    // CGI-style backend: an underscore alias of a field wsgate owns is dropped, trusted peer or
    // not.
    if (name.find('_') != std::string_view::npos && IsOwnedFieldAlias(name, drop_fields)) continue;
    // Only a trusted proxy's chain is extended; anyone else's is dropped, not believed.
    if (EqualsIgnoreCase(name, "x-forwarded-for")) {
      if (!info.peer_trusted) continue;
      if (!forwarded_for.empty()) forwarded_for.append(", ");
      forwarded_for.append(value);
      continue;
    }
    if (EqualsIgnoreCase(name, "forwarded")) {
      if (!info.peer_trusted) continue;
      if (!forwarded.empty()) forwarded.append(", ");
      forwarded.append(value);
      continue;
    }
    // The proxy states these itself; only a trusted proxy may have stated them first.
    if (PeerStated stated = PeerStatedField(name); stated != PeerStated::kNone) {
      if (!info.peer_trusted) continue;
      has_real_ip |= stated == PeerStated::kRealIp;
      has_proto |= stated == PeerStated::kProto;
      has_host |= stated == PeerStated::kHost;
      AppendLine(out, name, value);
      continue;
    }
    if (name.size() >= 9 && EqualsIgnoreCase(name.substr(0, 9), "x-wsgate-")) continue;
    if (drop_fields != nullptr &&
        std::any_of(drop_fields->begin(), drop_fields->end(),
                    [name](const std::string& drop) { return EqualsIgnoreCase(name, drop); })) {
      continue;
    }
    if (EqualsIgnoreCase(name, "host")) host_field = value;
    AppendLine(out, name, value);
  }
  if (body == ForwardedBody::kWebSocketUpgrade) {
    AppendLine(out, "Connection", "Upgrade");
    AppendLine(out, "Upgrade", "websocket");
  } else if (body == ForwardedBody::kChunked) {
    AppendLine(out, "Transfer-Encoding", "chunked");  // the body is relayed with its framing
  }

  if (!forwarded_for.empty()) forwarded_for.append(", ");
  forwarded_for.append(info.client_ip);
  AppendLine(out, "X-Forwarded-For", forwarded_for);
  if (!has_real_ip) AppendLine(out, "X-Real-IP", info.client_ip);
  const char* proto = info.client_tls ? "https" : "http";
  if (!has_proto) AppendLine(out, "X-Forwarded-Proto", proto);
  if (!has_host) AppendLine(out, "X-Forwarded-Host", host_field);

  bool ipv6 = info.client_ip.find(':') != std::string::npos;
  std::string element = "for=";
  element.append(ipv6 ? ForwardedValue(info.client_ip, true) : info.client_ip);
  element.append(";host=");
  element.append(ForwardedValue(host_field, false));
  element.append(";proto=");
  element.append(proto);
  if (!forwarded.empty()) forwarded.append(", ");
  forwarded.append(element);
  AppendLine(out, "Forwarded", forwarded);
  if (!info.request_id.empty() && request.FieldCount("x-request-id") == 0) {
    AppendLine(out, "X-Request-Id", info.request_id);
  }
  out.append(proxy_fields);
  out.append("\r\n");
  return out;
}

UpstreamVerdict CheckUpstreamResponse(const HeadView& response, std::string_view expected_accept) {
  const HeadParser& head = response.parser();
  UpstreamVerdict verdict;
  int status = head.status_code();
  if (status != 101) {
    if (status < 200) {
      verdict.reason = "backend sent an unexpected interim response " + std::to_string(status);
      return verdict;
    }
    verdict.kind = UpstreamVerdict::kNotUpgraded;
    verdict.reason = "backend answered " + std::to_string(status);
    return verdict;
  }
  if (head.version_major() != 1 || head.version_minor() != 1) {
    verdict.reason = "101 not over HTTP/1.1";
    return verdict;
  }
  if (!response.FieldHasToken("upgrade", "websocket")) {
    verdict.reason = "101 without Upgrade: websocket";
    return verdict;
  }
  if (!response.FieldHasToken("connection", "upgrade")) {
    verdict.reason = "101 without Connection: Upgrade";
    return verdict;
  }
  if (response.FieldCount("sec-websocket-accept") != 1 ||
      response.Field("sec-websocket-accept") != expected_accept) {
    verdict.reason = "101 with a missing or wrong Sec-WebSocket-Accept";
    return verdict;
  }
  std::string extension_error;
  for (const auto& field : head.fields()) {
    if (!EqualsIgnoreCase(response.Get(field.name), "sec-websocket-extensions")) continue;
    ForEachListItem(response.Get(field.value), [&verdict, &extension_error](std::string_view item) {
      std::string_view name = ListItemName(item);
      if (EqualsIgnoreCase(name, "permessage-deflate")) {
        // The parameters decide how wsgate inflates (limits.compression: inspect), so an answer
        // it cannot read is refused like any other bad 101 (RFC 7692 §7.1: the client fails).
        if (verdict.permessage_deflate) {
          extension_error = "101 accepts permessage-deflate twice";
          return true;
        }
        verdict.permessage_deflate = true;
        extension_error = ParseDeflateResponse(item, &verdict.deflate);
        if (!extension_error.empty()) extension_error = "101 with " + extension_error;
        return !extension_error.empty();
      } else if (!name.empty()) {
        verdict.other_extension = true;
        if (IsPerFrameDeflate(name)) {
          verdict.deflate_frame = true;
          verdict.deflate_frame_name.assign(name);
        }
      }
      return false;
    });
    if (!extension_error.empty()) {
      // A refused 101 negotiated nothing: no extension flag may outlive the verdict.
      UpstreamVerdict invalid;
      invalid.reason = std::move(extension_error);
      return invalid;
    }
  }
  verdict.kind = UpstreamVerdict::kUpgraded;
  return verdict;
}

std::string BuildRelayedResponseHead(const HeadView& response) {
  return BuildForwardedResponseHead(response, ResponseHeadOptions{});
}

std::string BuildForwardedResponseHead(const HeadView& response,
                                       const ResponseHeadOptions& options) {
  const HeadParser& head = response.parser();
  std::string out = "HTTP/1.1 " + std::to_string(head.status_code()) + " ";
  out.append(response.Get(head.reason()));
  out.append("\r\n");
  const HopByHopFields hop_by_hop(response);
  for (const auto& field : head.fields()) {
    std::string_view name = response.Get(field.name);
    // Transfer-Encoding stays when the body is relayed with its framing.
    bool keep = options.keep_transfer_encoding && EqualsIgnoreCase(name, "transfer-encoding");
    if (!keep && hop_by_hop.Contains(name)) continue;
    AppendLine(out, name, response.Get(field.value));
  }
  out.append(options.extra_header);
  if (options.close) AppendLine(out, "Connection", "close");
  out.append("\r\n");
  return out;
}

}  // namespace wsgate::http
