#include "proxy/admin.h"

#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <event2/keyvalq_struct.h>
#include <sys/socket.h>

#include <cstdio>
#include <vector>

#include "proxy/connections/api.h"
#include "proxy/http/handshake.h"
#include "proxy/upstream.h"

namespace wsgate {
namespace {

std::vector<std::string> SplitPath(const std::string& path) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    if (slash > pos) {
      std::string raw = path.substr(pos, slash - pos);
      char* decoded = evhttp_uridecode(raw.c_str(), 0, nullptr);
      parts.emplace_back(decoded != nullptr ? decoded : raw);
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
                                                 std::string* error) {
  std::unique_ptr<AdminServer> server(new AdminServer(std::move(token), handler));
  server->http_ = evhttp_new(base);
  if (server->http_ == nullptr) {
    *error = "cannot create the admin HTTP server";
    return nullptr;
  }
  evhttp_set_allowed_methods(server->http_, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                                EVHTTP_REQ_DELETE);
  evhttp_set_max_headers_size(server->http_, 16 * 1024);
  evhttp_set_max_body_size(server->http_, 64 * 1024);
  evhttp_set_timeout(server->http_, 10);
  evhttp_set_gencb(server->http_, &AdminServer::OnRequest, server.get());
  server->socket_ = evhttp_bind_socket_with_handle(server->http_, address.host.c_str(), address.port);
  if (server->socket_ == nullptr) {
    *error = "cannot listen on admin address " + address.text;
    return nullptr;
  }
  return server;
}

AdminServer::~AdminServer() {
  *alive_ = false;
  if (http_ != nullptr) evhttp_free(http_);
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
  if (given.size() != kScheme.size() + token_.size() || given.substr(0, kScheme.size()) != kScheme) {
    return false;
  }
  // Constant time in the token's bytes, so its value cannot be probed byte by byte.
  return CRYPTO_memcmp(given.data() + kScheme.size(), token_.data(), token_.size()) == 0;
}

std::string AdminServer::BoundAddress() const {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  evutil_socket_t fd = evhttp_bound_socket_get_fd(socket_);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "unknown";
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

  if (path == "/healthz") {
    if (!is_get) return AdminReply(request, 405, "{\"error\":\"use GET\"}\n");
    return AdminReply(request, 200, "ok\n", "text/plain; charset=utf-8");
  }
  if (path == "/readyz") {
    if (!is_get) return AdminReply(request, 405, "{\"error\":\"use GET\"}\n");
    std::string reason = handler_.NotReadyReason();
    if (reason.empty()) return AdminReply(request, 200, "ready\n", "text/plain; charset=utf-8");
    return AdminReply(request, 503, "not ready: " + reason + "\n", "text/plain; charset=utf-8");
  }
  if (!Authorized(request)) {
    if (connections_api_ != nullptr && path.rfind("/connections", 0) == 0) {
      connections_api_->CountUnauthorized(request);
    }
    evhttp_add_header(evhttp_request_get_output_headers(request), "WWW-Authenticate", "Bearer");
    return AdminReply(request, 401, "{\"error\":\"missing or wrong bearer token\"}\n");
  }
  if (path == "/metrics") {
    if (!is_get) return AdminReply(request, 405, "{\"error\":\"use GET\"}\n");
    return AdminReply(request, 200, handler_.MetricsText(), "text/plain; version=0.0.4; charset=utf-8");
  }
  std::vector<std::string> parts = SplitPath(path);
  if (!parts.empty() && parts[0] == "connections" && connections_api_ != nullptr) {
    connections_api_->Handle(request, parts, alive_);
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
  AdminReply(request, 404, "{\"error\":\"not found\"}\n");
}

}  // namespace wsgate
