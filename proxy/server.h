// The running proxy: the main event loop with its listeners, admin listener, health checks and
// the current configuration generation, plus the workers that own the sessions (see worker.h):
// with `workers: 1` one inline worker on the main loop, with N > 1 N worker threads.
//
// Lifecycle: Create() → Run() → (SIGHUP: Reload) → SIGTERM/SIGINT: drain → exit 0.
// Drain: /readyz turns 503 at once; after drain.grace the listeners close; live connections
// flow until timeouts.drain, then each gets drain.close_code (spread over drain.spread) and
// timeouts.close to finish its close handshake. A second SIGTERM, or SIGQUIT, stops at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/result.h"
#include "metrics/metrics.h"
#include "proxy/admin.h"
#include "proxy/cluster/fleet.h"
#include "proxy/connections/api.h"
#include "proxy/connections/registry.h"
#include "proxy/core/event_loop.h"
#include "proxy/discovery.h"
#include "proxy/handover.h"
#include "proxy/health_checker.h"
#include "proxy/listener.h"
#include "proxy/runtime.h"
#include "proxy/runtime_backends.h"
#include "proxy/session.h"
#include "proxy/worker.h"

namespace wsgate {

// Name of the admin listener's socket in a binary upgrade's handover (as in the ready file).
inline constexpr const char* kAdminHandoverSocket = "_admin";
// Join |error| to |errors| with "; ".
void AppendServerError(std::string* errors, const std::string& error);

class Server final : public AdminHandler, public HandoverServer::Callbacks {
 public:
  // Build the pools, bind listeners (or adopt them from |takeover|, a running wsgate being
  // upgraded). |config| has passed ValidateConfig (runtime.h), which resolved the backend
  // addresses in |resolved|; |discovered| holds the start-up answers for discovery pools' names
  // (ResolveAtStart, discovery.h).
  static Result<std::unique_ptr<Server>> Create(config::ProxyConfig config, std::string config_path,
                                                TakeoverClient* takeover,
                                                const config::ResolvedBackends& resolved,
                                                const DiscoveredAddresses& discovered = {});
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
  std::string NotReadyReason(std::string_view pool, bool* unknown_pool) override;
  std::string BackendsJson() override;
  std::string MetricsText() override;
  int SetBackendDraining(const std::string& pool, const std::string& address, bool draining,
                         std::string* body) override;
  int ChangeRuntimeBackend(const std::string& pool, const std::string& address,
                           std::optional<uint32_t> weight, std::string* body) override;
  void CountRefused(metrics::AdminRefusal reason) override;

 private:
  enum class Phase { kServing, kGrace, kDraining, kClosing, kStopping };

  explicit Server(std::string config_path);
  // Swap |next| in. An error means a partial reload: some listener (or the admin listener)
  // could not be bound, the rest is applied, and the error says what is missing.
  Status Apply(RuntimePtr next);
  // The pools part of Apply, shared with service discovery: backends |next| no longer has drain
  // as removed, workers and health checks move to |next|.
  void SwapRuntime(RuntimePtr next);
  // Start discovery, or follow a reload (every name is resolved again at once).
  void SyncDiscovery(const DiscoveredAddresses& seed);
  // Discovery found a changed address set: the next generation, from source_config_.
  void ApplyDiscovered();
  // A new generation from the file, the discovered addresses and the runtime backends; false
  // (logged with |what|) if it cannot be built, the current one kept.
  bool RebuildRuntime(const std::string& what);
  // The backends of every pool, then those removed by a reload that still have connections.
  std::vector<BackendPtr> ExistingBackends();
  // Bind what the config names and close what it no longer does. The error names each address
  // that could not be bound ("; " between them); what was listening stays.
  Status SyncListeners();
  Status SyncAdmin();
  // cluster: join the fleet (after SyncAdmin, whose address the advertised URL defaults to).
  Status JoinFleet();
  // Bind the admin address again soon: the process being upgraded still holds it.
  void ArmAdminRetry();
  static void OnAdminRetry(evutil_socket_t, short, void* ctx);
  void SyncHealthChecks();
  void OnHealthChange(Backend& backend);
  void OnAccept(evutil_socket_t fd, const sockaddr* peer, const std::string& listener);
  // Run |fn| on every worker (inline: now; threaded: posted to its thread).
  void ForEachWorker(const std::function<void(Worker&)>& fn);
  // Live sessions across every worker.
  size_t LiveSessions() const;
  void StopWorkers();
  const config::PoolConfig* PoolConfigOf(const std::string& pool) const;

  static void OnSignal(evutil_socket_t signo, short, void* ctx);
  static void OnPhaseTimer(evutil_socket_t, short, void* ctx);
  static void OnTick(evutil_socket_t, short, void* ctx);

  void Reload();
  void BeginDrain();
  void CloseListeners();
  void BeginClosing();
  void StopNow();
  void Tick();
  void ArmPhaseTimer(config::Duration after);

  std::string config_path_;
  std::string ready_file_;
  EventLoop loop_;
  metrics::Registry metrics_;
  AccessLog access_log_;
  RuntimePtr current_;
  // The configuration as loaded: discovered names not yet replaced by their addresses.
  config::ProxyConfig source_config_;
  RuntimeBackends runtime_backends_;  // PUT/DELETE /admin/pools/.../backends/...; a reload clears
  std::unique_ptr<Discovery> discovery_;       // created with the first discovery pool, kept after
  config::ResolverConfig discovery_resolver_;  // what discovery_'s resolver points at
  Admission admission_;               // outlives the workers, whose sessions give tickets back
  ConnectionIndex connection_index_;  // before the workers: their sessions unregister in it
  std::unique_ptr<Fleet> fleet_;      // with `cluster`; observes the index, outlives the workers
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<ConnectionsApi> connections_api_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<HandoverServer> handover_;
  std::vector<std::unique_ptr<HealthChecker>> health_checkers_;
  std::vector<BackendPtr> retired_;     // removed by a reload, listed while connections remain
  TakeoverClient* takeover_ = nullptr;  // only during Create()
  std::string admin_address_text_;
  std::vector<EventPtr> signal_events_;
  EventPtr phase_timer_;
  EventPtr tick_timer_;
  EventPtr admin_retry_timer_;

  Phase phase_ = Phase::kServing;
  std::chrono::steady_clock::time_point phase_started_;
  std::chrono::steady_clock::time_point last_progress_log_;
  // Sessions the descriptor limit allows (each holds a client and a backend socket); beyond it
  // new clients get a quick 503 that costs no session.
  size_t max_sessions_by_fds_ = SIZE_MAX;
};

}  // namespace wsgate
