// TLS with OpenSSL 3 through libevent's bufferevent_openssl: the server side of a TLS listener
// (SNI certificates, ALPN, optional client certificates, rotating session-ticket keys) and the
// client side towards a TLS pool (verification, SNI, name check, optional client certificate).
//
// A context is built once per configuration generation and shared by every worker thread: SSL_new
// on a shared SSL_CTX is thread-safe, and the callbacks below only read immutable state (the
// ticket key ring takes a lock). Each SSL holds a reference to its SSL_CTX, so a connection keeps
// the certificates it started with across a reload.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "config/config_error.h"
#include "metrics/metrics.h"
#include "proxy/core/libevent_ptr.h"

using SSL_CTX = struct ssl_ctx_st;
using SSL = struct ssl_st;
using X509 = struct x509_st;
using EVP_PKEY = struct evp_pkey_st;
using SSL_SESSION = struct ssl_session_st;

namespace wsgate::tls {

// One certificate chain with its key, as loaded from the files.
struct CertifiedKey;

class ServerContext {
 public:
  // Loads every certificate and key; null with |errors| (naming the file and key path) if any
  // file is missing, unreadable, not PEM, or a key does not match its certificate.
  static std::shared_ptr<ServerContext> Build(const config::ListenerTlsConfig& config,
                                              config::ConfigErrors* errors);
  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  // A bufferevent that runs the server handshake on the accepted socket |fd| and then carries
  // plaintext; it owns the SSL and the socket (freed and closed with it). Null on allocation
  // failure, in which case |fd| is closed.
  BufferEventPtr Accept(event_base* base, evutil_socket_t fd) const;

 private:
  ServerContext();
  static int OnServerName(SSL* ssl, int* alert, void* arg);
  static int OnAlpn(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                    const unsigned char* in, unsigned int inlen, void* arg);

  SSL_CTX* ctx_ = nullptr;
  std::vector<std::unique_ptr<CertifiedKey>> certificates_;  // [0] is the default
  std::string alpn_wire_;  // the configured protocols in ALPN wire format
};
using ServerContextPtr = std::shared_ptr<ServerContext>;

class ClientContext {
 public:
  static std::shared_ptr<ClientContext> Build(const config::PoolTlsConfig& config,
                                              config::ConfigErrors* errors);
  ~ClientContext();
  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;

  // A bufferevent (no socket yet) that runs the client handshake once bufferevent_socket_connect
  // has connected it, for the backend at |address| (host:port): SNI and the certificate name
  // check use server_name, or the address's host when that is empty. BEV_EVENT_CONNECTED means
  // connected and verified. The backend's last session is offered for resumption.
  BufferEventPtr Connect(event_base* base, const std::string& address) const;

 private:
  ClientContext() = default;
  static int OnNewSession(SSL* ssl, SSL_SESSION* session);

  SSL_CTX* ctx_ = nullptr;
  bool verify_ = true;
  std::string server_name_;
  // The latest session each backend gave us, by address (one per backend: bounded). Nodes are
  // never erased, so an SSL may point at its key for as long as this context lives.
  mutable std::mutex sessions_mutex_;  // connects on several worker threads
  mutable std::map<std::string, SSL_SESSION*> sessions_;
};
using ClientContextPtr = std::shared_ptr<ClientContext>;

// Builds every TLS context |config| names and returns the errors (empty when all load), for
// --check and start-up: a missing or bad certificate is a configuration error naming the file.
config::ConfigErrors CheckFiles(const config::ProxyConfig& config);

// On a TLS bufferevent whose output is flushed, send close_notify (before a TCP half-close).
void SendCloseNotify(bufferevent* bev);

// After a completed handshake on |bev|: its version and whether the session was resumed.
void HandshakeDetails(bufferevent* bev, metrics::TlsVersion* version, bool* resumed);

// True if |bev| is a TLS bufferevent whose handshake has not finished.
bool HandshakePending(bufferevent* bev);
// After BEV_EVENT_ERROR on a TLS bufferevent: why, as a metric label, and OpenSSL's words for the
// debug log. Drains the bufferevent's error queue. A server-side client that spoke plain HTTP is
// sent |plain_http_answer| in plaintext (nothing went over TLS yet), best effort, then FIN.
metrics::TlsFailure HandshakeFailure(bufferevent* bev, std::string* detail,
                                     std::string_view plain_http_answer = {});

}  // namespace wsgate::tls
