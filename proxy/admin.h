// The admin listener: health, readiness and backend control over HTTP, served by libevent's
// evhttp on the same event loop as the data path (so it needs no locks).
//
// Routes: GET /healthz, GET /readyz, GET /metrics, GET /admin/backends,
// POST /admin/backends/{pool}/{address}/drain and .../undrain. Everything else is 404.
// When a bearer token is configured, every route but /healthz and /readyz requires it.
#pragma once

#include <event2/http.h>

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

 private:
  AdminServer(std::string token, AdminHandler& handler) : token_(std::move(token)), handler_(handler) {}
  static void OnRequest(evhttp_request* request, void* ctx);
  void Handle(evhttp_request* request);

  std::string token_;
  AdminHandler& handler_;
  evhttp* http_ = nullptr;
  evhttp_bound_socket* socket_ = nullptr;
};

}  // namespace wsgate
