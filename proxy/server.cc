#include "proxy/server.h"

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>
#include <cmath>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>
#include <variant>

#include "config/loader.h"
#include "proxy/core/event_loop.h"
#include "proxy/core/log.h"
#include "proxy/direct_socket.h"
#include "proxy/http/handshake.h"
#include "proxy/sticky_balancer.h"
#include "proxy/upstream.h"
#include "proxy/ws/frame.h"

namespace wsgate {
namespace {

using Clock = std::chrono::steady_clock;

constexpr config::Duration kTickInterval = Worker::kTickInterval;

}  // namespace

Server::Server(std::string config_path)
    : config_path_(std::move(config_path)), metrics_(WSGATE_VERSION) {}

Server::~Server() {
  // Sessions and listeners hold libevent objects of loop_'s base: free them before the loop.
  listeners_.clear();
  admin_.reset();
  StopWorkers();
}

void Server::StopWorkers() {
  for (auto& worker : workers_) worker->Stop();  // threads joined; their loops no longer run
  workers_.clear();                              // sessions left are freed here
}

size_t Server::LiveSessions() const {
  size_t total = 0;
  for (const auto& worker : workers_) total += worker->live();
  return total;
}

void Server::ForEachWorker(const std::function<void(Worker&)>& fn) {
  for (auto& worker : workers_) worker->Do(fn);
}

void Server::OnAccept(evutil_socket_t fd, const sockaddr* peer, const std::string& listener) {
  // The worker with the fewest live sessions; max_connections counts them all.
  Worker* target = nullptr;
  size_t total = 0;
  size_t fewest = 0;
  for (auto& worker : workers_) {
    size_t live = worker->live();
    total += live;
    if (target == nullptr || live < fewest) {
      target = worker.get();
      fewest = live;
    }
  }
  // Out of descriptors for a backend socket, or too many handshakes in progress: answer from a
  // static buffer and close, so the excess costs no session (nor the descriptors the live
  // sessions and their backends need).
  auto answer_and_close = [&](const std::string& response) {
    // A TLS client could not read a plaintext answer: it just gets the close.
    if (current_->ListenerTls(listener) == nullptr) {
      ssize_t ignored = send(fd, response.data(), response.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)ignored;
    }
    shutdown(fd, SHUT_WR);
    evutil_closesocket(fd);
    metrics_.Listener(listener).handshakes[metrics::kOverLimit].Add();
  };
  if (total >= max_sessions_by_fds_) {
    static const std::string kNoDescriptors =
        http::BuildErrorResponse(503, "server at its descriptor limit", "Retry-After: 1\r\n");
    answer_and_close(kNoDescriptors);
    return;
  }
  if (total >= current_->config.limits.max_connections) {
    target->Accept(fd, peer, listener, true, Admission::Ticket{});
    return;
  }
  Admission::Ticket ticket = admission_.Admit(peer, Clock::now());
  if (ticket.verdict == Admission::Verdict::kTooManyPending) {
    static const std::string kTooManyPending =
        http::BuildErrorResponse(503, "too many handshakes in progress", "Retry-After: 1\r\n");
    answer_and_close(kTooManyPending);
    return;
  }
  target->Accept(fd, peer, listener, false, ticket);
}

Result<std::unique_ptr<Server>> Server::Create(config::ProxyConfig config, std::string config_path,
                                               TakeoverClient* takeover,
                                               const config::ResolvedBackends& resolved,
                                               const DiscoveredAddresses& discovered) {
  std::unique_ptr<Server> server(new Server(std::move(config_path)));
  server->source_config_ = std::move(config);
  config::ResolvedBackends addresses = resolved;
  Result<RuntimePtr> runtime = BuildRuntime(
      ExpandDiscovered(server->source_config_, discovered, &addresses), nullptr, addresses);
  if (!runtime) return Fail(std::move(runtime).error());
  server->current_ = std::move(runtime).value();
  server->admission_.Configure(server->current_->config.limits);
  size_t workers = server->current_->config.workers;
  if (workers == 0) workers = std::max(1u, std::thread::hardware_concurrency());
  // Keep descriptors for listeners, the admin listener, health probes, logs, libevent itself,
  // and each loop's splice pipes.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    size_t reserve = 32 + 2 * kMaxSplicePipesPerThread * workers;
    for (const auto& pool : server->current_->pools) reserve += pool.backends.size();
    size_t limit = static_cast<size_t>(nofile.rlim_cur);
    server->max_sessions_by_fds_ = limit > reserve ? (limit - reserve) / 2 : 1;
    LOG_INFO("descriptor limit " + std::to_string(limit) + ": at most " +
             std::to_string(server->max_sessions_by_fds_) + " concurrent connections");
  }
  if (workers == 1) {
    server->workers_.push_back(std::make_unique<Worker>(server->loop_, server->metrics_,
                                                        server->current_, server->access_log_,
                                                        server->admission_));
  } else {
    for (size_t i = 0; i < workers; ++i) {
      server->workers_.push_back(
          std::make_unique<Worker>(i, workers, BuildWorkerRuntime(*server->current_),
                                   server->access_log_, server->admission_, WSGATE_VERSION));
    }
  }
  std::vector<Worker*> api_workers;
  for (auto& worker : server->workers_) {
    worker->AttachConnections(&server->connection_index_);
    api_workers.push_back(worker.get());
  }
  server->connections_api_ = std::make_unique<ConnectionsApi>(
      server->loop_, server->connection_index_, std::move(api_workers));
  std::string log_error;
  if (!server->access_log_.Configure(server->current_->config.log, &log_error)) {
    return Fail(std::move(log_error));
  }
  server->takeover_ = takeover;
  Status bound = server->SyncListeners();
  if (bound) bound = server->SyncAdmin();
  server->takeover_ = nullptr;
  if (!bound) return Fail(std::move(bound).error());
  if (Status joined = server->JoinFleet(); !joined) return Fail(std::move(joined).error());
  server->SyncHealthChecks();
  server->SyncDiscovery(discovered);
  LOG_INFO(std::to_string(workers) + (workers == 1 ? " worker thread" : " worker threads"));
  for (int signo : {SIGTERM, SIGINT, SIGQUIT, SIGHUP}) {
    EventPtr ev(evsignal_new(server->loop_.base(), signo, &Server::OnSignal, server.get()));
    evsignal_add(ev.get(), nullptr);
    server->signal_events_.push_back(std::move(ev));
  }
  server->phase_timer_.reset(
      evtimer_new(server->loop_.base(), &Server::OnPhaseTimer, server.get()));
  server->tick_timer_.reset(
      event_new(server->loop_.base(), -1, EV_PERSIST, &Server::OnTick, server.get()));
  timeval tick = ToTimeval(kTickInterval);
  evtimer_add(server->tick_timer_.get(), &tick);
  return server;
}

bool Server::WriteReadyFile(const std::string& path, std::string* error) const {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) {
      *error = "cannot write ready file " + tmp;
      return false;
    }
    for (const auto& listener : listeners_) {
      out << listener->name() << " " << listener->BoundAddress() << "\n";
    }
    if (admin_) out << "_admin " << admin_->BoundAddress() << "\n";
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    *error = "cannot rename ready file to " + path;
    return false;
  }
  return true;
}

int Server::Run() {
  phase_started_ = Clock::now();
  for (auto& worker : workers_) worker->Start();
  loop_.Run();
  listeners_.clear();
  admin_.reset();
  StopWorkers();
  LOG_INFO("stopped");
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Signals and reload.

void Server::OnSignal(evutil_socket_t signo, short, void* ctx) {
  auto* self = static_cast<Server*>(ctx);
  switch (signo) {
    case SIGHUP:
      self->Reload();
      return;
    case SIGQUIT:
      LOG_INFO("received SIGQUIT: stopping at once");
      self->StopNow();
      return;
    default:
      if (self->phase_ != Phase::kServing) {
        LOG_INFO("second stop signal: stopping at once");
        self->StopNow();
      } else {
        LOG_INFO(std::string("received ") + (signo == SIGTERM ? "SIGTERM" : "SIGINT") +
                 ": draining " + std::to_string(self->LiveSessions()) + " connections");
        self->BeginDrain();
      }
      return;
  }
}

void Server::Reload() {
  if (phase_ != Phase::kServing) {
    LOG_WARN("reload ignored: draining");
    return;
  }
  if (config_path_.empty()) {
    LOG_WARN("reload ignored: started from --listen/--backend, there is no file to reload");
    return;
  }
  LOG_INFO("received SIGHUP: reloading " + config_path_);
  auto loaded = config::LoadConfigFile(config_path_);
  auto fail_with = [this](const config::ConfigErrors& errors) {
    for (const auto& error : errors) LOG_ERROR("reload: " + error.Format());
    metrics_.reloads(metrics::kReloadFailure).Add();
    LOG_ERROR("reload failed with " + std::to_string(errors.size()) +
              " error(s); still running the previous configuration");
  };
  if (!loaded) {
    fail_with(loaded.error());
    return;
  }
  auto& config = loaded.value();
  // The same validation stage as --check and start; its resolved addresses build the pools.
  config::ResolvedBackends resolved;
  if (config::ConfigErrors invalid = ValidateConfig(config, current_.get(), &resolved);
      !invalid.empty()) {
    fail_with(invalid);
    return;
  }
  // Discovered names keep their last known addresses; SyncDiscovery resolves them again.
  const DiscoveredAddresses known = discovery_ ? discovery_->Addresses() : DiscoveredAddresses{};
  Result<RuntimePtr> next =
      BuildRuntime(ExpandDiscovered(config, known, &resolved), current_.get(), resolved);
  if (!next) {
    metrics_.reloads(metrics::kReloadFailure).Add();
    LOG_ERROR("reload failed: " + next.error() + "; still running the previous configuration");
    return;
  }
  // The file replaces what the admin API changed at runtime.
  if (runtime_backends_.changes() > 0) {
    LOG_INFO("reload: " + std::to_string(runtime_backends_.changes()) +
             " backend change(s) made through the admin API are replaced by the file");
    runtime_backends_.Clear();
  }
  const config::ClusterConfig old_cluster = current_->config.cluster;
  const Status applied = Apply(std::move(next).value());
  source_config_ = std::move(config);
  if (!(current_->config.cluster == old_cluster)) {
    LOG_WARN("reload: cluster settings change at the next restart; this process keeps its own");
  }
  if (fleet_) fleet_->set_admin_token(current_->config.admin.token);
  SyncDiscovery({});
  metrics_.reloads(applied ? metrics::kReloadSuccess : metrics::kReloadPartial).Add();
  std::string ready_error;
  if (!ready_file_.empty() && !WriteReadyFile(ready_file_, &ready_error)) LOG_ERROR(ready_error);
  if (applied) {
    LOG_INFO("reload complete");
  } else {
    LOG_ERROR("reload partial: " + applied.error() +
              "; everything else of the new configuration is applied");
  }
}

void Server::SwapRuntime(RuntimePtr next) {
  auto deadline = Clock::now() + next->config.timeouts.drain;
  for (const BackendPtr& backend : RemovedBackends(*current_, *next)) {
    backend->removed = true;
    retired_.push_back(backend);
    if (!backend->draining) {
      backend->draining = true;
      backend->drain_deadline = deadline;
    }
    if (backend->active > 0) {
      LOG_INFO("backend " + backend->pool + "/" + backend->address + " removed: draining " +
               std::to_string(backend->active) + " connections");
    }
  }
  current_ = std::move(next);
  admission_.Configure(current_->config.limits);
  // Each worker thread gets its own generation (own pools and balancers, shared backends); an
  // inline worker reads current_ itself.
  for (auto& worker : workers_) {
    if (!worker->threaded()) continue;
    RuntimePtr mine = BuildWorkerRuntime(*current_);
    worker->Do([mine](Worker& w) { w.SetRuntime(mine); });
  }
  SyncHealthChecks();
}

void Server::SyncDiscovery(const DiscoveredAddresses& seed) {
  const bool wanted = std::any_of(source_config_.pools.begin(), source_config_.pools.end(),
                                  [](const config::PoolConfig& p) { return p.discovery.enabled; });
  // Once created it stays (an evdns base freed on a running loop could still have a reply
  // scheduled); without discovery pools it just resolves nothing.
  if (!discovery_ && !wanted) return;
  std::string error;
  if (!discovery_) {
    std::unique_ptr<DnsResolver> resolver =
        DnsResolver::Create(loop_.base(), source_config_.resolver, &error);
    if (!resolver) {
      LOG_ERROR("discovery: " + error + "; discovered pools keep their addresses");
      return;
    }
    discovery_ = std::make_unique<Discovery>(loop_.base(), std::move(resolver),
                                             [this] { ApplyDiscovered(); });
    discovery_resolver_ = source_config_.resolver;
  } else if (!(discovery_resolver_ == source_config_.resolver)) {
    if (discovery_->Reconfigure(source_config_.resolver, &error)) {
      discovery_resolver_ = source_config_.resolver;
    } else {
      LOG_ERROR("reload: discovery: " + error);
    }
  }
  discovery_->Configure(source_config_, seed);
}

void Server::ApplyDiscovered() {
  if (phase_ != Phase::kServing) return;  // draining: the pools no longer matter
  RebuildRuntime("discovery");
}

bool Server::RebuildRuntime(const std::string& what) {
  config::ResolvedBackends resolved;
  config::ProxyConfig expanded = ExpandDiscovered(
      source_config_, discovery_ ? discovery_->Addresses() : DiscoveredAddresses{}, &resolved);
  runtime_backends_.ApplyTo(expanded, &resolved);
  Result<RuntimePtr> next =
      BuildRuntime(std::move(expanded), current_.get(), resolved, /*reuse_tls=*/true);
  if (!next) {
    LOG_ERROR(what + ": " + next.error() + "; keeping the previous backends");
    return false;
  }
  SwapRuntime(std::move(next).value());
  return true;
}

Status Server::Apply(RuntimePtr next) {
  if (next->config.workers != current_->config.workers) {
    LOG_WARN("reload: workers stays " + std::to_string(workers_.size()) +
             " (changing it needs a restart)");
  }
  SwapRuntime(std::move(next));
  // Reopens a file destination too, so SIGHUP after log rotation starts the new file.
  std::string log_error;
  if (!access_log_.Configure(current_->config.log, &log_error)) LOG_ERROR("reload: " + log_error);
  // What cannot be bound is reported; what was open stays open.
  const Status listeners = SyncListeners();
  const Status admin = SyncAdmin();
  if (listeners && admin) return {};
  std::string missing;
  if (!listeners) AppendServerError(&missing, listeners.error());
  if (!admin) AppendServerError(&missing, admin.error());
  return Fail(std::move(missing));
}

// ---------------------------------------------------------------------------------------------
// Health.

const config::PoolConfig* Server::PoolConfigOf(const std::string& pool) const {
  return current_->config.FindPool(pool);
}

void Server::SyncHealthChecks() {
  // Rebuilt on every reload; the health state itself lives in the (shared) Backend.
  health_checkers_.clear();
  for (size_t i = 0; i < current_->pools.size(); ++i) {
    Pool& pool = current_->pools[i];
    const config::PoolConfig* config = PoolConfigOf(pool.name);
    for (const BackendPtr& backend : pool.backends) {
      if (config == nullptr || !config->health_check.enabled) {
        backend->healthy = true;
        continue;
      }
      health_checkers_.push_back(std::make_unique<HealthChecker>(
          loop_.base(), config->health_check, backend, current_->pool_tls[i],
          [this](Backend& changed) { OnHealthChange(changed); }));
    }
  }
}

void Server::OnHealthChange(Backend& backend) {
  const config::PoolConfig* config = PoolConfigOf(backend.pool);
  if (backend.healthy || config == nullptr || !(config->close_on_unhealthy || config->migrate)) {
    return;
  }
  const Backend* target = &backend;  // compared, never dereferenced by the workers
  bool move = config->migrate;
  bool close = config->close_on_unhealthy;
  ForEachWorker(
      [target, move, close](Worker& worker) { worker.LeaveUnhealthyBackend(target, move, close); });
}

// ---------------------------------------------------------------------------------------------
// Binary upgrade.

bool Server::ServeUpgradeSocket(const std::string& path, std::string* error) {
  handover_ = HandoverServer::Create(loop_.base(), path, *this, error);
  return handover_ != nullptr;
}

std::vector<std::pair<std::string, int>> Server::ListenerSockets() {
  std::vector<std::pair<std::string, int>> sockets;
  if (phase_ != Phase::kServing) return sockets;
  for (const auto& listener : listeners_) sockets.emplace_back(listener->name(), listener->fd());
  if (admin_) sockets.emplace_back(kAdminHandoverSocket, admin_->fd());
  return sockets;
}

void Server::OnHandedOver() {
  metrics_.draining().Set(1);
  LOG_INFO("upgrade: the new process is accepting; draining " + std::to_string(LiveSessions()) +
           " connections");
  ForEachWorker([](Worker& worker) { worker.set_serving(false); });
  // No grace period: the new process already accepts on the same sockets. The admin API is the
  // new process's from now on (requests already accepted here are still answered).
  phase_ = Phase::kGrace;
  if (admin_) admin_->StopAccepting();
  CloseListeners();
}

// ---------------------------------------------------------------------------------------------
// Drain.

void Server::ArmPhaseTimer(config::Duration after) {
  timeval tv = ToTimeval(after);
  evtimer_add(phase_timer_.get(), &tv);
}

void Server::OnPhaseTimer(evutil_socket_t, short, void* ctx) {
  auto* self = static_cast<Server*>(ctx);
  switch (self->phase_) {
    case Phase::kGrace:
      self->CloseListeners();
      return;
    case Phase::kDraining:
      self->BeginClosing();
      return;
    case Phase::kClosing:
    case Phase::kStopping:
      LOG_INFO("exiting with " + std::to_string(self->LiveSessions()) + " connections left");
      self->loop_.Exit();
      return;
    case Phase::kServing:
      return;
  }
}

void Server::BeginDrain() {
  phase_ = Phase::kGrace;
  metrics_.draining().Set(1);
  phase_started_ = Clock::now();
  ForEachWorker([](Worker& worker) { worker.set_serving(false); });
  const config::DrainConfig& drain = current_->config.drain;
  if (drain.grace.count() > 0) {
    LOG_INFO("drain: readiness is now 503; accepting for " + std::to_string(drain.grace.count()) +
             "ms more");
    ArmPhaseTimer(drain.grace);
  } else {
    CloseListeners();
  }
}

void Server::CloseListeners() {
  listeners_.clear();
  phase_ = Phase::kDraining;
  phase_started_ = Clock::now();
  LOG_INFO("drain: listeners closed; " + std::to_string(LiveSessions()) +
           " connections may run for up to " +
           std::to_string(current_->config.timeouts.drain.count()) + "ms");
  if (LiveSessions() == 0) {
    loop_.Exit();
    return;
  }
  ArmPhaseTimer(current_->config.timeouts.drain);
}

void Server::BeginClosing() {
  phase_ = Phase::kClosing;
  phase_started_ = Clock::now();
  size_t close_total = LiveSessions();
  const config::ProxyConfig& config = current_->config;
  LOG_INFO("drain: closing " + std::to_string(close_total) + " connections with " +
           std::to_string(config.drain.close_code) +
           (config.drain.spread.count() > 0
                ? " spread over " + std::to_string(config.drain.spread.count()) + "ms"
                : std::string()));
  // Each worker spreads its own sessions over the window.
  uint16_t code = config.drain.close_code;
  std::chrono::milliseconds spread = config.drain.spread;
  ForEachWorker([code, spread](Worker& worker) { worker.BeginClosing(code, spread); });
  // Hard stop: every close handshake has had timeouts.close.
  ArmPhaseTimer(config.drain.spread + config.timeouts.close + config::Duration(500));
}

void Server::StopNow() {
  phase_ = Phase::kStopping;
  listeners_.clear();
  uint16_t code = current_->config.drain.close_code;
  ForEachWorker([code](Worker& worker) {
    worker.set_serving(false);
    worker.StopClosing();
    worker.GoAwayAll(code, "server shutting down");
  });
  // Close frames are best-effort: give the loops a moment to write them, then exit (Run() then
  // stops and joins the worker threads).
  ArmPhaseTimer(config::Duration(200));
}

void Server::OnTick(evutil_socket_t, short, void* ctx) { static_cast<Server*>(ctx)->Tick(); }

void Server::Tick() {
  auto now = Clock::now();
  for (Pool& pool : current_->pools) {
    for (const BackendPtr& backend : pool.backends) {
      if (backend->ejected && now >= backend->ejected_until.load()) {
        backend->ejected = false;
        backend->consecutive_failures = 0;
        LOG_INFO("outlier: backend " + backend->pool + "/" + backend->address +
                 " is back after its ejection time");
      }
    }
  }
  // Per-session work: an inline worker runs it here, worker threads on their own tick.
  for (auto& worker : workers_) {
    if (!worker->threaded()) worker->Tick(now);
  }
  if (phase_ == Phase::kDraining || phase_ == Phase::kClosing || phase_ == Phase::kStopping) {
    size_t live = LiveSessions();
    if (live == 0) {
      LOG_INFO("drain: all connections closed");
      loop_.Exit();
      return;
    }
    if (now - last_progress_log_ >= std::chrono::seconds(2)) {
      last_progress_log_ = now;
      LOG_INFO("drain: " + std::to_string(live) + " connections left");
    }
  }
}

}  // namespace wsgate
