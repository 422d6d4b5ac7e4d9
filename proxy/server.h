// The running proxy: one event loop with its listeners, admin listener and sessions, and the
// current configuration generation. Owns everything a Session's context refers to.
//
// Lifecycle: Create() → Run() → (SIGHUP: Reload) → SIGTERM/SIGINT: drain → exit 0.
// Drain: /readyz turns 503 at once; after drain.grace the listeners close; live connections
// flow until timeouts.drain, then each gets drain.close_code (spread over drain.spread) and
// timeouts.close to finish its close handshake. A second SIGTERM, or SIGQUIT, stops at once.
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/admin.h"
#include "proxy/core/event_loop.h"
#include "proxy/handover.h"
#include "proxy/health_checker.h"
#include "proxy/listener.h"
#include "proxy/runtime.h"
#include "proxy/session.h"

namespace wsgate {

class Server final : public AdminHandler, public HandoverServer::Callbacks {
 public:
  // Resolve backends, bind listeners (or adopt them from |takeover|, a running wsgate being
  // upgraded). Returns null with |error| set on failure.
  static std::unique_ptr<Server> Create(config::ProxyConfig config, std::string config_path,
                                        TakeoverClient* takeover, std::string* error);
  ~Server() override;

  // Write "NAME HOST:PORT" per listener (and "admin HOST:PORT") to |path|, atomically.
  bool WriteReadyFile(const std::string& path, std::string* error) const;
  void set_ready_file(std::string path) { ready_file_ = std::move(path); }

  // Serve the upgrade socket at |path| so a future process can take the listeners over.
  bool ServeUpgradeSocket(const std::string& path, std::string* error);

  // Run until drained. Returns the process exit code.
  int Run();

  // HandoverServer::Callbacks.
  std::vector<std::pair<std::string, int>> ListenerSockets() override;
  void OnHandedOver() override;

  // AdminHandler.
  std::string NotReadyReason() override;
  std::string BackendsJson() override;
  std::string MetricsText() override;
  int SetBackendDraining(const std::string& pool, const std::string& address, bool draining,
                         std::string* body) override;

 private:
  enum class Phase { kServing, kGrace, kDraining, kClosing, kStopping };

  explicit Server(std::string config_path);
  bool Apply(RuntimePtr next, std::string* error);
  bool SyncListeners(std::string* error);
  bool SyncAdmin(std::string* error);
  void SyncHealthChecks();
  void OnHealthChange(Backend& backend);
  void Rebalance(std::chrono::steady_clock::time_point now);
  const config::PoolConfig* PoolConfigOf(const std::string& pool) const;

  static void OnSignal(evutil_socket_t signo, short, void* ctx);
  static void OnPhaseTimer(evutil_socket_t, short, void* ctx);
  static void OnTick(evutil_socket_t, short, void* ctx);

  void Reload();
  void BeginDrain();
  void CloseListeners();
  void BeginClosing();
  void CloseSome(size_t count);
  void StopNow();
  void Tick();
  void ArmPhaseTimer(config::Duration after);

  std::string config_path_;
  std::string ready_file_;
  EventLoop loop_;
  metrics::Registry metrics_;
  AccessLog access_log_;
  RuntimePtr current_;
  SessionRegistry registry_;
  SessionContext context_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<HandoverServer> handover_;
  std::vector<std::unique_ptr<HealthChecker>> health_checkers_;
  std::vector<BackendPtr> retired_;  // removed by a reload, listed while connections remain
  std::chrono::steady_clock::time_point last_interim_scan_{};
  std::map<std::string, std::deque<std::chrono::steady_clock::time_point>> rebalance_log_;
  TakeoverClient* takeover_ = nullptr;  // only during Create()
  std::string admin_address_text_;
  std::vector<EventPtr> signal_events_;
  EventPtr phase_timer_;
  EventPtr tick_timer_;

  Phase phase_ = Phase::kServing;
  std::chrono::steady_clock::time_point phase_started_;
  std::chrono::steady_clock::time_point last_progress_log_;
  size_t close_total_ = 0;  // sessions to close in the spread window
  size_t reloads_ok_ = 0;
  size_t reloads_failed_ = 0;
  size_t rebalance_closes_ = 0;
};

}  // namespace wsgate
