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

// One backend's live state. Shared (shared_ptr) between configuration generations, so a reload
// keeps its connection count and drain state, and sessions keep it alive after it is removed.
struct Backend {
  std::string pool;     // name of the pool it belongs to
  std::string address;  // as configured, for logs
  std::string id;       // identity for hashing: the configured id, else the address
  sockaddr_storage sockaddr{};
  socklen_t sockaddr_len = 0;
  uint32_t weight = 1;
  SharedCount active = 0;      // connections assigned (connecting or open), all workers
  int64_t current_weight = 0;  // smooth weighted round-robin state
  bool draining = false;       // gets no new connections; live ones close at drain_deadline
  bool removed = false;        // no longer in the configuration (draining too)
  std::chrono::steady_clock::time_point drain_deadline{};
  bool healthy = true;  // active health checks (true when none are configured)
  bool ejected = false;  // passive outlier detection took it out until ejected_until
  std::chrono::steady_clock::time_point ejected_until{};
  uint32_t consecutive_failures = 0;

  // May this backend take a new connection?
  bool accepting() const { return !draining && healthy && !ejected; }
};
using BackendPtr = std::shared_ptr<Backend>;

// What the balancer knows about the request being placed.
struct PickRequest {
  const std::vector<bool>* excluded = nullptr;  // backends already tried, by index
  bool has_key = false;                          // sticky: a key was found in the request
  uint64_t key_hash = 0;                         // HashKey() of it
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

// The balancer |pool| asks for (with its sticky settings).
std::unique_ptr<Balancer> MakeBalancer(const config::PoolConfig& pool);
std::unique_ptr<Balancer> MakeBalancer(config::Balance kind);

struct Pool {
  std::string name;
  std::vector<BackendPtr> backends;
  std::unique_ptr<Balancer> balancer;
};

}  // namespace wsgate
