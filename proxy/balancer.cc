#include "proxy/balancer.h"

#include "proxy/core/log.h"

#include <random>
#include <unordered_map>

#include "proxy/sticky_balancer.h"

namespace wsgate {

bool Unavailable(const std::vector<BackendPtr>& backends, const PickRequest& request, size_t i) {
  const std::vector<bool>* excluded = request.excluded;
  if (excluded != nullptr && i < excluded->size() && (*excluded)[i]) return true;
  return !backends[i]->accepting();
}

int PickPreferring(Balancer& balancer, std::vector<BackendPtr>& backends,
                   const PickRequest& request, int preferred) {
  if (preferred >= 0 && !Unavailable(backends, request, static_cast<size_t>(preferred))) {
    return preferred;
  }
  return balancer.Pick(backends, request);
}

void ReportBackendOutcome(Backend& backend, const config::OutlierConfig& outlier, bool ok) {
  if (outlier.consecutive_failures == 0) return;
  if (ok) {
    backend.consecutive_failures = 0;
    return;
  }
  uint32_t failures = backend.consecutive_failures.fetch_add(1) + 1;
  if (failures < outlier.consecutive_failures || backend.ejected) return;
  backend.ejected_until = std::chrono::steady_clock::now() + outlier.ejection_time;
  if (backend.ejected.exchange(true)) return;  // another worker ejected it first
  LOG_WARN("outlier: backend " + backend.pool + "/" + backend.address + " ejected for " +
           std::to_string(outlier.ejection_time.count()) + "ms after " +
           std::to_string(backend.consecutive_failures) + " failures in a row");
}

int NoBackendStatus(uint32_t attempts, bool all_timed_out, const char** reason) {
  if (attempts == 0) {
    *reason = "no backend available";
    return 503;
  }
  if (all_timed_out) {
    *reason = "every backend attempt timed out";
    return 504;
  }
  *reason = "every backend attempt failed";
  return 502;
}

BackendLease BackendAttempts::Next(Pool& pool, PickRequest& pick, int preferred, uint32_t retries,
                                   int* status, const char** reason) {
  pick.excluded = &tried_;
  int index =
      count_ <= retries ? PickPreferring(*pool.balancer, pool.backends, pick, preferred) : -1;
  if (index < 0) {
    *status = NoBackendStatus(count_, all_timed_out_, reason);
    return {};
  }
  tried_[static_cast<size_t>(index)] = true;
  ++count_;
  return BackendLease(pool.backends[static_cast<size_t>(index)]);
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

// Smooth weighted round-robin state lives here, per balancer (one per pool per worker), keyed by
// backend: the shared Backend carries no per-worker state.
class RoundRobinBalancer final : public Balancer {
 public:
  int Pick(std::vector<BackendPtr>& backends, const PickRequest& request) override {
    int best = -1;
    int64_t total = 0;
    int64_t best_weight = 0;
    for (size_t i = 0; i < backends.size(); ++i) {
      if (Unavailable(backends, request, i)) continue;
      const Backend& b = *backends[i];
      int64_t weight = b.weight.load();
      int64_t& current = current_weight_[&b];
      current += weight;
      total += weight;
      if (best < 0 || current > best_weight) {
        best = static_cast<int>(i);
        best_weight = current;
      }
    }
    if (best >= 0) current_weight_[backends[static_cast<size_t>(best)].get()] -= total;
    if (current_weight_.size() > 4 * backends.size() + 16) Prune(backends);
    return best;
  }

 private:
  // Forget backends no longer in the list (a balancer normally sees one fixed list).
  void Prune(const std::vector<BackendPtr>& backends) {
    std::unordered_map<const Backend*, int64_t> kept;
    for (const BackendPtr& b : backends) {
      auto it = current_weight_.find(b.get());
      if (it != current_weight_.end()) kept.emplace(*it);
    }
    current_weight_.swap(kept);
  }

  std::unordered_map<const Backend*, int64_t> current_weight_;
};

// Power of two choices (Mitzenmacher): draw two distinct available backends at random, each draw
// weighted by weight, and take the one with the lower active/weight (ties: the first drawn). Far
// better spread than one random choice, without least_conn's herding onto one backend when many
// balancers act on stale counts.
class RandomTwoBalancer final : public Balancer {
 public:
  RandomTwoBalancer() {
    std::random_device device;
    uint64_t seed = (static_cast<uint64_t>(device()) << 32) ^ device();
    for (uint64_t& word : state_) word = SplitMix(seed);
  }

  int Pick(std::vector<BackendPtr>& backends, const PickRequest& request) override {
    uint64_t total_weight = 0;
    size_t available = 0;
    size_t only = 0;
    for (size_t i = 0; i < backends.size(); ++i) {
      if (Unavailable(backends, request, i)) continue;
      total_weight += Weight(*backends[i]);
      ++available;
      only = i;
    }
    if (available == 0) return -1;
    if (available == 1) return static_cast<int>(only);
    size_t first = Draw(backends, request, total_weight, backends.size());
    size_t second = Draw(backends, request, total_weight - Weight(*backends[first]), first);
    const Backend& a = *backends[first];
    const Backend& b = *backends[second];
    // b.active / b.weight < a.active / a.weight, without division.
    if (b.active * static_cast<int64_t>(Weight(a)) < a.active * static_cast<int64_t>(Weight(b))) {
      return static_cast<int>(second);
    }
    return static_cast<int>(first);
  }

 private:
  static uint64_t Weight(const Backend& b) {
    uint32_t w = b.weight.load();
    return w == 0 ? 1 : w;
  }

  static uint64_t SplitMix(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

  // xoshiro256++ (Blackman, Vigna).
  uint64_t Next() {
    const uint64_t result = Rotl(state_[0] + state_[3], 23) + state_[0];
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = Rotl(state_[3], 45);
    return result;
  }

  // Uniform in [0, bound), bound > 0, without modulo bias.
  uint64_t Below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;
    for (;;) {
      uint64_t r = Next();
      if (r >= threshold) return r % bound;
    }
  }

  // A backend drawn with probability weight / |total_weight| among the available ones other
  // than |skip| (|total_weight| is their weight sum).
  size_t Draw(const std::vector<BackendPtr>& backends, const PickRequest& request,
              uint64_t total_weight, size_t skip) {
    uint64_t r = Below(total_weight);
    size_t last = skip;
    for (size_t i = 0; i < backends.size(); ++i) {
      if (i == skip || Unavailable(backends, request, i)) continue;
      const uint64_t w = Weight(*backends[i]);
      if (r < w) return i;
      r -= w;
      last = i;
    }
    return last;  // not reached: the weights sum to total_weight
  }

  uint64_t state_[4];
};

}  // namespace

std::unique_ptr<Balancer> MakeBalancer(const config::PoolConfig& pool) {
  switch (pool.balance) {
    case config::Balance::kRoundRobin:
      return std::make_unique<RoundRobinBalancer>();
    case config::Balance::kRandomTwo:
      return std::make_unique<RandomTwoBalancer>();
    case config::Balance::kSticky:
      return std::make_unique<StickyBalancer>(pool.sticky);
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
