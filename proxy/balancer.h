// Stage 3 of 4: choose a backend from a pool. Pure; no libevent.
//
// least_conn picks the lowest active/weight, ties broken round-robin; round_robin is smooth
// weighted round-robin (each backend gets weight/total of the picks, interleaved). Backends
// already tried for this client are excluded, so retries go elsewhere.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"

namespace wsgate {

struct Backend {
  std::string address;  // as configured, for logs
  sockaddr_storage sockaddr{};
  socklen_t sockaddr_len = 0;
  uint32_t weight = 1;
  int64_t active = 0;  // connections assigned (connecting or open)
  int64_t current_weight = 0;  // smooth weighted round-robin state
};

class Balancer {
 public:
  virtual ~Balancer() = default;
  // Return the index of the chosen backend, or -1 if every backend is excluded.
  virtual int Pick(std::vector<Backend>& backends, const std::vector<bool>& excluded) = 0;
};

std::unique_ptr<Balancer> MakeBalancer(config::Balance kind);

struct Pool {
  std::string name;
  std::vector<Backend> backends;
  std::unique_ptr<Balancer> balancer;
};

}  // namespace wsgate
