// The admin listener: health, readiness and backend control over HTTP, served by libevent's
// evhttp on the same event loop as the data path (so it needs no locks).
//
// Routes: GET /healthz, GET /readyz, GET /metrics, GET /admin/backends,
// POST /admin/backends/{pool}/{address}/drain and .../undrain. Everything else is 404.
// /connections... is the connections API (proxy/connections/api.h).
// When a bearer token is configured, every route but /healthz and /readyz requires it; it is
// compared in constant time.
#pragma once

#include <event2/http.h>

#include <cstddef>
#include <memory>
#include <string>

#include "config/config.h"
#include "proxy/core/json.h"

namespace wsgate {

// What the admin listener asks of the running proxy.
class AdminHandler {
 public:
  virtual ~AdminHandler() = default;
  // Empty when ready; otherwise why not (e.g. "draining").
  virtual std::string NotReadyReason() = 0;
  virtual std::string BackendsJson() = 0;
  // Prometheus text exposition of every metric.
  virtual std::string MetricsText() = 0;
  // Drain or undrain one backend. Returns an HTTP status; |body| gets the JSON answer.
  virtual int SetBackendDraining(const std::string& pool, const std::string& address,
                                 bool draining, std::string* body) = 0;
};

class ConnectionsApi;

// Answer |request| with |status| and |body|.
void AdminReply(evhttp_request* request, int status, const std::string& body,
                const char* content_type = "application/json");

class AdminServer {
 public:
  // Bind |address|. Returns null with |error| set if it cannot.
  static std::unique_ptr<AdminServer> Create(event_base* base, const config::HostPort& address,
                                             std::string token, AdminHandler& handler,
                                             std::string* error);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  std::string BoundAddress() const;
  void set_token(std::string token) { token_ = std::move(token); }
  void set_connections_api(ConnectionsApi* api) { connections_api_ = api; }
  void set_max_body_size(size_t bytes);
  // False once this server is gone: a reply computed on a worker must then not be sent (evhttp
  // freed the request with the server).
  std::shared_ptr<const bool> alive() const { return alive_; }

 private:
  AdminServer(std::string token, AdminHandler& handler) : token_(std::move(token)), handler_(handler) {}
  static void OnRequest(evhttp_request* request, void* ctx);
  void Handle(evhttp_request* request);

  bool Authorized(evhttp_request* request) const;

  std::string token_;
  AdminHandler& handler_;
  ConnectionsApi* connections_api_ = nullptr;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  evhttp* http_ = nullptr;
  evhttp_bound_socket* socket_ = nullptr;
};

}  // namespace wsgate
