// The running proxy: one event loop with its listeners, pools and sessions, built from a
// validated ProxyConfig. Owns everything a Session's context refers to.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "proxy/balancer.h"
#include "proxy/core/event_loop.h"
#include "proxy/listener.h"
#include "proxy/router.h"
#include "proxy/session.h"

namespace wsgate {

class Server {
 public:
  // Resolve backends, bind listeners. Returns null with |error| set on failure.
  static std::unique_ptr<Server> Create(config::ProxyConfig config, std::string* error);
  ~Server();

  // Write "NAME HOST:PORT" per listener to |path| (atomically, via rename).
  bool WriteReadyFile(const std::string& path, std::string* error) const;

  // Run until SIGTERM/SIGINT. Returns the process exit code.
  int Run();

 private:
  explicit Server(config::ProxyConfig config);
  static void OnStopSignal(evutil_socket_t, short, void* ctx);

  config::ProxyConfig config_;
  EventLoop loop_;
  std::vector<Pool> pools_;
  std::optional<Router> router_;
  SessionRegistry registry_;
  std::optional<SessionContext> context_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<EventPtr> signal_events_;
};

}  // namespace wsgate
