#include "proxy/admin.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "proxy/connections/api.h"
#include "proxy/http/handshake.h"
#include "proxy/upstream.h"

namespace wsgate {
namespace {

// /readyz's one optional parameter: pool=NAME. False on anything else.
bool ReadyzPool(evhttp_request* request, std::string* pool) {
  AdminQuery query(request);
  if (!query.ok) return false;
  const char* name = query.Get("pool");
  if (name != nullptr) *pool = name;
  return query.size() == (name != nullptr ? 1U : 0U) && (name == nullptr || *name != '\0');
}

std::vector<std::string> SplitPath(const std::string& path) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    if (slash > pos) {
      std::string raw = path.substr(pos, slash - pos);
      // Keep every decoded byte: a %00 must reach the name checks, not cut the name short.
      size_t length = 0;
      char* decoded = evhttp_uridecode(raw.c_str(), 0, &length);
      parts.emplace_back(decoded != nullptr ? std::string(decoded, length) : raw);
      free(decoded);
    }
    pos = slash + 1;
  }
  return parts;
}

}  // namespace

void AdminReply(evhttp_request* request, int status, const std::string& body,
                const char* content_type) {
  evkeyvalq* headers = evhttp_request_get_output_headers(request);
  evhttp_add_header(headers, "Content-Type", content_type);
  evhttp_add_header(headers, "Cache-Control", "no-store");
  evbuffer* out = evbuffer_new();
  evbuffer_add(out, body.data(), body.size());
  evhttp_send_reply(request, status, http::StatusText(status), out);
  evbuffer_free(out);
}

std::unique_ptr<AdminServer> AdminServer::Create(event_base* base, const config::HostPort& address,
                                                 std::string token, AdminHandler& handler,
                                                 int inherited_fd, std::string* error) {
  std::unique_ptr<AdminServer> server(new AdminServer(base, std::move(token), handler));
  server->http_ = evhttp_new(base);
  if (server->http_ == nullptr) {
    if (inherited_fd >= 0) evutil_closesocket(inherited_fd);
    *error = "cannot create the admin HTTP server";
    return nullptr;
  }
  evhttp_set_allowed_methods(server->http_, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                                EVHTTP_REQ_DELETE | EVHTTP_REQ_PUT);
  evhttp_set_max_headers_size(server->http_, 16 * 1024);
  evhttp_set_max_body_size(server->http_, 64 * 1024);
  evhttp_set_timeout(server->http_, 10);
  evhttp_set_gencb(server->http_, &AdminServer::OnRequest, server.get());
  // Our own evconnlistener without LEV_OPT_CLOSE_ON_FREE: the destructor closes the socket itself.
  evconnlistener* listener = nullptr;
  if (inherited_fd >= 0) {
    evutil_make_socket_nonblocking(inherited_fd);
    // Backlog 0: the socket already listens; its accept queue stays as it is.
    listener = evconnlistener_new(base, nullptr, nullptr, LEV_OPT_CLOSE_ON_EXEC, 0, inherited_fd);
    if (listener == nullptr) {
      evutil_closesocket(inherited_fd);
      *error = "cannot adopt the admin listening socket";
      return nullptr;
    }
  } else {
    sockaddr_storage addr{};
    socklen_t addr_len = 0;
    if (!ResolveAddress(address, &addr, &addr_len, error)) {
      *error = "cannot listen on admin address " + address.text + ": " + *error;
      return nullptr;
    }
    listener = evconnlistener_new_bind(
        base, nullptr, nullptr, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
        reinterpret_cast<sockaddr*>(&addr), static_cast<int>(addr_len));
    if (listener == nullptr) {
      *error = "cannot listen on admin address " + address.text + ": " + std::strerror(errno);
      return nullptr;
    }
  }
  server->fd_ = evconnlistener_get_fd(listener);
  server->socket_ = evhttp_bind_listener(server->http_, listener);
  if (server->socket_ == nullptr) {
    evconnlistener_free(listener);
    evutil_closesocket(server->fd_);
    server->fd_ = -1;
    *error = "cannot serve admin address " + address.text;
    return nullptr;
  }
  return server;
}

namespace {

// A timer-only event_base_once passes fd -1 to its callback, so the fd travels in |arg|.
void CloseLater(evutil_socket_t, short, void* arg) {
  evutil_closesocket(static_cast<evutil_socket_t>(reinterpret_cast<intptr_t>(arg)));
}

}  // namespace

// As in ~Listener: the fd is closed one loop pass after evhttp dropped it from the loop, because
// a socket handed over to a new process would otherwise stay in this loop's epoll set.
AdminServer::~AdminServer() {
  *alive_ = false;
  if (http_ != nullptr) evhttp_free(http_);
  timeval now{0, 0};
  if (fd_ >= 0 && event_base_once(base_, -1, EV_TIMEOUT, &CloseLater,
                                  reinterpret_cast<void*>(static_cast<intptr_t>(fd_)), &now) != 0) {
    evutil_closesocket(fd_);
  }
}

int AdminServer::fd() const { return fd_; }

void AdminServer::StopAccepting() {
  evconnlistener_disable(evhttp_bound_socket_get_listener(socket_));
}

void AdminServer::set_request_policy(const config::AdminConfig& config) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  std::string bound_host = config.address.host;
  char text[INET6_ADDRSTRLEN] = {};
  if (getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    const void* address = nullptr;
    if (addr.ss_family == AF_INET) address = &reinterpret_cast<sockaddr_in*>(&addr)->sin_addr;
    if (addr.ss_family == AF_INET6) address = &reinterpret_cast<sockaddr_in6*>(&addr)->sin6_addr;
    if (address != nullptr && inet_ntop(addr.ss_family, address, text, sizeof(text)) != nullptr) {
      bound_host = text;
    }
  }
  policy_ = MakeAdminRequestPolicy(bound_host, config.address.host, config.public_url,
                                   config.allowed_hosts, config.allowed_origins);
}

const char* AdminServer::Refusal(evhttp_request* request) {
  AdminRequestHeaders headers;
  const evkeyvalq* fields = evhttp_request_get_input_headers(request);
  for (const evkeyval* field = fields->tqh_first; field != nullptr; field = field->next.tqe_next) {
    if (evutil_ascii_strcasecmp(field->key, "Host") == 0) {
      headers.host = field->value;
      ++headers.host_count;
    } else if (evutil_ascii_strcasecmp(field->key, "Origin") == 0) {
      headers.origin = field->value;
      ++headers.origin_count;
    } else if (evutil_ascii_strcasecmp(field->key, "Sec-Fetch-Site") == 0) {
      headers.fetch_site = field->value;
    }
  }
  switch (CheckAdminRequest(policy_, headers)) {
    case AdminVerdict::kAllowed:
      return nullptr;
    case AdminVerdict::kBadHost:
      handler_.CountRefused(metrics::kAdminRefusedHost);
      return "Host is not an address of this admin listener";
    case AdminVerdict::kBadOrigin:
      handler_.CountRefused(metrics::kAdminRefusedOrigin);
      return "Origin is not in admin.allowed_origins";
    case AdminVerdict::kBadFetchSite:
      handler_.CountRefused(metrics::kAdminRefusedFetchSite);
      return "cross-site request (Sec-Fetch-Site) without an allowed Origin";
  }
  return nullptr;
}

void AdminServer::set_max_body_size(size_t bytes) {
  evhttp_set_max_body_size(http_, static_cast<ev_ssize_t>(bytes));
}

bool AdminServer::Authorized(evhttp_request* request) const {
  if (token_.empty()) return true;
  const char* auth = evhttp_find_header(evhttp_request_get_input_headers(request), "Authorization");
  if (auth == nullptr) return false;
  static constexpr std::string_view kScheme = "Bearer ";
  std::string_view given(auth);
  if (given.size() != kScheme.size() + token_.size() ||
      given.substr(0, kScheme.size()) != kScheme) {
    return false;
  }
  // Constant time in the token's bytes, so its value cannot be probed byte by byte.
  return CRYPTO_memcmp(given.data() + kScheme.size(), token_.data(), token_.size()) == 0;
}

std::string AdminServer::BoundAddress() const {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "unknown";
  return FormatSockaddr(reinterpret_cast<sockaddr*>(&addr));
}

void AdminServer::OnRequest(evhttp_request* request, void* ctx) {
  static_cast<AdminServer*>(ctx)->Handle(request);
}

void AdminServer::Handle(evhttp_request* request) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(request);
  const char* raw_path = uri != nullptr ? evhttp_uri_get_path(uri) : nullptr;
  std::string path = raw_path != nullptr ? raw_path : "/";
  evhttp_cmd_type method = evhttp_request_get_command(request);
  bool is_get = method == EVHTTP_REQ_GET || method == EVHTTP_REQ_HEAD;

  // Before anything else, probes included: a refused request learns nothing and changes nothing.
  if (const char* refusal = Refusal(request)) {
    return AdminReply(request, 403, "{\"error\":" + JsonString(refusal) + "}\n");
  }

  if (path == "/healthz") {
    if (!is_get) return AdminReply(request, 405, "{\"error\":\"use GET\"}\n");
    return AdminReply(request, 200, "ok\n", "text/plain; charset=utf-8");
  }
  if (path == "/readyz") {
    if (!is_get) return AdminReply(request, 405, "{\"error\":\"use GET\"}\n");
    std::string pool;
    if (!ReadyzPool(request, &pool)) {
      return AdminReply(request, 400, "the only parameter is pool=NAME\n",
                        "text/plain; charset=utf-8");
    }
    bool unknown_pool = false;
    std::string reason = handler_.NotReadyReason(pool, &unknown_pool);
    if (unknown_pool) return AdminReply(request, 404, reason + "\n", "text/plain; charset=utf-8");
    if (reason.empty()) return AdminReply(request, 200, "ready\n", "text/plain; charset=utf-8");
    return AdminReply(request, 503, "not ready: " + reason + "\n", "text/plain; charset=utf-8");
  }
  if (!Authorized(request)) {
    if (connections_api_ != nullptr &&
        (path.rfind("/connections", 0) == 0 || path.rfind("/users/", 0) == 0 ||
         path.rfind("/tags/", 0) == 0)) {
      connections_api_->CountUnauthorized(request);
    }
    evhttp_add_header(evhttp_request_get_output_headers(request), "WWW-Authenticate", "Bearer");
    return AdminReply(request, 401, "{\"error\":\"missing or wrong bearer token\"}\n");
  }
  if (path == "/metrics") {
    if (!is_get) return AdminReply(request, 405, "{\"error\":\"use GET\"}\n");
    return AdminReply(request, 200, handler_.MetricsText(),
                      "text/plain; version=0.0.4; charset=utf-8");
  }
  std::vector<std::string> parts = SplitPath(path);
  if (!parts.empty() && parts[0] == "connections" && connections_api_ != nullptr) {
    connections_api_->Handle(request, parts, alive_);
    return;
  }
  if (parts.size() >= 2 && (parts[0] == "users" || parts[0] == "tags") &&
      connections_api_ != nullptr) {
    connections_api_->HandleGroup(request, parts, alive_);
    return;
  }
  if (parts.size() == 2 && parts[0] == "admin" && parts[1] == "backends") {
    if (!is_get) return AdminReply(request, 405, "{\"error\":\"use GET\"}\n");
    return AdminReply(request, 200, handler_.BackendsJson());
  }
  if (parts.size() == 5 && parts[0] == "admin" && parts[1] == "backends" &&
      (parts[4] == "drain" || parts[4] == "undrain")) {
    if (method != EVHTTP_REQ_POST) return AdminReply(request, 405, "{\"error\":\"use POST\"}\n");
    std::string body;
    int status = handler_.SetBackendDraining(parts[2], parts[3], parts[4] == "drain", &body);
    return AdminReply(request, status, body);
  }
  if (parts.size() == 5 && parts[0] == "admin" && parts[1] == "pools" && parts[3] == "backends") {
    return ChangeRuntimeBackend(request, method, parts[2], parts[4]);
  }
  AdminReply(request, 404, "{\"error\":\"not found\"}\n");
}

void AdminServer::ChangeRuntimeBackend(evhttp_request* request, evhttp_cmd_type method,
                                       const std::string& pool, const std::string& address) {
  if (method != EVHTTP_REQ_PUT && method != EVHTTP_REQ_DELETE) {
    return AdminReply(request, 405, "{\"error\":\"use PUT or DELETE\"}\n");
  }
  AdminQuery query(request);
  const char* weight_text = query.Get("weight");
  size_t allowed = weight_text != nullptr ? 1 : 0;
  if (!query.ok || query.size() != allowed || (method == EVHTTP_REQ_DELETE && allowed != 0)) {
    return AdminReply(request, 400, "{\"error\":\"the only parameter is weight (PUT)\"}\n");
  }
  std::optional<uint32_t> weight;
  if (method == EVHTTP_REQ_PUT) {
    uint32_t value = 1;
    if (weight_text != nullptr) {
      std::string_view text(weight_text);
      auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
      if (error != std::errc() || end != text.data() + text.size()) value = 0;
    }
    if (value < 1 || value > 1000) {
      return AdminReply(request, 400, "{\"error\":\"weight must be an integer 1..1000\"}\n");
    }
    weight = value;
  }
  std::string body;
  int status = handler_.ChangeRuntimeBackend(pool, address, weight, &body);
  AdminReply(request, status, body);
}

}  // namespace wsgate
