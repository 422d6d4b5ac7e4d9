#include "proxy/worker.h"

#include <pthread.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstring>
#include <vector>

#include "proxy/core/log.h"
#include "proxy/sticky_balancer.h"
#include "proxy/ws/frame.h"

namespace wsgate {
namespace {

// The backend a sticky key hashes to among those taking connections, loads aside.
const Backend* StickyTopChoice(const std::vector<BackendPtr>& backends, uint64_t key_hash) {
  const Backend* best = nullptr;
  double best_score = -1;
  for (const BackendPtr& backend : backends) {
    if (!backend->accepting()) continue;
    double score =
        RendezvousScore(key_hash, HashKey(BackendHashIdentity(*backend)), backend->weight);
    if (score > best_score) {
      best_score = score;
      best = backend.get();
    }
  }
  return best;
}

}  // namespace

Worker::Worker(EventLoop& loop, metrics::Registry& metrics, const RuntimePtr& current,
               AccessLog& access_log, Admission& admission)
    : loop_(loop),
      metrics_(metrics),
      current_(current),
      access_log_(access_log),
      context_{loop_,       registry_, current_,    metrics_,
               access_log_, admission, &directory_, http_connections_} {}

Worker::Worker(size_t index, size_t count, RuntimePtr runtime, AccessLog& access_log,
               Admission& admission, const std::string& version)
    : index_(index),
      count_(count),
      own_loop_(std::make_unique<EventLoop>()),
      own_metrics_(std::make_unique<metrics::Registry>(version)),
      own_runtime_(std::move(runtime)),
      loop_(*own_loop_),
      metrics_(*own_metrics_),
      current_(own_runtime_),
      access_log_(access_log),
      context_{loop_,       registry_, current_,    metrics_,
               access_log_, admission, &directory_, http_connections_} {
  tick_timer_.reset(event_new(loop_.base(), -1, EV_PERSIST, &Worker::OnTick, this));
  timeval tick = ToTimeval(kTickInterval);
  evtimer_add(tick_timer_.get(), &tick);
}

Worker::~Worker() {
  Stop();
  // Sessions hold libevent objects of loop_'s base: free them before the loop.
  tick_timer_.reset();
  registry_.Clear();
  http_connections_.Clear();
}

void Worker::Start() {
  if (!threaded() || thread_.joinable()) return;
  // Signals belong to the main thread's loop: the worker thread starts with all of them blocked.
  sigset_t all;
  sigset_t previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  thread_ = std::thread([this] { loop_.Run(); });
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

void Worker::Stop() {
  if (!thread_.joinable()) return;
  loop_.Post([this] { loop_.Exit(); });
  thread_.join();
}

void Worker::Accept(evutil_socket_t fd, const sockaddr* peer, const std::string& listener,
                    bool over_limit, const Admission::Ticket& ticket) {
  auto start = [](Worker& w, evutil_socket_t fd, const sockaddr* peer, const std::string& listener,
                  bool over_limit, const Admission::Ticket& ticket) {
    auto session = std::make_unique<Session>(w.context_, fd, peer, listener);
    Session& added = w.registry_.Add(std::move(session));
    added.set_admission(ticket);
    // Refusals answer with a lingering close so the client reads them instead of a reset.
    if (over_limit) {
      added.StartRejected(503, "connection limit reached", "Retry-After: 1\r\n",
                          metrics::kOverLimit);
    } else if (ticket.verdict == Admission::Verdict::kTooManyFromAddress) {
      added.StartRejected(429, "too many connections from this address", "",
                          metrics::kAddressLimit);
    } else if (ticket.verdict == Admission::Verdict::kRateExceeded) {
      added.StartRejected(429, "connection rate from this address exceeded", "Retry-After: 1\r\n",
                          metrics::kAddressLimit);
    } else {
      added.Start();
    }
  };
  if (!threaded()) {
    start(*this, fd, peer, listener, over_limit, ticket);
    return;
  }
  sockaddr_storage copy{};
  std::memcpy(&copy, peer,
              peer->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
  pending_.fetch_add(1, std::memory_order_relaxed);
  loop_.Post([this, start, fd, copy, listener, over_limit, ticket] {
    LOG_DEBUG("worker " + std::to_string(index_) + ": connection on listener=" + listener);
    start(*this, fd, reinterpret_cast<const sockaddr*>(&copy), listener, over_limit, ticket);
    // After Add(): live() never dips below the true count.
    pending_.fetch_sub(1, std::memory_order_relaxed);
  });
}

void Worker::Do(std::function<void(Worker&)> fn) {
  if (!threaded()) {
    fn(*this);
    return;
  }
  loop_.Post([this, fn = std::move(fn)] { fn(*this); });
}

void Worker::SetRuntime(RuntimePtr runtime) {
  if (threaded()) own_runtime_ = std::move(runtime);
}

void Worker::CloseSome(size_t count, uint16_t code, const std::string& reason) {
  // GoAway never frees a session synchronously (deletion is deferred), so the snapshot's
  // pointers stay valid for this whole callback.
  std::vector<Session*> targets;
  registry_.ForEach([&](Session& session) {
    if (targets.size() < count && !session.going_away()) targets.push_back(&session);
  });
  for (Session* session : targets) session->GoAway(code, reason);
}

void Worker::GoAwayAll(uint16_t code, const std::string& reason) {
  CloseSome(registry_.size(), code, reason);
}

void Worker::LeaveUnhealthyBackend(const Backend* backend, bool move, bool close) {
  std::vector<Session*> affected;
  registry_.ForEach([&](Session& session) {
    if (session.backend() == backend && !session.going_away() && !session.moving()) {
      affected.push_back(&session);
    }
  });
  if (!affected.empty()) {
    LOG_INFO(std::string("health: ") + (move ? "moving " : "closing ") +
             std::to_string(affected.size()) + " connections of " + backend->pool + "/" +
             backend->address);
  }
  for (Session* session : affected) {
    if (move && session->Migrate(metrics::kMoveUnhealthy)) continue;
    if (close) session->GoAway(ws::kGoingAway, "backend unhealthy");
  }
}

void Worker::BeginClosing(uint16_t code, std::chrono::milliseconds spread) {
  close_total_ = registry_.size();
  close_code_ = code;
  close_spread_ = spread;
  closing_started_ = Clock::now();
  if (spread.count() == 0) CloseSome(close_total_, code, "server shutting down");
}

void Worker::OnTick(evutil_socket_t, short, void* ctx) {
  static_cast<Worker*>(ctx)->Tick(Clock::now());
}

void Worker::CloseExpiredCredentials() {
  int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  for (const std::string& id : directory_.TakeExpired(now)) {
    LiveConnection* connection = directory_.Find(id);
    if (connection == nullptr || connection->ended()) continue;
    // 409: still upgrading, no close frame can be sent yet; ask again next second.
    if (connection->CloseByApi(ws::kPolicyViolation, "credentials expired") == 409) {
      directory_.ScheduleExpiry(id, now + 1);
    }
  }
  for (const std::string& id : directory_.TakeDueRevalidations(now)) {
    LiveConnection* connection = directory_.Find(id);
    if (connection != nullptr && !connection->ended()) connection->Revalidate();
  }
}

void Worker::Tick(Clock::time_point now) {
  const config::ProxyConfig& config = current_->config;
  if (serving_) Rebalance(now);
  auto flush = config.log.flush_interval;
  if (flush.count() > 0 && now - last_interim_scan_ >= std::chrono::seconds(1)) {
    last_interim_scan_ = now;
    registry_.ForEach([&](Session& session) { session.MaybeLogInterim(flush); });
  }
  MoveOffDrainingBackends(config);
  CloseExpiredCredentials();
  // Connections on a drained backend close once its deadline passes.
  std::vector<Session*> expired;
  registry_.ForEach([&](Session& session) {
    const Backend* backend = session.backend();
    if (backend != nullptr && backend->draining && now >= backend->drain_deadline.load() &&
        session.upgraded() && !session.going_away() && !session.moving()) {
      expired.push_back(&session);
    }
  });
  for (Session* session : expired) session->GoAway(config.drain.close_code, "backend draining");
  // Draining: plain HTTP keep-alive connections end after their current request, so they do
  // not hold the drain open.
  if (!serving_) {
    std::vector<Session*> http;
    registry_.ForEach([&](Session& session) {
      if (session.serving_http()) http.push_back(&session);
    });
    for (Session* session : http) session->EndKeepAlive();
  }

  if (close_total_ > 0 && close_spread_.count() > 0) {
    double fraction = std::chrono::duration<double>(now - closing_started_) /
                      std::chrono::duration<double>(close_spread_);
    size_t due = fraction >= 1.0
                     ? close_total_
                     : static_cast<size_t>(fraction * static_cast<double>(close_total_));
    size_t told = 0;
    registry_.ForEach([&](Session& session) {
      if (session.going_away()) ++told;
    });
    // Sessions that ended by themselves count as closed.
    size_t closed = close_total_ - std::min(close_total_, registry_.size()) + told;
    if (due > closed) CloseSome(due - closed, close_code_, "server shutting down");
  }
}

// pools[].migrate: sessions on a draining backend (drained through the admin API, or removed by
// a reload or by discovery) move to another backend now instead of closing at the deadline. A
// session that cannot move closes at the deadline as in any other pool.
void Worker::MoveOffDrainingBackends(const config::ProxyConfig& config) {
  std::vector<Session*> leaving;
  registry_.ForEach([&](Session& session) {
    const Backend* backend = session.backend();
    if (leaving.size() >= kMovesPerTick || backend == nullptr || !backend->draining ||
        !session.may_move()) {
      return;
    }
    const config::PoolConfig* pool = config.FindPool(backend->pool);
    if (pool != nullptr && pool->migrate) leaving.push_back(&session);
  });
  for (Session* session : leaving) {
    session->Migrate(session->backend()->removed ? metrics::kMoveRemoved : metrics::kMoveDrain);
  }
}

// Long-lived connections never move by themselves: after a pool grows, close the surplus on
// backends above tolerance × their weighted share (close 1012, at most rebalance.rate per second
// for the process: each of the N workers closes its own sessions at rate / N and at most its
// 1/N of a backend's surplus) so those clients reconnect and land on the emptier backends.
void Worker::Rebalance(Clock::time_point now) {
  const double workers = static_cast<double>(count_);
  for (Pool& pool : current_->pools) {
    const config::PoolConfig* config = current_->config.FindPool(pool.name);
    if (config == nullptr || !config->rebalance.enabled) continue;
    const config::RebalanceConfig& rebalance = config->rebalance;
    const double rate = rebalance.rate / workers;
    // At most |rate| closes in any one-second window (a log of recent closes), spread evenly:
    // at most one tick's share per tick.
    std::deque<Clock::time_point>& recent = rebalance_log_[pool.name];
    // The window is one tick longer than a second, so tick jitter can never fit rate + one tick's
    // share into a second as seen by the clients.
    while (!recent.empty() && now - recent.front() >= std::chrono::seconds(1) + kTickInterval) {
      recent.pop_front();
    }
    double per_tick = std::max(1.0, rate * std::chrono::duration<double>(kTickInterval).count());
    double budget = std::min(per_tick, rate - static_cast<double>(recent.size()));
    if (budget < 1.0) continue;

    // Connections already told to go still count in |active| until they finish. Only this
    // worker's are seen here; the others' are estimated as the same share.
    std::map<const Backend*, std::vector<Session*>> open;
    std::map<const Backend*, int64_t> leaving;
    bool still_to_move = false;
    registry_.ForEach([&](Session& session) {
      const Backend* backend = session.backend();
      if (backend == nullptr || backend->pool != pool.name) return;
      // A migrate pool's sessions on a leaving backend are about to land on the others: the
      // shares are known only once they have (else rebalancing moves sessions twice).
      if (config->migrate && backend->draining && !session.going_away() && session.upgraded()) {
        still_to_move = true;
      }
      if (session.going_away() || session.moving()) {
        ++leaving[backend];
      } else if (session.upgraded()) {
        // Sticky pools move only connections whose key now hashes to another backend.
        uint64_t key_hash = 0;
        if (config->balance == config::Balance::kSticky && session.sticky_key(&key_hash) &&
            StickyTopChoice(pool.backends, key_hash) == backend) {
          return;
        }
        open[backend].push_back(&session);
      }
    });
    if (still_to_move) continue;
    int64_t total = 0;
    uint64_t total_weight = 0;
    size_t accepting = 0;
    for (const BackendPtr& backend : pool.backends) {
      if (!backend->accepting()) continue;
      ++accepting;
      total += backend->active - leaving[backend.get()] * static_cast<int64_t>(count_);
      total_weight += backend->weight;
    }
    if (accepting < 2 || total <= 0) continue;
    for (const BackendPtr& backend : pool.backends) {
      if (!backend->accepting() || budget < 1.0) continue;
      double share =
          static_cast<double>(total) * backend->weight / static_cast<double>(total_weight);
      int64_t staying = backend->active - leaving[backend.get()] * static_cast<int64_t>(count_);
      if (static_cast<double>(staying) <= rebalance.tolerance * share) continue;
      auto surplus = static_cast<size_t>(staying - static_cast<int64_t>(std::ceil(share)));
      surplus = (surplus + count_ - 1) / count_;  // this worker's part of it
      auto& candidates = open[backend.get()];
      size_t count = std::min({surplus, candidates.size(), static_cast<size_t>(budget)});
      if (count == 0) continue;
      LOG_INFO("rebalance: pool " + pool.name + " closing " + std::to_string(count) +
               " connections on " + backend->address + " (holds " + std::to_string(staying) +
               ", weighted share " + std::to_string(static_cast<int64_t>(share)) + ")");
      size_t closed = 0;
      for (size_t i = 0; i < count; ++i) {
        // pools[].migrate: the session moves to an emptier backend instead (the pick is least
        // loaded first); one that cannot move is closed as in any other pool.
        if (config->migrate && candidates[i]->Migrate(metrics::kMoveRebalance)) continue;
        candidates[i]->GoAway(ws::kServiceRestart, "rebalancing");
        ++closed;
      }
      budget -= static_cast<double>(count);
      recent.insert(recent.end(), count, now);
      metrics_.rebalance_closes().Add(closed);
    }
  }
}

}  // namespace wsgate
