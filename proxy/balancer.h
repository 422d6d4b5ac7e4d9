// Stage 3 of 4: choose a backend from a pool. Pure; no libevent.
//
// least_conn picks the lowest active/weight, ties broken round-robin; round_robin is smooth
// weighted round-robin (each backend gets weight/total of the picks, interleaved). Backends
// already tried for this client are excluded, so retries go elsewhere.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"

namespace wsgate {

// One backend's live state. Shared (shared_ptr) between configuration generations, so a reload
// keeps its connection count and drain state, and sessions keep it alive after it is removed.
struct Backend {
  std::string pool;     // name of the pool it belongs to
  std::string address;  // as configured, for logs
  sockaddr_storage sockaddr{};
  socklen_t sockaddr_len = 0;
  uint32_t weight = 1;
  int64_t active = 0;          // connections assigned (connecting or open)
  int64_t current_weight = 0;  // smooth weighted round-robin state
  bool draining = false;       // gets no new connections; live ones close at drain_deadline
  bool removed = false;        // no longer in the configuration (draining too)
  std::chrono::steady_clock::time_point drain_deadline{};
};
using BackendPtr = std::shared_ptr<Backend>;

class Balancer {
 public:
  virtual ~Balancer() = default;
  // Return the index of the chosen backend, or -1 if every backend is excluded or draining.
  virtual int Pick(std::vector<BackendPtr>& backends, const std::vector<bool>& excluded) = 0;
};

std::unique_ptr<Balancer> MakeBalancer(config::Balance kind);

struct Pool {
  std::string name;
  std::vector<BackendPtr> backends;
  std::unique_ptr<Balancer> balancer;
};

}  // namespace wsgate
