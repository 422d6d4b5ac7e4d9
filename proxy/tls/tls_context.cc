#include "proxy/tls/tls_context.h"

#include <arpa/inet.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>

#include "config/units.h"
#include "proxy/tls/ticket_keys.h"

namespace wsgate::tls {

struct CertifiedKey {
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
  STACK_OF(X509) * chain = nullptr;  // intermediates after the leaf

  ~CertifiedKey() {
    X509_free(cert);
    EVP_PKEY_free(key);
    sk_X509_pop_free(chain, X509_free);
  }
};

namespace {

// OpenSSL asks for the key of a new ticket (|encrypt|) or of a presented one; tickets are
// AES-256-CBC with HMAC-SHA256 under the rotating keys of ticket_keys.h.
int OnTicketKey(SSL*, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int encrypt) {
  TicketKey key{};
  bool renew = false;
  if (encrypt != 0) {
    if (!TicketKeyRing::Process().Current(std::chrono::steady_clock::now(), &key)) return 0;
    std::memcpy(key_name, key.name, sizeof(key.name));
    if (RAND_bytes(iv, 16) != 1 ||
        EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes, iv) != 1) {
      return -1;
    }
  } else {
    if (!TicketKeyRing::Process().Find(key_name, std::chrono::steady_clock::now(), &key, &renew)) {
      return 0;  // unknown or expired: a full handshake
    }
    if (EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes, iv) != 1) return -1;
  }
  static char kDigest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.hmac, sizeof(key.hmac)),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, kDigest, 0),
      OSSL_PARAM_construct_end()};
  if (EVP_MAC_CTX_set_params(mac, params) != 1) return -1;
  OPENSSL_cleanse(&key, sizeof(key));
  return renew ? 2 : 1;
}

std::string OpenSslError() {
  unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

void Fail(const config::ConfigFile& file, const std::string& message,
          config::ConfigErrors* errors) {
  config::ConfigError error = file.origin;
  error.message = message;
  errors->push_back(std::move(error));
}

std::string Quoted(const std::string& path) { return "\"" + path + "\""; }

// Opens |file| for reading; on failure an error naming it.
std::FILE* OpenFile(const config::ConfigFile& file, config::ConfigErrors* errors) {
  std::FILE* f = std::fopen(file.path.c_str(), "rb");
  if (f == nullptr) {
    Fail(file, "cannot read " + Quoted(file.path) + ": " + std::strerror(errno), errors);
  }
  return f;
}

std::unique_ptr<CertifiedKey> LoadCertifiedKey(const config::ConfigFile& cert_file,
                                               const config::ConfigFile& key_file,
                                               config::ConfigErrors* errors) {
  auto loaded = std::make_unique<CertifiedKey>();
  bool ok = true;
  if (std::FILE* f = OpenFile(cert_file, errors)) {
    loaded->cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
    if (loaded->cert == nullptr) {
      Fail(cert_file, "no PEM certificate in " + Quoted(cert_file.path) + ": " + OpenSslError(),
           errors);
      ok = false;
    } else {
      loaded->chain = sk_X509_new_null();
      while (X509* extra = PEM_read_X509(f, nullptr, nullptr, nullptr)) {
        sk_X509_push(loaded->chain, extra);
      }
      ERR_clear_error();  // the end of the file reads as "no start line"
    }
    std::fclose(f);
  } else {
    ok = false;
  }
  if (std::FILE* f = OpenFile(key_file, errors)) {
    // No password callback: OpenSSL's default would prompt on the terminal and hang start-up.
    auto no_password = [](char*, int, int, void*) { return 0; };
    loaded->key = PEM_read_PrivateKey(f, nullptr, no_password, nullptr);
    if (loaded->key == nullptr) {
      Fail(key_file,
           "no PEM private key in " + Quoted(key_file.path) +
               " (encrypted keys are not supported): " + OpenSslError(),
           errors);
      ok = false;
    }
    std::fclose(f);
  } else {
    ok = false;
  }
  if (!ok) return nullptr;
  if (X509_check_private_key(loaded->cert, loaded->key) != 1) {
    ERR_clear_error();
    Fail(key_file,
         "private key " + Quoted(key_file.path) + " does not match the certificate " +
             Quoted(cert_file.path),
         errors);
    return nullptr;
  }
  return loaded;
}

bool UseCertifiedKey(SSL_CTX* ctx, const CertifiedKey& ck) {
  return SSL_CTX_use_cert_and_key(ctx, ck.cert, ck.key, ck.chain, 1) == 1;
}

bool IsIpAddress(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// A context with the settings both sides share; null with an error if OpenSSL cannot make one.
SSL_CTX* NewContext(const SSL_METHOD* method, config::ConfigErrors* errors) {
  SSL_CTX* ctx = SSL_CTX_new(method);
  if (ctx == nullptr) {
    Fail(config::ConfigFile{}, "cannot create a TLS context: " + OpenSslError(), errors);
    return nullptr;
  }
  // Idle connections (most WebSockets) give their 34 KiB of record buffers back.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  return ctx;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Server side.

ServerContext::ServerContext() = default;

ServerContext::~ServerContext() { SSL_CTX_free(ctx_); }

std::shared_ptr<ServerContext> ServerContext::Build(const config::ListenerTlsConfig& config,
                                                    config::ConfigErrors* errors) {
  std::shared_ptr<ServerContext> context(new ServerContext());
  const size_t errors_before = errors->size();
  for (const auto& pair : config.certificates) {
    if (auto loaded = LoadCertifiedKey(pair.cert, pair.key, errors)) {
      context->certificates_.push_back(std::move(loaded));
    }
  }
  context->ctx_ = NewContext(TLS_server_method(), errors);
  if (context->ctx_ == nullptr) return nullptr;
  SSL_CTX* ctx = context->ctx_;
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_min_proto_version(
      ctx, config.min_version == config::ListenerTlsConfig::Version::kTls13 ? TLS1_3_VERSION
                                                                            : TLS1_2_VERSION);
  if (!config.ciphers.empty() && SSL_CTX_set_cipher_list(ctx, config.ciphers.c_str()) != 1) {
    ERR_clear_error();
    config::ConfigError error = config.ciphers_origin;
    error.message = "no usable cipher in " + Quoted(config.ciphers);
    errors->push_back(std::move(error));
  }
  if (!config.client_ca.empty()) {
    if (std::FILE* f = OpenFile(config.client_ca, errors)) {
      std::fclose(f);
      STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(config.client_ca.path.c_str());
      if (names == nullptr || SSL_CTX_load_verify_file(ctx, config.client_ca.path.c_str()) != 1) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        Fail(config.client_ca,
             "no PEM CA certificate in " + Quoted(config.client_ca.path) + ": " + OpenSslError(),
             errors);
      } else {
        SSL_CTX_set_client_CA_list(ctx, names);  // takes ownership
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
        SSL_CTX_set_verify_depth(ctx, 10);
      }
    }
  }
  if (errors->size() != errors_before || context->certificates_.empty()) return nullptr;
  if (!UseCertifiedKey(ctx, *context->certificates_.front())) {
    Fail(config.certificates.front().cert, "certificate not usable: " + OpenSslError(), errors);
    return nullptr;
  }
  if (context->certificates_.size() > 1) {
    SSL_CTX_set_tlsext_servername_callback(ctx, &ServerContext::OnServerName);
    SSL_CTX_set_tlsext_servername_arg(ctx, context.get());
  }
  for (const std::string& protocol : config.alpn) {
    context->alpn_wire_.push_back(static_cast<char>(protocol.size()));
    context->alpn_wire_ += protocol;
  }
  if (!context->alpn_wire_.empty()) {
    SSL_CTX_set_alpn_select_cb(ctx, &ServerContext::OnAlpn, context.get());
  }
  // Resumption by tickets only (stateless): no per-session memory on the server.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  static const unsigned char kSessionIdContext[] = "wsgate";
  SSL_CTX_set_session_id_context(ctx, kSessionIdContext, sizeof(kSessionIdContext) - 1);
  SSL_CTX_set_timeout(ctx, static_cast<long>(TicketKeyRing::kRotation.count()));
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &OnTicketKey);
  SSL_CTX_set_num_tickets(ctx, 1);
  return context;
}

int ServerContext::OnServerName(SSL* ssl, int*, void* arg) {
  const auto* self = static_cast<const ServerContext*>(arg);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) return SSL_TLSEXT_ERR_OK;  // the default certificate
  for (size_t i = 0; i < self->certificates_.size(); ++i) {
    const CertifiedKey& ck = *self->certificates_[i];
    if (X509_check_host(ck.cert, name, 0, 0, nullptr) != 1) continue;
    if (i == 0) return SSL_TLSEXT_ERR_OK;
    if (SSL_use_cert_and_key(ssl, ck.cert, ck.key, ck.chain, 1) != 1) {
      return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_OK;  // no match: the default certificate
}

int ServerContext::OnAlpn(SSL*, const unsigned char** out, unsigned char* outlen,
                          const unsigned char* in, unsigned int inlen, void* arg) {
  const auto* self = static_cast<const ServerContext*>(arg);
  unsigned char* selected = nullptr;
  const auto* wire = reinterpret_cast<const unsigned char*>(self->alpn_wire_.data());
  if (SSL_select_next_proto(&selected, outlen, wire,
                            static_cast<unsigned int>(self->alpn_wire_.size()), in,
                            inlen) != OPENSSL_NPN_NEGOTIATED) {
    // RFC 7301 §3.2: the client offered protocols and none is ours.
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

BufferEventPtr ServerContext::Accept(event_base* base, evutil_socket_t fd) const {
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr) {
    evutil_closesocket(fd);
    return nullptr;
  }
  // With BEV_OPT_CLOSE_ON_FREE the bufferevent frees the SSL and closes the socket; if it cannot
  // be created libevent has already done both (or, on its first allocation, neither: a rare leak
  // preferred to a double close).
  BufferEventPtr bev(bufferevent_openssl_socket_new(
      base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS));
  // A client that closes TCP without close_notify ends the stream as EOF, as over plain TCP;
  // WebSocket has its own close handshake.
  if (bev) bufferevent_openssl_set_allow_dirty_shutdown(bev.get(), 1);
  return bev;
}

// ---------------------------------------------------------------------------------------------
// Client side.

ClientContext::~ClientContext() {
  for (auto& [address, session] : sessions_) SSL_SESSION_free(session);
  SSL_CTX_free(ctx_);
}

namespace {

// Where an upstream SSL keeps the address its session is cached under.
int SessionKeyIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

}  // namespace

int ClientContext::OnNewSession(SSL* ssl, SSL_SESSION* session) {
  auto* self = static_cast<ClientContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  auto* key = static_cast<const std::string*>(SSL_get_ex_data(ssl, SessionKeyIndex()));
  if (self == nullptr || key == nullptr) return 0;
  // A copy: OpenSSL marks the connection's own session unresumable when the SSL is freed without
  // close_notify, which is how WebSocket connections (closed by their own handshake) end.
  SSL_SESSION* copy = SSL_SESSION_dup(session);
  if (copy == nullptr) return 0;
  std::lock_guard<std::mutex> lock(self->sessions_mutex_);
  SSL_SESSION*& slot = self->sessions_[*key];
  SSL_SESSION_free(slot);
  slot = copy;
  return 0;  // OpenSSL keeps (and drops) its own reference
}

std::shared_ptr<ClientContext> ClientContext::Build(const config::PoolTlsConfig& config,
                                                    config::ConfigErrors* errors) {
  std::shared_ptr<ClientContext> context(new ClientContext());
  context->verify_ = config.verify;
  context->server_name_ = config.server_name;
  context->ctx_ = NewContext(TLS_client_method(), errors);
  if (context->ctx_ == nullptr) return nullptr;
  SSL_CTX* ctx = context->ctx_;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  const size_t errors_before = errors->size();
  if (config.verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    if (config.ca.empty()) {
      SSL_CTX_set_default_verify_paths(ctx);
    } else if (std::FILE* f = OpenFile(config.ca, errors)) {
      std::fclose(f);
      if (SSL_CTX_load_verify_file(ctx, config.ca.path.c_str()) != 1) {
        Fail(config.ca,
             "no PEM CA certificate in " + Quoted(config.ca.path) + ": " + OpenSslError(), errors);
      }
    }
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!config.cert.empty()) {
    auto loaded = LoadCertifiedKey(config.cert, config.key, errors);
    if (loaded && !UseCertifiedKey(ctx, *loaded)) {
      Fail(config.cert, "certificate not usable: " + OpenSslError(), errors);
    }
  }
  static const unsigned char kHttp11[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(ctx, kHttp11, sizeof(kHttp11) - 1);
  // Resume towards backends: a full handshake per client connection is the expensive part.
  SSL_CTX_set_app_data(ctx, context.get());
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, &ClientContext::OnNewSession);
  if (errors->size() != errors_before) return nullptr;
  return context;
}

BufferEventPtr ClientContext::Connect(event_base* base, const std::string& address) const {
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr) return nullptr;
  {
    std::lock_guard<std::mutex> lock(sessions_mutex_);
    auto [slot, added] = sessions_.try_emplace(address, nullptr);
    SSL_set_ex_data(ssl, SessionKeyIndex(), const_cast<std::string*>(&slot->first));
    if (slot->second != nullptr && SSL_SESSION_is_resumable(slot->second) == 1) {
      SSL_set_session(ssl, slot->second);
    }
  }
  const std::optional<config::HostPort> hp = config::ParseHostPort(address, false);
  const std::string host = hp ? hp->host : address;
  const std::string& name = server_name_.empty() ? host : server_name_;
  const bool ip = IsIpAddress(name);
  bool ok = true;
  // RFC 6066: SNI carries host names only, never addresses.
  if (!ip) ok = SSL_set_tlsext_host_name(ssl, name.c_str()) == 1;
  if (ok && verify_) {
    ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str()) == 1
            : SSL_set1_host(ssl, name.c_str()) == 1;
  }
  if (!ok) {
    SSL_free(ssl);
    return nullptr;
  }
  BufferEventPtr bev(bufferevent_openssl_socket_new(
      base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS));
  if (bev) bufferevent_openssl_set_allow_dirty_shutdown(bev.get(), 1);
  return bev;
}

// ---------------------------------------------------------------------------------------------

config::ConfigErrors CheckFiles(const config::ProxyConfig& config) {
  config::ConfigErrors errors;
  for (const auto& listener : config.listeners) {
    if (listener.tls.enabled) ServerContext::Build(listener.tls, &errors);
  }
  for (const auto& pool : config.pools) {
    if (pool.tls.enabled) ClientContext::Build(pool.tls, &errors);
  }
  if (config.cluster.enabled && config.cluster.tls.enabled) {
    ClientContext::Build(config.cluster.tls, &errors);
  }
  return errors;
}

namespace {

void AnswerPlaintext(bufferevent* bev, std::string_view response) {
  const evutil_socket_t fd = bufferevent_getfd(bev);
  if (fd < 0) return;
  // Read what already arrived, so closing with unread input does not reset the answer away.
  char discard[4096];
  for (int i = 0; i < 4 && recv(fd, discard, sizeof(discard), MSG_DONTWAIT) > 0; ++i) {
  }
  ssize_t sent = send(fd, response.data(), response.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  (void)sent;
  shutdown(fd, SHUT_WR);
}

}  // namespace

void SendCloseNotify(bufferevent* bev) {
  if (SSL* ssl = bufferevent_openssl_get_ssl(bev)) SSL_shutdown(ssl);
}

void HandshakeDetails(bufferevent* bev, metrics::TlsVersion* version, bool* resumed) {
  SSL* ssl = bufferevent_openssl_get_ssl(bev);
  *version =
      ssl != nullptr && SSL_version(ssl) == TLS1_3_VERSION ? metrics::kTls13 : metrics::kTls12;
  *resumed = ssl != nullptr && SSL_session_reused(ssl) == 1;
}

bool HandshakePending(bufferevent* bev) {
  SSL* ssl = bufferevent_openssl_get_ssl(bev);
  return ssl != nullptr && SSL_is_init_finished(ssl) == 0;
}

metrics::TlsFailure HandshakeFailure(bufferevent* bev, std::string* detail,
                                     std::string_view plain_http_answer) {
  // libevent stores SSL_get_error()'s code first, then OpenSSL's error queue, and hands them back
  // last first: the earliest queue entry, the root cause, is the one before the final value.
  std::vector<unsigned long> codes;
  while (unsigned long code = bufferevent_get_openssl_error(bev)) codes.push_back(code);
  const unsigned long first = codes.size() >= 2 ? codes[codes.size() - 2] : 0;
  if (first == 0) {
    *detail = "connection closed during the TLS handshake";
    return metrics::kTlsClosed;
  }
  char buf[256];
  ERR_error_string_n(first, buf, sizeof(buf));
  *detail = buf;
  if (ERR_GET_LIB(first) != ERR_LIB_SSL) return metrics::kTlsOther;
  switch (ERR_GET_REASON(first)) {
    case SSL_R_HTTP_REQUEST:
      if (!plain_http_answer.empty()) AnswerPlaintext(bev, plain_http_answer);
      return metrics::kTlsNotTls;
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
    case SSL_R_UNKNOWN_PROTOCOL:
    case SSL_R_UNEXPECTED_MESSAGE:
    case SSL_R_UNEXPECTED_RECORD:
      return metrics::kTlsNotTls;
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_WRONG_SSL_VERSION:
      return metrics::kTlsProtocolVersion;
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
      return metrics::kTlsNoSharedCipher;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      return metrics::kTlsNoClientCertificate;
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
      return metrics::kTlsBadCertificate;
    case SSL_R_NO_APPLICATION_PROTOCOL:
      return metrics::kTlsNoApplicationProtocol;
    default:
      return metrics::kTlsOther;
  }
}

}  // namespace wsgate::tls
