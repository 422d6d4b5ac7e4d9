// One event-loop thread's share of the client connections.
//
// The main thread (Server) keeps signals, listening sockets, the admin listener, health checks,
// reload and the drain phases; it accepts and hands each socket to the worker with the fewest
// live sessions. A worker owns those sessions end to end: its own EventLoop, SessionRegistry,
// metrics::Registry and configuration generation (its own pools and balancers over the shared
// Backends, see BuildWorkerRuntime), and a tick doing the per-session periodic work (backend
// drain deadlines, rebalancing, interim access lines, spread drain closes).
//
// With `workers: 1` the single worker runs inline on the main thread's loop, with the server's
// registry and runtime: Do() runs at once and the server's tick drives Tick(), exactly as a
// single-threaded proxy. With more, each worker runs a thread and Do() posts to its loop.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "metrics/metrics.h"
#include "proxy/access_log.h"
#include "proxy/core/event_loop.h"
#include "proxy/core/libevent_ptr.h"
#include "proxy/runtime.h"
#include "proxy/session.h"

namespace wsgate {

class Worker {
 public:
  using Clock = std::chrono::steady_clock;
  // The period of the server's and each worker's tick.
  static constexpr std::chrono::milliseconds kTickInterval{100};
  // pools[].migrate: sessions a worker starts moving per tick (10,000/s), so a drained backend
  // empties within seconds without a burst of upgrades the other backends must absorb at once.
  static constexpr size_t kMovesPerTick = 1000;

  // Inline worker: shares the server's loop, metrics and current generation.
  Worker(EventLoop& loop, metrics::Registry& metrics, const RuntimePtr& current,
         AccessLog& access_log, Admission& admission);
  // Threaded worker |index| of |count|: own loop and metrics, generation |runtime|.
  Worker(size_t index, size_t count, RuntimePtr runtime, AccessLog& access_log,
         Admission& admission, const std::string& version);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  bool threaded() const { return own_loop_ != nullptr; }
  size_t index() const { return index_; }

  // Threaded: start the thread. Stop(): make the loop exit and join (sessions left are freed on
  // the caller's thread afterwards). Both from the main thread.
  void Start();
  void Stop();

  // --- Main thread.
  // Sessions owned plus sockets handed over but not yet turned into sessions.
  size_t live() const { return registry_.size() + pending_.load(std::memory_order_relaxed); }
  // Hand over an accepted socket; |over_limit| answers it 503 (max_connections), a ticket that
  // Admission refused answers 429, an admitted one goes to the session to give back.
  void Accept(evutil_socket_t fd, const sockaddr* peer, const std::string& listener,
              bool over_limit, const Admission::Ticket& ticket);
  // Run |fn| on this worker's thread (inline: now, on the caller's).
  void Do(std::function<void(Worker&)> fn);
  // The worker's own registry (threaded only; an inline worker writes the server's).
  const metrics::Registry* own_metrics() const { return own_metrics_.get(); }

  // --- Worker thread (through Do, or the tick).
  void SetRuntime(RuntimePtr runtime);
  void set_serving(bool serving) { serving_ = serving; }
  // GoAway every session not already going away.
  void GoAwayAll(uint16_t code, const std::string& reason);
  // |backend| turned unhealthy: its sessions move to another backend (|move|: pools[].migrate)
  // or, failing that, close with 1001 (|close|: close_on_unhealthy).
  void LeaveUnhealthyBackend(const Backend* backend, bool move, bool close);
  // Drain: close this worker's sessions with |code| spread evenly over |spread| (at once if 0).
  void BeginClosing(uint16_t code, std::chrono::milliseconds spread);
  void StopClosing() { close_total_ = 0; }
  void Tick(Clock::time_point now);
  // Close (1008) the connections whose auth expiry (X-Wsgate-Expires) has passed, and ask the
  // auth hook again for those due (auth.revalidate_interval).
  void CloseExpiredCredentials();
  // The connections API's view of this worker's sessions (its thread only, after Attach).
  ConnectionDirectory& connections() { return directory_; }
  // Main thread, before Start(): upgraded sessions register in |index| under this worker.
  void AttachConnections(ConnectionIndex* index) { directory_.Attach(index, index_); }

 private:
  static void OnTick(evutil_socket_t, short, void* ctx);
  void MoveOffDrainingBackends(const config::ProxyConfig& config);
  void Rebalance(Clock::time_point now);
  void CloseSome(size_t count, uint16_t code, const std::string& reason);

  size_t index_ = 0;
  size_t count_ = 1;  // workers in the process: each rebalances at rate / count_
  std::unique_ptr<EventLoop> own_loop_;
  std::unique_ptr<metrics::Registry> own_metrics_;
  RuntimePtr own_runtime_;
  EventLoop& loop_;
  metrics::Registry& metrics_;
  const RuntimePtr& current_;
  AccessLog& access_log_;
  ConnectionDirectory directory_;
  BackendConnectionPool http_connections_;  // before registry_: sessions' pooled connections
  SessionRegistry registry_;
  SessionContext context_;
  EventPtr tick_timer_;
  std::thread thread_;
  std::atomic<size_t> pending_{0};

  bool serving_ = true;
  Clock::time_point last_interim_scan_{};
  std::map<std::string, std::deque<Clock::time_point>> rebalance_log_;
  size_t close_total_ = 0;  // sessions to close in the spread window
  uint16_t close_code_ = 0;
  std::chrono::milliseconds close_spread_{0};
  Clock::time_point closing_started_{};
};

}  // namespace wsgate
