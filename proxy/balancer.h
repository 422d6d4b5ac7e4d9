// Stage 3 of 4: choose a backend from a pool. Pure; no libevent.
//
// least_conn picks the lowest active/weight, ties broken round-robin; round_robin is smooth
// weighted round-robin (each backend gets weight/total of the picks, interleaved); random_two
// takes the less loaded of two random backends; sticky hashes the request's key (see
// sticky_balancer.h). Backends already tried for this client, draining, unhealthy or ejected
// ones are never picked, so retries go elsewhere.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"

namespace wsgate {

// A connection count that every worker thread may update: atomic with relaxed ordering (it is a
// count, not a lock), changed once per connection, never per frame. Copies read the value.
class SharedCount {
 public:
  SharedCount(int64_t value = 0) : value_(value) {}  // NOLINT: implicit, reads like an int
  SharedCount(const SharedCount& other) : value_(other.load()) {}
  SharedCount& operator=(const SharedCount& other) {
    value_.store(other.load(), std::memory_order_relaxed);
    return *this;
  }
  SharedCount& operator=(int64_t value) {
    value_.store(value, std::memory_order_relaxed);
    return *this;
  }
  operator int64_t() const { return load(); }  // NOLINT: implicit, reads like an int
  SharedCount& operator++() {
    value_.fetch_add(1, std::memory_order_relaxed);
    return *this;
  }
  SharedCount& operator--() {
    value_.fetch_sub(1, std::memory_order_relaxed);
    return *this;
  }
  int64_t load() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_;
};

// A flag or value one thread writes and others read (health, drain and ejection state, weight):
// an atomic with relaxed ordering that copies and converts like the plain value, so tests and
// call sites read and assign it as before.
template <typename T>
class SharedValue {
 public:
  SharedValue(T value = T{}) : value_(value) {}  // NOLINT: implicit, reads like a T
  SharedValue(const SharedValue& other) : value_(other.load()) {}
  SharedValue& operator=(const SharedValue& other) {
    store(other.load());
    return *this;
  }
  SharedValue& operator=(T value) {
    store(value);
    return *this;
  }
  operator T() const { return load(); }  // NOLINT: implicit, reads like a T
  T load() const { return value_.load(std::memory_order_relaxed); }
  void store(T value) { value_.store(value, std::memory_order_relaxed); }
  T exchange(T value) { return value_.exchange(value, std::memory_order_relaxed); }
  T fetch_add(T n) { return value_.fetch_add(n, std::memory_order_relaxed); }

 private:
  std::atomic<T> value_;
};

// A steady-clock instant shared the same way, stored as nanoseconds since the clock's epoch.
class SharedTime {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  SharedTime(TimePoint t = TimePoint{}) : ns_(ToNs(t)) {}  // NOLINT: implicit
  SharedTime(const SharedTime& other) : ns_(other.ns_.load(std::memory_order_relaxed)) {}
  SharedTime& operator=(const SharedTime& other) {
    ns_.store(other.ns_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    return *this;
  }
  SharedTime& operator=(TimePoint t) {
    ns_.store(ToNs(t), std::memory_order_relaxed);
    return *this;
  }
  operator TimePoint() const { return load(); }  // NOLINT: implicit
  TimePoint load() const {
    return TimePoint(std::chrono::duration_cast<TimePoint::duration>(
        std::chrono::nanoseconds(ns_.load(std::memory_order_relaxed))));
  }

 private:
  static int64_t ToNs(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }
  std::atomic<int64_t> ns_;
};

// One backend's live state. Shared (shared_ptr) between configuration generations and between
// worker threads, so a reload keeps its connection count and drain state, and sessions keep it
// alive after it is removed. pool, address, id and sockaddr are fixed once the backend is
// published; the state below is atomic: written by the main thread (health checks, admin drain,
// reload, ejection expiry) or by any worker (counts, passive ejection) and read by all.
struct Backend {
  std::string pool;     // name of the pool it belongs to
  std::string address;  // as configured, for logs
  std::string id;       // identity for hashing: the configured id, else the address
  sockaddr_storage sockaddr{};
  socklen_t sockaddr_len = 0;
  SharedValue<uint32_t> weight = 1;
  SharedCount active = 0;              // connections assigned (connecting or open), all workers
  SharedValue<bool> draining = false;  // no new connections; live ones close at drain_deadline
  SharedValue<bool> removed = false;   // no longer in the configuration (draining too)
  SharedTime drain_deadline{};
  SharedValue<bool> healthy = true;   // active health checks (true when none are configured)
  SharedValue<bool> ejected = false;  // passive outlier detection: out until ejected_until
  SharedTime ejected_until{};
  SharedValue<uint32_t> consecutive_failures = 0;

  // May this backend take a new connection?
  bool accepting() const { return !draining && healthy && !ejected; }
};
using BackendPtr = std::shared_ptr<Backend>;

// One connection's claim on a backend: counted in the backend's |active| from the moment it is
// taken until Release() or destruction, exactly once, so no path can forget or repeat the
// decrement. Move-only.
class BackendLease {
 public:
  BackendLease() = default;
  explicit BackendLease(BackendPtr backend) : backend_(std::move(backend)) {
    if (backend_) ++backend_->active;
  }
  ~BackendLease() { Release(); }
  BackendLease(BackendLease&& other) noexcept : backend_(std::move(other.backend_)) {}
  BackendLease& operator=(BackendLease&& other) noexcept {
    if (this != &other) {
      Release();
      backend_ = std::move(other.backend_);
    }
    return *this;
  }
  BackendLease(const BackendLease&) = delete;
  BackendLease& operator=(const BackendLease&) = delete;

  // Stop counting in the backend's |active| and let go of it.
  void Release() {
    if (!backend_) return;
    --backend_->active;
    backend_.reset();
  }
  Backend* get() const { return backend_.get(); }
  const BackendPtr& shared() const { return backend_; }
  Backend& operator*() const { return *backend_; }
  Backend* operator->() const { return backend_.get(); }
  explicit operator bool() const { return backend_ != nullptr; }

 private:
  BackendPtr backend_;
};

// What the balancer knows about the request being placed.
struct PickRequest {
  const std::vector<bool>* excluded = nullptr;  // backends already tried, by index
  bool has_key = false;                         // sticky: a key was found in the request
  uint64_t key_hash = 0;                        // HashKey() of it
};

class Balancer {
 public:
  virtual ~Balancer() = default;
  // Return the index of the chosen backend, or -1 if none may take the request.
  virtual int Pick(std::vector<BackendPtr>& backends, const PickRequest& request) = 0;

  int Pick(std::vector<BackendPtr>& backends, const std::vector<bool>& excluded) {
    PickRequest request;
    request.excluded = &excluded;
    return Pick(backends, request);
  }
};

// True if |backends[i]| may not be picked for |request|.
bool Unavailable(const std::vector<BackendPtr>& backends, const PickRequest& request, size_t i);

// |preferred| (a backend named by the sticky cookie, or -1) while it may take the request, else
// the balancer's choice; -1 if none.
int PickPreferring(Balancer& balancer, std::vector<BackendPtr>& backends,
                   const PickRequest& request, int preferred);

// Passive outlier detection: a failed request (connect failure or timeout, a broken backend
// answer) counts towards ejecting |backend|; a success resets the count.
void ReportBackendOutcome(Backend& backend, const config::OutlierConfig& outlier, bool ok);

// The answer when no backend is left after |attempts| tries: 503 before any try, 504 when
// every try timed out, else 502; *reason says which.
int NoBackendStatus(uint32_t attempts, bool all_timed_out, const char** reason);

// The balancer |pool| asks for (with its sticky settings).
std::unique_ptr<Balancer> MakeBalancer(const config::PoolConfig& pool);
std::unique_ptr<Balancer> MakeBalancer(config::Balance kind);

struct Pool {
  std::string name;
  std::vector<BackendPtr> backends;
  std::unique_ptr<Balancer> balancer;
};

// One request's tries over a pool: which backends were tried, how many tries, and whether every
// failure was a timeout. Upgrades and plain HTTP requests retry the same way through it.
class BackendAttempts {
 public:
  // Start over for a pool of |backends| backends.
  void Reset(size_t backends) {
    tried_.assign(backends, false);
    count_ = 0;
    all_timed_out_ = true;
  }
  // Forget the tries but keep whether all timed out (a retry on a fresh connection).
  void Restart() {
    tried_.assign(tried_.size(), false);
    count_ = 0;
  }
  // The next backend to try, leased (counted in its active), honouring |preferred| (-1: none)
  // and the sticky key in |pick|; empty once |retries| retries are spent or no backend may take
  // it, with *status and *reason set as NoBackendStatus says.
  BackendLease Next(Pool& pool, PickRequest& pick, int preferred, uint32_t retries, int* status,
                    const char** reason);
  // Never pick backend |index| (the one a moving session leaves); not counted as a try.
  void Exclude(size_t index) { tried_[index] = true; }
  void Failed(bool timed_out) {
    if (!timed_out) all_timed_out_ = false;
  }
  uint32_t count() const { return count_; }

 private:
  std::vector<bool> tried_;
  uint32_t count_ = 0;
  bool all_timed_out_ = true;
};

}  // namespace wsgate
