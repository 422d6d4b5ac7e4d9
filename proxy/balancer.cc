#include "proxy/balancer.h"

namespace wsgate {

bool Unavailable(const std::vector<BackendPtr>& backends, const PickRequest& request, size_t i) {
  const std::vector<bool>* excluded = request.excluded;
  if (excluded != nullptr && i < excluded->size() && (*excluded)[i]) return true;
  return !backends[i]->accepting();
}

namespace {


class LeastConnBalancer final : public Balancer {
 public:
  int Pick(std::vector<BackendPtr>& backends, const PickRequest& request) override {
    int best = -1;
    size_t n = backends.size();
    for (size_t k = 0; k < n; ++k) {
      size_t i = (cursor_ + k) % n;
      if (Unavailable(backends, request, i)) continue;
      if (best < 0) {
        best = static_cast<int>(i);
        continue;
      }
      const Backend& a = *backends[i];
      const Backend& b = *backends[static_cast<size_t>(best)];
      // a.active / a.weight < b.active / b.weight, without division.
      if (a.active * static_cast<int64_t>(b.weight) < b.active * static_cast<int64_t>(a.weight)) {
        best = static_cast<int>(i);
      }
    }
    if (best >= 0) cursor_ = (static_cast<size_t>(best) + 1) % n;
    return best;
  }

 private:
  size_t cursor_ = 0;
};

class RoundRobinBalancer final : public Balancer {
 public:
  int Pick(std::vector<BackendPtr>& backends, const PickRequest& request) override {
    int best = -1;
    int64_t total = 0;
    for (size_t i = 0; i < backends.size(); ++i) {
      if (Unavailable(backends, request, i)) continue;
      Backend& b = *backends[i];
      b.current_weight += b.weight;
      total += b.weight;
      if (best < 0 || b.current_weight > backends[static_cast<size_t>(best)]->current_weight) {
        best = static_cast<int>(i);
      }
    }
    if (best >= 0) backends[static_cast<size_t>(best)]->current_weight -= total;
    return best;
  }
};

}  // namespace

std::unique_ptr<Balancer> MakeBalancer(const config::PoolConfig& pool) {
  switch (pool.balance) {
    case config::Balance::kRoundRobin:
      return std::make_unique<RoundRobinBalancer>();
    case config::Balance::kRandomTwo:
    case config::Balance::kSticky:
      // TODO(wsgate): random_two and sticky balancers.
    case config::Balance::kLeastConn:
      break;
  }
  return std::make_unique<LeastConnBalancer>();
}

}  // namespace wsgate

namespace wsgate {

std::unique_ptr<Balancer> MakeBalancer(config::Balance kind) {
  config::PoolConfig pool;
  pool.balance = kind;
  return MakeBalancer(pool);
}

}  // namespace wsgate
