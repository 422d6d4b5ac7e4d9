// The admin listener: health, readiness and backend control over HTTP, served by libevent's
// evhttp on the same event loop as the data path (so it needs no locks).
//
// Routes: GET /healthz, GET /readyz (?pool=NAME), GET /metrics, GET /admin/backends,
// POST /admin/backends/{pool}/{address}/drain and .../undrain. Everything else is 404.
// /connections... is the connections API (proxy/connections/api.h).
// When a bearer token is configured, every route but /healthz and /readyz requires it; it is
// compared in constant time. Before that, every route refuses requests a web page could have
// sent (a foreign Host or Origin, proxy/admin_guard.h) with 403.
#pragma once

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/admin_guard.h"
#include "proxy/core/json.h"

namespace wsgate {

// The query parameters of an admin request; evhttp decodes them.
struct AdminQuery {
  evkeyvalq fields{};
  bool ok = false;
  explicit AdminQuery(evhttp_request* request) {
    fields.tqh_first = nullptr;  // an empty TAILQ, for when there is no query
    fields.tqh_last = &fields.tqh_first;
    const evhttp_uri* uri = evhttp_request_get_evhttp_uri(request);
    const char* query = uri != nullptr ? evhttp_uri_get_query(uri) : nullptr;
    ok = query == nullptr || evhttp_parse_query_str(query, &fields) == 0;
  }
  ~AdminQuery() { evhttp_clear_headers(&fields); }
  AdminQuery(const AdminQuery&) = delete;
  AdminQuery& operator=(const AdminQuery&) = delete;
  const char* Get(const char* name) { return evhttp_find_header(&fields, name); }
  size_t size() const {
    size_t n = 0;
    for (const evkeyval* kv = fields.tqh_first; kv != nullptr; kv = kv->next.tqe_next) ++n;
    return n;
  }
};

// What the admin listener asks of the running proxy.
class AdminHandler {
 public:
  virtual ~AdminHandler() = default;
  // Empty when ready; otherwise why not (e.g. "draining").
  // Why this instance is not ready ("" when it is); with |pool|, why that pool is not (and
  // *unknown_pool when there is no such pool).
  virtual std::string NotReadyReason(std::string_view pool, bool* unknown_pool) = 0;
  virtual std::string BackendsJson() = 0;
  // Prometheus text exposition of every metric.
  virtual std::string MetricsText() = 0;
  // Drain or undrain one backend. Returns an HTTP status; |body| gets the JSON answer.
  virtual int SetBackendDraining(const std::string& pool, const std::string& address, bool draining,
                                 std::string* body) = 0;
  // Runtime backends: add |address| to |pool| with |weight| or re-weight it (PUT), or, with no
  // weight, drain and remove it (DELETE). Returns an HTTP status; |body| gets the JSON answer.
  virtual int ChangeRuntimeBackend(const std::string& pool, const std::string& address,
                                   std::optional<uint32_t> weight, std::string* body) = 0;
  // A request was refused before authorization (403).
  virtual void CountRefused(metrics::AdminRefusal reason) = 0;
};

class ConnectionsApi;

// Answer |request| with |status| and |body|.
void AdminReply(evhttp_request* request, int status, const std::string& body,
                const char* content_type = "application/json");

class AdminServer {
 public:
  // Bind |address|, or serve |inherited_fd| (a listening socket handed over by the process being
  // upgraded; ownership moves here) when it is >= 0. Returns null with |error| set if it cannot.
  static std::unique_ptr<AdminServer> Create(event_base* base, const config::HostPort& address,
                                             std::string token, AdminHandler& handler,
                                             int inherited_fd, std::string* error);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  std::string BoundAddress() const;
  // The listening socket (for a binary upgrade's handover).
  int fd() const;
  // After a handover: accept nothing more (the new process does); requests on connections
  // already accepted are still answered.
  void StopAccepting();
  void set_token(std::string token) { token_ = std::move(token); }
  // Host and Origin rules from the config, with this listener's bound address.
  void set_request_policy(const config::AdminConfig& config);
  void set_connections_api(ConnectionsApi* api) { connections_api_ = api; }
  void set_max_body_size(size_t bytes);
  // False once this server is gone: a reply computed on a worker must then not be sent (evhttp
  // freed the request with the server).
  std::shared_ptr<const bool> alive() const { return alive_; }

 private:
  AdminServer(event_base* base, std::string token, AdminHandler& handler)
      : base_(base), token_(std::move(token)), handler_(handler) {}
  static void OnRequest(evhttp_request* request, void* ctx);
  void Handle(evhttp_request* request);
  // PUT/DELETE /admin/pools/{pool}/backends/{address}
  void ChangeRuntimeBackend(evhttp_request* request, evhttp_cmd_type method,
                            const std::string& pool, const std::string& address);

  bool Authorized(evhttp_request* request) const;
  // Null when |request| may proceed; else the reason it is refused (already counted).
  const char* Refusal(evhttp_request* request);

  event_base* base_;
  std::string token_;
  AdminRequestPolicy policy_;
  AdminHandler& handler_;
  ConnectionsApi* connections_api_ = nullptr;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  evhttp* http_ = nullptr;
  evhttp_bound_socket* socket_ = nullptr;
  int fd_ = -1;  // not closed by evhttp: see ~AdminServer
};

}  // namespace wsgate
