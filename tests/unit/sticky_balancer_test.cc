#include "proxy/sticky_balancer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "proxy/balancer.h"

namespace wsgate {
namespace {

using BackendList = std::vector<BackendPtr>;

BackendList MakeBackends(const std::vector<uint32_t>& weights, size_t first_id = 0) {
  BackendList backends;
  for (size_t i = 0; i < weights.size(); ++i) {
    auto b = std::make_shared<Backend>();
    b->id = "backend-" + std::to_string(first_id + i);
    b->address = "10.0.0." + std::to_string(first_id + i + 1) + ":8080";
    b->weight = weights[i];
    backends.push_back(b);
  }
  return backends;
}

BackendList Equal(size_t n) { return MakeBackends(std::vector<uint32_t>(n, 1)); }

// Deep copy, so that two balancers never share Backend state.
BackendList Copy(const BackendList& backends) {
  BackendList out;
  for (const auto& b : backends) out.push_back(std::make_shared<Backend>(*b));
  return out;
}

StickyBalancer Sticky(double load_factor, config::StickyConfig::Fallback fallback =
                                              config::StickyConfig::Fallback::kLeastConn) {
  config::StickyConfig config;
  config.load_factor = load_factor;
  config.fallback = fallback;
  return StickyBalancer(config);
}

PickRequest Keyed(const std::string& key, const std::vector<bool>* excluded = nullptr) {
  PickRequest request;
  request.has_key = true;
  request.key_hash = HashKey(key);
  request.excluded = excluded;
  return request;
}

std::string Key(size_t i) { return "session-" + std::to_string(i); }

// The backend id each of |n| keys maps to.
std::vector<std::string> Assign(StickyBalancer& balancer, BackendList& backends, size_t n) {
  std::vector<std::string> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    int pick = balancer.Pick(backends, Keyed(Key(i)));
    EXPECT_GE(pick, 0);
    out.push_back(pick >= 0 ? backends[static_cast<size_t>(pick)]->id : "");
  }
  return out;
}

// ceil(c * total * w / W): the most a backend may hold once |total| connections are placed.
int64_t Bound(double c, int64_t total, uint32_t weight, uint64_t total_weight) {
  return static_cast<int64_t>(
      std::ceil(c * static_cast<double>(total) * weight / static_cast<double>(total_weight)));
}

// ---------------------------------------------------------------------------------------------
// HashKey: pinned, so any change that would remap keys between instances or versions fails.

TEST(HashKeyTest, KnownValuesAreFixed) {
  EXPECT_EQ(HashKey(""), 0xc3817c016ba4ff30ULL);
  EXPECT_EQ(HashKey("a"), 0x5f29c2aadd9b8527ULL);
  EXPECT_EQ(HashKey("user-42"), 0xe28ba372823de243ULL);
  EXPECT_EQ(HashKey("10.0.0.1:8080"), 0x617fb5c94294a1fdULL);
  EXPECT_EQ(HashKey("wsgate"), 0xd3fdb8ad85b653d8ULL);
}

TEST(HashKeyTest, BytesNotCharsAndNoCollisionsOnSmallSet) {
  EXPECT_NE(HashKey("ab"), HashKey("ba"));
  EXPECT_NE(HashKey(std::string("a\0b", 3)), HashKey("ab"));
  EXPECT_EQ(HashKey(std::string("\xff\x80", 2)), HashKey(std::string("\xff\x80", 2)));
  std::set<uint64_t> seen;
  for (size_t i = 0; i < 100000; ++i) seen.insert(HashKey(Key(i)));
  EXPECT_EQ(seen.size(), 100000u);
}

TEST(StickyTest, RendezvousScoreIsFixedAndWeighted) {
  // The full pipeline (hash, mix, portable log) is pinned through the picks it produces.
  StickyBalancer balancer = Sticky(0);
  BackendList backends = MakeBackends({1, 2, 3, 4});
  std::vector<std::string> picks = Assign(balancer, backends, 12);
  EXPECT_EQ(picks, (std::vector<std::string>{"backend-0", "backend-2", "backend-2", "backend-3",
                                             "backend-3", "backend-2", "backend-3", "backend-1",
                                             "backend-2", "backend-1", "backend-3", "backend-0"}));
  // Bit-exact scores (the logarithm is computed without libm, identically everywhere).
  EXPECT_EQ(RendezvousScore(1, 2, 1), 5.5197384709991963);
  EXPECT_EQ(RendezvousScore(HashKey("k"), HashKey("backend-0"), 1), 0.1900236059928487);
  // A heavier weight scales the score exactly.
  const uint64_t k = HashKey("k");
  const uint64_t id = HashKey("backend-0");
  EXPECT_DOUBLE_EQ(RendezvousScore(k, id, 3), 3 * RendezvousScore(k, id, 1));
  EXPECT_GT(RendezvousScore(k, id, 1), 0.0);
  EXPECT_EQ(RendezvousScore(k, id, 0), RendezvousScore(k, id, 1));
}

// ---------------------------------------------------------------------------------------------
// Distribution and minimal disruption (unbounded: load_factor 0).

TEST(StickyTest, DistributionFollowsWeights) {
  StickyBalancer balancer = Sticky(0);
  BackendList backends = MakeBackends({1, 2, 3, 4});
  constexpr size_t kKeys = 100000;
  std::map<std::string, size_t> counts;
  for (const std::string& id : Assign(balancer, backends, kKeys)) ++counts[id];
  double worst = 0;
  for (size_t i = 0; i < 4; ++i) {
    const double expected = kKeys * (i + 1) / 10.0;
    const double got = static_cast<double>(counts["backend-" + std::to_string(i)]);
    const double error = std::abs(got - expected) / expected;
    worst = std::max(worst, error);
    EXPECT_LE(error, 0.10) << "backend-" << i << " got " << got << " expected " << expected;
  }
  RecordProperty("worst_relative_error_percent", std::to_string(worst * 100));
  std::printf("[ measured ] weights 1:2:3:4 over %zu keys: worst relative error %.3f%%\n", kKeys,
              worst * 100);
}

TEST(StickyTest, AddingABackendMovesKeysOnlyToIt) {
  constexpr size_t kKeys = 100000;
  constexpr size_t kN = 10;
  StickyBalancer before_balancer = Sticky(0);
  StickyBalancer after_balancer = Sticky(0);
  BackendList before = Equal(kN);
  BackendList after = Equal(kN + 1);
  std::vector<std::string> a = Assign(before_balancer, before, kKeys);
  std::vector<std::string> b = Assign(after_balancer, after, kKeys);
  const std::string added = "backend-" + std::to_string(kN);
  size_t moved = 0;
  for (size_t i = 0; i < kKeys; ++i) {
    if (a[i] == b[i]) continue;
    ++moved;
    ASSERT_EQ(b[i], added) << "key " << i << " moved between old backends " << a[i] << " -> "
                           << b[i];
  }
  const double fraction = static_cast<double>(moved) / kKeys;
  EXPECT_LE(fraction, 1.5 / kN);
  EXPECT_GT(fraction, 0.5 / (kN + 1));  // the new backend does get its share
  std::printf("[ measured ] add 1 to %zu: moved %.4f of keys (ideal %.4f, limit %.4f)\n", kN,
              fraction, 1.0 / (kN + 1), 1.5 / kN);
}

TEST(StickyTest, RemovingABackendMovesOnlyItsKeys) {
  constexpr size_t kKeys = 100000;
  constexpr size_t kN = 10;
  StickyBalancer before_balancer = Sticky(0);
  StickyBalancer after_balancer = Sticky(0);
  BackendList before = Equal(kN);
  BackendList after = Copy(before);
  after.erase(after.begin() + 3);
  const std::string removed = "backend-3";
  std::vector<std::string> a = Assign(before_balancer, before, kKeys);
  std::vector<std::string> b = Assign(after_balancer, after, kKeys);
  size_t moved = 0;
  size_t owned = 0;
  for (size_t i = 0; i < kKeys; ++i) {
    ASSERT_NE(b[i], removed);
    if (a[i] == removed) {
      ++owned;
      ++moved;
      continue;
    }
    ASSERT_EQ(a[i], b[i]) << "key " << i << " moved between surviving backends";
  }
  EXPECT_EQ(moved, owned);
  const double fraction = static_cast<double>(moved) / kKeys;
  EXPECT_LE(fraction, 1.5 / kN);
  std::printf("[ measured ] remove 1 of %zu: moved %.4f of keys (all of them the removed one's)\n",
              kN, fraction);
}

TEST(StickyTest, WeightChangeMovesKeysOnlyToTheHeavierBackend) {
  constexpr size_t kKeys = 20000;
  StickyBalancer balancer = Sticky(0);
  BackendList backends = Equal(6);
  std::vector<std::string> a = Assign(balancer, backends, kKeys);
  backends[2]->weight = 2;
  std::vector<std::string> b = Assign(balancer, backends, kKeys);
  for (size_t i = 0; i < kKeys; ++i) {
    if (a[i] != b[i]) {
      ASSERT_EQ(b[i], "backend-2");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Determinism.

TEST(StickyTest, OrderOfBackendsDoesNotMatter) {
  BackendList base = MakeBackends({1, 3, 2, 5, 1, 4, 2, 1});
  // Uneven loads so that the bounded-load overflow path is exercised too.
  const std::vector<int64_t> active = {40, 3, 20, 9, 0, 31, 12, 7};
  for (size_t i = 0; i < base.size(); ++i) base[i]->active = active[i];
  std::mt19937 rng(12345);
  for (double load_factor : {0.0, 1.25, 1.05}) {
    BackendList x = Copy(base);
    BackendList y = Copy(base);
    std::shuffle(x.begin(), x.end(), rng);
    std::shuffle(y.begin(), y.end(), rng);
    StickyBalancer bx = Sticky(load_factor);
    StickyBalancer by = Sticky(load_factor);
    for (size_t i = 0; i < 20000; ++i) {
      PickRequest request = Keyed(Key(i));
      int px = bx.Pick(x, request);
      int py = by.Pick(y, request);
      ASSERT_GE(px, 0);
      ASSERT_GE(py, 0);
      ASSERT_EQ(x[static_cast<size_t>(px)]->id, y[static_cast<size_t>(py)]->id)
          << "key " << i << " load_factor " << load_factor;
    }
  }
}

TEST(StickyTest, RepeatedPicksAreStable) {
  StickyBalancer balancer = Sticky(1.25);
  BackendList backends = Equal(5);
  for (size_t i = 0; i < 1000; ++i) {
    PickRequest request = Keyed(Key(i));
    int first = balancer.Pick(backends, request);
    for (int r = 0; r < 3; ++r) ASSERT_EQ(balancer.Pick(backends, request), first);
  }
}

// ---------------------------------------------------------------------------------------------
// Bounded loads.

struct LoadRun {
  double worst_ratio = 0;  // at the end, max over backends of active / (T * w / W)
  int64_t max_over_bound = INT64_MIN;
};

// Places |keys.size()| connections, checking after each that no backend exceeds its bound.
LoadRun Place(StickyBalancer& balancer, BackendList& backends, double c,
              const std::vector<std::string>& keys) {
  uint64_t total_weight = 0;
  for (const auto& b : backends) total_weight += b->weight;
  LoadRun run;
  int64_t total = 0;
  for (const std::string& key : keys) {
    int pick = balancer.Pick(backends, Keyed(key));
    EXPECT_GE(pick, 0);
    if (pick < 0) return run;
    ++backends[static_cast<size_t>(pick)]->active;
    ++total;
    for (const auto& b : backends) {
      const int64_t bound = Bound(c, total, b->weight, total_weight);
      run.max_over_bound = std::max(run.max_over_bound, b->active - bound);
      if (b->active > bound) {
        ADD_FAILURE() << b->id << " holds " << b->active << " > bound " << bound << " after "
                      << total;
        return run;
      }
    }
  }
  for (const auto& b : backends) {
    run.worst_ratio = std::max(
        run.worst_ratio, static_cast<double>(b->active) / (static_cast<double>(total) * b->weight /
                                                           static_cast<double>(total_weight)));
  }
  return run;
}

TEST(StickyTest, BoundedLoadHoldsWithSkewedKeys) {
  constexpr double kC = 1.25;
  constexpr size_t kConnections = 10000;
  for (const std::vector<uint32_t>& weights :
       {std::vector<uint32_t>(8, 1), std::vector<uint32_t>{1, 2, 3, 4, 1, 2, 3, 4}}) {
    StickyBalancer balancer = Sticky(kC);
    BackendList backends = MakeBackends(weights);
    std::vector<std::string> keys;
    for (size_t i = 0; i < kConnections; ++i) keys.push_back(i % 2 == 0 ? "hot" : Key(i));
    LoadRun run = Place(balancer, backends, kC, keys);
    EXPECT_LE(run.max_over_bound, 0);
    // The hot key's backend is filled up to (about) its bound, and then it overflows.
    StickyBalancer unbounded = Sticky(0);
    const int hot = unbounded.Pick(backends, Keyed("hot"));
    ASSERT_GE(hot, 0);
    uint64_t total_weight = 0;
    for (const auto& b : backends) total_weight += b->weight;
    const Backend& h = *backends[static_cast<size_t>(hot)];
    EXPECT_GE(h.active, Bound(kC, kConnections, h.weight, total_weight) - 1);
    std::printf(
        "[ measured ] skewed keys (50%% one key), weights %s: final max load / weighted mean = "
        "%.4f (c = 1.25), max(active - bound) = %lld, hot backend %lld of bound %lld\n",
        weights[1] == 1 ? "equal" : "1..4", run.worst_ratio,
        static_cast<long long>(run.max_over_bound), static_cast<long long>(h.active),
        static_cast<long long>(Bound(kC, kConnections, h.weight, total_weight)));
  }
}

TEST(StickyTest, BoundedLoadHoldsWithSpreadKeys) {
  constexpr double kC = 1.25;
  constexpr size_t kConnections = 10000;
  StickyBalancer balancer = Sticky(kC);
  BackendList backends = Equal(8);
  std::vector<std::string> keys;
  for (size_t i = 0; i < kConnections; ++i) keys.push_back(Key(i));
  LoadRun run = Place(balancer, backends, kC, keys);
  EXPECT_LE(run.max_over_bound, 0);
  int64_t max_load = 0;
  for (const auto& b : backends) {
    EXPECT_LE(b->active, Bound(kC, kConnections, 1, 8));
    max_load = std::max<int64_t>(max_load, b->active);
  }
  std::printf(
      "[ measured ] spread keys: final max load %lld, mean %zu, bound %lld, "
      "max(active - bound) over the run %lld\n",
      static_cast<long long>(max_load), kConnections / 8,
      static_cast<long long>(Bound(kC, kConnections, 1, 8)),
      static_cast<long long>(run.max_over_bound));
}

TEST(StickyTest, OverflowGoesToTheKeysNextChoice) {
  BackendList backends = Equal(4);
  StickyBalancer unbounded = Sticky(0);
  StickyBalancer bounded = Sticky(1.0);
  const PickRequest request = Keyed("user-7");
  const int first = unbounded.Pick(backends, request);
  ASSERT_GE(first, 0);
  // Find the key's second choice by making the first unavailable.
  backends[static_cast<size_t>(first)]->draining = true;
  const int second = unbounded.Pick(backends, request);
  backends[static_cast<size_t>(first)]->draining = false;
  // Overload the first choice: the bounded balancer must use exactly the second choice.
  backends[static_cast<size_t>(first)]->active = 10;
  EXPECT_EQ(bounded.Pick(backends, request), second);
  EXPECT_EQ(unbounded.Pick(backends, request), first);
}

TEST(StickyTest, LoadFactorIsClampedAndZeroMeansUnbounded) {
  EXPECT_EQ(Sticky(0).load_factor(), 0.0);
  EXPECT_EQ(Sticky(-1).load_factor(), 0.0);
  EXPECT_EQ(Sticky(0.5).load_factor(), 1.0);
  EXPECT_EQ(Sticky(1.25).load_factor(), 1.25);
  // Even with c < 1 configured, a pick is always found.
  StickyBalancer balancer = Sticky(0.5);
  BackendList backends = Equal(3);
  for (size_t i = 0; i < 300; ++i) {
    int pick = balancer.Pick(backends, Keyed(Key(i)));
    ASSERT_GE(pick, 0);
    ++backends[static_cast<size_t>(pick)]->active;
  }
  for (const auto& b : backends) EXPECT_LE(b->active, 101);
}

// ---------------------------------------------------------------------------------------------
// Unavailable backends.

TEST(StickyTest, UnavailableBackendsAreSkippedToTheNextHighestScore) {
  constexpr size_t kN = 5;
  StickyBalancer balancer = Sticky(0);
  BackendList backends = Equal(kN);
  for (size_t key = 0; key < 2000; ++key) {
    const PickRequest request = Keyed(Key(key));
    // The expected preference order, computed from the scores directly.
    std::vector<size_t> order(kN);
    for (size_t i = 0; i < kN; ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return RendezvousScore(request.key_hash, HashKey(backends[a]->id), 1) >
             RendezvousScore(request.key_hash, HashKey(backends[b]->id), 1);
    });
    ASSERT_EQ(balancer.Pick(backends, request), static_cast<int>(order[0]));
    const size_t top = order[0];
    const int next = static_cast<int>(order[1]);
    Backend& b = *backends[top];
    for (int mode = 0; mode < 4; ++mode) {
      std::vector<bool> excluded(kN, false);
      PickRequest r = request;
      switch (mode) {
        case 0:
          b.draining = true;
          break;
        case 1:
          b.healthy = false;
          break;
        case 2:
          b.ejected = true;
          break;
        case 3:
          excluded[top] = true;
          r.excluded = &excluded;
          break;
      }
      for (int repeat = 0; repeat < 3; ++repeat) {
        ASSERT_EQ(balancer.Pick(backends, r), next) << "key " << key << " mode " << mode;
      }
      b.draining = false;
      b.healthy = true;
      b.ejected = false;
    }
    // Two unavailable: the third choice.
    backends[order[0]]->draining = true;
    backends[order[1]]->healthy = false;
    ASSERT_EQ(balancer.Pick(backends, request), static_cast<int>(order[2]));
    backends[order[0]]->draining = false;
    backends[order[1]]->healthy = true;
  }
  // None available.
  for (auto& b : backends) b->draining = true;
  EXPECT_EQ(balancer.Pick(backends, Keyed("x")), -1);
  BackendList empty;
  EXPECT_EQ(balancer.Pick(empty, Keyed("x")), -1);
}

// ---------------------------------------------------------------------------------------------
// Keyless fallbacks.

TEST(StickyTest, KeylessFallsBackToLeastConn) {
  StickyBalancer balancer = Sticky(1.25, config::StickyConfig::Fallback::kLeastConn);
  EXPECT_FALSE(balancer.rejects_keyless());
  BackendList backends = Equal(3);
  backends[0]->active = 5;
  backends[1]->active = 1;
  backends[2]->active = 3;
  PickRequest keyless;
  EXPECT_EQ(balancer.Pick(backends, keyless), 1);
  backends[1]->active = 9;
  EXPECT_EQ(balancer.Pick(backends, keyless), 2);
  backends[2]->draining = true;
  EXPECT_EQ(balancer.Pick(backends, keyless), 0);
}

TEST(StickyTest, KeylessFallsBackToRoundRobin) {
  StickyBalancer balancer = Sticky(1.25, config::StickyConfig::Fallback::kRoundRobin);
  EXPECT_FALSE(balancer.rejects_keyless());
  BackendList backends = Equal(3);
  backends[0]->active = 100;  // ignored by round robin
  PickRequest keyless;
  std::vector<int> picks;
  for (int i = 0; i < 6; ++i) picks.push_back(balancer.Pick(backends, keyless));
  EXPECT_EQ(picks, (std::vector<int>{0, 1, 2, 0, 1, 2}));
}

TEST(StickyTest, KeylessRejected) {
  StickyBalancer balancer = Sticky(1.25, config::StickyConfig::Fallback::kReject);
  EXPECT_TRUE(balancer.rejects_keyless());
  BackendList backends = Equal(3);
  PickRequest keyless;
  EXPECT_EQ(balancer.Pick(backends, keyless), -1);
  EXPECT_EQ(balancer.Pick(backends, std::vector<bool>{}), -1);
  EXPECT_GE(balancer.Pick(backends, Keyed("k")), 0);  // keyed requests are unaffected
}

TEST(StickyTest, MakeBalancerBuildsStickyFromPoolConfig) {
  config::PoolConfig pool;
  pool.balance = config::Balance::kSticky;
  pool.sticky.load_factor = 1.5;
  pool.sticky.fallback = config::StickyConfig::Fallback::kReject;
  std::unique_ptr<Balancer> balancer = MakeBalancer(pool);
  auto* sticky = dynamic_cast<StickyBalancer*>(balancer.get());
  ASSERT_NE(sticky, nullptr);
  EXPECT_EQ(sticky->load_factor(), 1.5);
  EXPECT_TRUE(sticky->rejects_keyless());
  BackendList empty;
  EXPECT_EQ(MakeBalancer(config::Balance::kSticky)->Pick(empty, PickRequest{}), -1);
}

TEST(StickyTest, IdDefaultsToAddress) {
  BackendList with_id = Equal(4);
  BackendList without_id = Copy(with_id);
  for (auto& b : without_id) b->id.clear();
  BackendList address_as_id = Copy(without_id);
  for (auto& b : address_as_id) b->id = b->address;
  StickyBalancer x = Sticky(0);
  StickyBalancer y = Sticky(0);
  for (size_t i = 0; i < 2000; ++i) {
    ASSERT_EQ(x.Pick(without_id, Keyed(Key(i))), y.Pick(address_as_id, Keyed(Key(i))));
  }
  EXPECT_EQ(OpaqueBackendId(*without_id[0]), OpaqueBackendId(*address_as_id[0]));
}

// ---------------------------------------------------------------------------------------------
// Opaque backend ids (insert_cookie).

TEST(StickyTest, OpaqueBackendIdIsStableHexAndHidesTheAddress) {
  BackendList backends = Equal(6);
  EXPECT_EQ(OpaqueBackendId(*backends[0]), "09617c7c5234ed68");
  std::set<std::string> seen;
  for (const auto& b : backends) {
    const std::string token = OpaqueBackendId(*b);
    EXPECT_EQ(token, OpaqueBackendId(*b));
    EXPECT_EQ(token, OpaqueBackendId(Backend(*b)));
    ASSERT_EQ(token.size(), 16u);
    for (char c : token) EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << token;
    EXPECT_EQ(token.find("10.0.0"), std::string::npos);
    EXPECT_EQ(token.find("8080"), std::string::npos);
    EXPECT_EQ(token.find(b->address), std::string::npos);
    EXPECT_EQ(token.find("backend"), std::string::npos);
    seen.insert(token);
  }
  EXPECT_EQ(seen.size(), backends.size());
  // Depends on the id, not on the address or live state.
  Backend moved = *backends[0];
  moved.address = "192.168.1.1:9000";
  moved.active = 77;
  moved.weight = 9;
  EXPECT_EQ(OpaqueBackendId(moved), OpaqueBackendId(*backends[0]));
}

TEST(StickyTest, FindByOpaqueIdRoundTrips) {
  BackendList backends = MakeBackends({1, 1, 1, 1, 1});
  for (size_t i = 0; i < backends.size(); ++i) {
    EXPECT_EQ(FindByOpaqueId(backends, OpaqueBackendId(*backends[i])), static_cast<int>(i));
  }
  BackendList shuffled = Copy(backends);
  std::reverse(shuffled.begin(), shuffled.end());
  EXPECT_EQ(FindByOpaqueId(shuffled, OpaqueBackendId(*backends[0])), 4);
  EXPECT_EQ(FindByOpaqueId(backends, "0000000000000000"), -1);
  EXPECT_EQ(FindByOpaqueId(backends, OpaqueBackendId(*MakeBackends({1}, 99)[0])), -1);
  EXPECT_EQ(FindByOpaqueId(backends, ""), -1);
  EXPECT_EQ(FindByOpaqueId(backends, "xyz"), -1);
  std::string upper = OpaqueBackendId(*backends[1]);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper != OpaqueBackendId(*backends[1])) {
    EXPECT_EQ(FindByOpaqueId(backends, upper), -1);
  }
  EXPECT_EQ(FindByOpaqueId(backends, OpaqueBackendId(*backends[1]) + "0"), -1);
  EXPECT_EQ(FindByOpaqueId(BackendList{}, OpaqueBackendId(*backends[1])), -1);
}

// ---------------------------------------------------------------------------------------------
// random_two.

std::vector<size_t> CountPicks(Balancer& balancer, BackendList& backends, size_t n,
                               bool place = false) {
  std::vector<size_t> counts(backends.size(), 0);
  std::vector<bool> none;
  for (size_t i = 0; i < n; ++i) {
    int pick = balancer.Pick(backends, none);
    EXPECT_GE(pick, 0);
    if (pick < 0) continue;
    ++counts[static_cast<size_t>(pick)];
    if (place) ++backends[static_cast<size_t>(pick)]->active;
  }
  return counts;
}

TEST(RandomTwoTest, AvoidsTheOverloadedBackend) {
  auto balancer = MakeBalancer(config::Balance::kRandomTwo);
  BackendList backends = Equal(4);
  backends[3]->active = 1000;
  std::vector<size_t> counts = CountPicks(*balancer, backends, 10000);
  // Two distinct backends are compared, so the heaviest can never win.
  EXPECT_EQ(counts[3], 0u);
  for (size_t i = 0; i < 3; ++i) EXPECT_GT(counts[i], 2500u) << i;

  // Placing connections: it is not picked until the others catch up with it.
  BackendList placed = Equal(4);
  placed[3]->active = 1000;
  counts = CountPicks(*balancer, placed, 2400, /*place=*/true);
  EXPECT_EQ(counts[3], 0u);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(static_cast<double>(placed[i]->active), 800, 40);
}

TEST(RandomTwoTest, EqualLoadUsesEveryBackend) {
  auto balancer = MakeBalancer(config::Balance::kRandomTwo);
  BackendList backends = Equal(4);
  constexpr size_t kPicks = 40000;
  std::vector<size_t> counts = CountPicks(*balancer, backends, kPicks);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(static_cast<double>(counts[i]), kPicks / 4.0, kPicks / 4.0 * 0.10) << i;
  }
}

TEST(RandomTwoTest, HonoursWeights) {
  auto balancer = MakeBalancer(config::Balance::kRandomTwo);
  // Without feedback (equal zero loads) the weighted first draw decides.
  BackendList backends = MakeBackends({1, 2, 3, 4});
  constexpr size_t kPicks = 100000;
  std::vector<size_t> counts = CountPicks(*balancer, backends, kPicks);
  double worst = 0;
  for (size_t i = 0; i < 4; ++i) {
    const double expected = kPicks * (i + 1) / 10.0;
    const double error = std::abs(static_cast<double>(counts[i]) - expected) / expected;
    worst = std::max(worst, error);
    EXPECT_LE(error, 0.10) << i;
  }
  // With feedback, loads follow the weights closely.
  BackendList placed = MakeBackends({1, 2, 3, 4});
  CountPicks(*balancer, placed, 10000, /*place=*/true);
  double worst_placed = 0;
  for (size_t i = 0; i < 4; ++i) {
    const double expected = 10000.0 * (i + 1) / 10.0;
    const double error = std::abs(static_cast<double>(placed[i]->active) - expected) / expected;
    worst_placed = std::max(worst_placed, error);
    EXPECT_LE(error, 0.10) << i;
  }
  std::printf(
      "[ measured ] random_two weights 1:2:3:4: worst error %.3f%% (no feedback), "
      "%.3f%% (placing)\n",
      worst * 100, worst_placed * 100);
}

TEST(RandomTwoTest, RespectsAvailability) {
  auto balancer = MakeBalancer(config::Balance::kRandomTwo);
  BackendList backends = Equal(3);
  backends[0]->draining = true;
  std::vector<bool> excluded = {false, true, false};
  for (int i = 0; i < 100; ++i) EXPECT_EQ(balancer->Pick(backends, excluded), 2);
  backends[2]->healthy = false;
  EXPECT_EQ(balancer->Pick(backends, excluded), -1);
  BackendList one = Equal(1);
  EXPECT_EQ(balancer->Pick(one, std::vector<bool>{}), 0);
  BackendList empty;
  EXPECT_EQ(balancer->Pick(empty, std::vector<bool>{}), -1);
  // Two available among many: both are used, the unavailable never.
  BackendList five = Equal(5);
  five[0]->ejected = true;
  five[1]->draining = true;
  five[4]->healthy = false;
  std::vector<size_t> counts = CountPicks(*balancer, five, 1000);
  EXPECT_EQ(counts[0] + counts[1] + counts[4], 0u);
  EXPECT_GT(counts[2], 0u);
  EXPECT_GT(counts[3], 0u);
}

}  // namespace
}  // namespace wsgate
