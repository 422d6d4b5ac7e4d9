// Active health checks for one backend, run on the event loop (no thread per check).
//
// Every interval it opens a probe connection: tcp succeeds once connected; http sends
// GET path and wants a 2xx; websocket completes an upgrade on path (valid 101 and
// Sec-WebSocket-Accept) and closes it with 1000. A probe that does not finish within timeout
// fails. The backend turns unhealthy after unhealthy_threshold failures in a row and healthy again
// after healthy_threshold successes in a row; each transition is reported once.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "config/config.h"
#include "proxy/balancer.h"
#include "proxy/core/libevent_ptr.h"
#include "proxy/http/head_parser.h"
#include "proxy/tls/tls_context.h"

namespace wsgate {

class HealthChecker {
 public:
  // Called after a transition, with the backend's new state already stored in it.
  using OnChange = std::function<void(Backend& backend)>;

  // With |tls| (a TLS pool) every probe speaks TLS and verifies the backend like a session does.
  HealthChecker(event_base* base, const config::HealthCheckConfig& config, BackendPtr backend,
                tls::ClientContextPtr tls, OnChange on_change);
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  const Backend& backend() const { return *backend_; }

 private:
  static void OnIntervalCb(evutil_socket_t, short, void* ctx);
  static void OnTimeoutCb(evutil_socket_t, short, void* ctx);
  static void OnReadCb(bufferevent*, void* ctx);
  static void OnEventCb(bufferevent*, short what, void* ctx);

  void StartProbe();
  void OnConnected();
  void OnResponseData();
  void Finish(bool ok, const char* why);

  event_base* base_;
  config::HealthCheckConfig config_;
  BackendPtr backend_;
  tls::ClientContextPtr tls_;
  OnChange on_change_;
  EventPtr interval_timer_;
  EventPtr timeout_timer_;
  BufferEventPtr probe_;
  std::unique_ptr<http::HeadParser> parser_;
  std::string expected_accept_;
  uint32_t successes_ = 0;
  uint32_t failures_ = 0;
  std::string last_failure_;
};

}  // namespace wsgate
