#include "proxy/balancer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "config/config.h"

namespace wsgate {
namespace {

using BackendList = std::vector<BackendPtr>;

Backend& At(BackendList& list, size_t i) { return *list[i]; }

BackendList MakeBackends(const std::vector<uint32_t>& weights,
                         const std::vector<int64_t>& active = {}) {
  BackendList backends;
  for (size_t i = 0; i < weights.size(); ++i) {
    backends.push_back(std::make_shared<Backend>());
    Backend& b = At(backends, i);
    b.address = "10.0.0." + std::to_string(i + 1) + ":80";
    b.weight = weights[i];
    if (i < active.size()) b.active = active[i];
  }
  return backends;
}

std::vector<int> Picks(Balancer& balancer, BackendList& backends, size_t n,
                       const std::vector<bool>& excluded = {}) {
  std::vector<int> out;
  for (size_t i = 0; i < n; ++i) out.push_back(balancer.Pick(backends, excluded));
  return out;
}

std::vector<int> Counts(const std::vector<int>& picks, size_t n) {
  std::vector<int> counts(n, 0);
  for (int p : picks) {
    EXPECT_GE(p, 0);
    if (p >= 0) ++counts[static_cast<size_t>(p)];
  }
  return counts;
}

TEST(RoundRobinTest, WeightedDistributionIsExact) {
  auto balancer = MakeBalancer(config::Balance::kRoundRobin);
  auto backends = MakeBackends({5, 3, 2});
  std::vector<int> picks = Picks(*balancer, backends, 1000);
  EXPECT_EQ(Counts(picks, 3), (std::vector<int>{500, 300, 200}));
  // Smooth: each cycle of 10 picks holds exactly 5/3/2, interleaved.
  EXPECT_EQ(std::vector<int>(picks.begin(), picks.begin() + 10),
            (std::vector<int>{0, 1, 2, 0, 0, 1, 0, 2, 1, 0}));
  for (size_t start = 0; start < picks.size(); start += 10) {
    std::vector<int> window(picks.begin() + static_cast<ptrdiff_t>(start),
                            picks.begin() + static_cast<ptrdiff_t>(start + 10));
    ASSERT_EQ(Counts(window, 3), (std::vector<int>{5, 3, 2})) << start;
  }
  // Never more than two of the same backend in a row.
  size_t run = 1;
  size_t longest = 1;
  for (size_t i = 1; i < picks.size(); ++i) {
    run = picks[i] == picks[i - 1] ? run + 1 : 1;
    longest = std::max(longest, run);
  }
  EXPECT_EQ(longest, 2u);
}

TEST(RoundRobinTest, NginxSequence) {
  auto balancer = MakeBalancer(config::Balance::kRoundRobin);
  auto backends = MakeBackends({5, 1, 1});
  EXPECT_EQ(Picks(*balancer, backends, 14),
            (std::vector<int>{0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0}));
}

TEST(RoundRobinTest, EqualWeightsRotate) {
  auto balancer = MakeBalancer(config::Balance::kRoundRobin);
  auto backends = MakeBackends({1, 1, 1});
  EXPECT_EQ(Picks(*balancer, backends, 7), (std::vector<int>{0, 1, 2, 0, 1, 2, 0}));
}

TEST(RoundRobinTest, OtherWeightsOver1000Picks) {
  auto balancer = MakeBalancer(config::Balance::kRoundRobin);
  auto backends = MakeBackends({1, 2, 3, 4});  // total 10
  EXPECT_EQ(Counts(Picks(*balancer, backends, 1000), 4), (std::vector<int>{100, 200, 300, 400}));
  auto balancer2 = MakeBalancer(config::Balance::kRoundRobin);
  auto backends2 = MakeBackends({1000, 1});
  std::vector<int> picks = Picks(*balancer2, backends2, 1001);
  EXPECT_EQ(Counts(picks, 2), (std::vector<int>{1000, 1}));
}

TEST(RoundRobinTest, IgnoresActiveCounts) {
  auto balancer = MakeBalancer(config::Balance::kRoundRobin);
  auto backends = MakeBackends({1, 1}, {100, 0});
  EXPECT_EQ(Picks(*balancer, backends, 4), (std::vector<int>{0, 1, 0, 1}));
}

TEST(RoundRobinTest, Exclusions) {
  auto balancer = MakeBalancer(config::Balance::kRoundRobin);
  auto backends = MakeBackends({5, 3, 2});
  std::vector<int> picks = Picks(*balancer, backends, 500, {false, true, false});
  EXPECT_EQ(Counts(picks, 3), (std::vector<int>{357, 0, 143}));
  EXPECT_EQ(std::count(picks.begin(), picks.end(), 1), 0);

  EXPECT_EQ(balancer->Pick(backends, {true, true, true}), -1);
  EXPECT_EQ(balancer->Pick(backends, {false, true, true}), 0);
  EXPECT_EQ(balancer->Pick(backends, {true, true, false}), 2);

  BackendList none;
  EXPECT_EQ(balancer->Pick(none, PickRequest{}), -1);
}

TEST(RoundRobinTest, ShortExclusionVectorMeansNotExcluded) {
  auto balancer = MakeBalancer(config::Balance::kRoundRobin);
  auto backends = MakeBackends({1, 1, 1});
  EXPECT_EQ(Picks(*balancer, backends, 4, {true}), (std::vector<int>{1, 2, 1, 2}));
}

TEST(LeastConnTest, PicksLowestActivePerWeight) {
  auto balancer = MakeBalancer(config::Balance::kLeastConn);
  auto backends = MakeBackends({1, 1, 1}, {3, 1, 2});
  EXPECT_EQ(balancer->Pick(backends, PickRequest{}), 1);
  EXPECT_EQ(balancer->Pick(backends, PickRequest{}),
            1);  // Pick does not count the connection itself

  // 4/4 = 1 beats 3/1 = 3 and 5/2 = 2.5.
  auto weighted = MakeBackends({4, 1, 2}, {4, 3, 5});
  EXPECT_EQ(balancer->Pick(weighted, PickRequest{}), 0);
  // 2/1 = 2 vs 5/3 = 1.67: index 1.
  auto weighted2 = MakeBackends({1, 3}, {2, 5});
  EXPECT_EQ(balancer->Pick(weighted2, PickRequest{}), 1);
}

TEST(LeastConnTest, TiesRotate) {
  auto balancer = MakeBalancer(config::Balance::kLeastConn);
  auto backends = MakeBackends({1, 1, 1});
  EXPECT_EQ(Picks(*balancer, backends, 7), (std::vector<int>{0, 1, 2, 0, 1, 2, 0}));

  auto balancer2 = MakeBalancer(config::Balance::kLeastConn);
  auto some = MakeBackends({1, 1, 1}, {0, 5, 0});
  EXPECT_EQ(Picks(*balancer2, some, 6), (std::vector<int>{0, 2, 0, 2, 0, 2}));

  // Equal ratios with different weights are ties too: 2/2 == 1/1.
  auto balancer3 = MakeBalancer(config::Balance::kLeastConn);
  auto ratio = MakeBackends({2, 1}, {2, 1});
  EXPECT_EQ(Picks(*balancer3, ratio, 4), (std::vector<int>{0, 1, 0, 1}));
}

TEST(LeastConnTest, TracksWeightsWhenConnectionsAreCounted) {
  auto balancer = MakeBalancer(config::Balance::kLeastConn);
  auto backends = MakeBackends({1, 2, 3});
  std::vector<int> picks;
  for (int i = 0; i < 1000; ++i) {
    int p = balancer->Pick(backends, PickRequest{});
    ASSERT_GE(p, 0);
    ++At(backends, static_cast<size_t>(p)).active;
    picks.push_back(p);
  }
  EXPECT_EQ(std::vector<int>(picks.begin(), picks.begin() + 12),
            (std::vector<int>{0, 1, 2, 2, 1, 2, 0, 1, 2, 2, 1, 2}));
  EXPECT_EQ(At(backends, 0).active, 167);
  EXPECT_EQ(At(backends, 1).active, 333);
  EXPECT_EQ(At(backends, 2).active, 500);
}

TEST(LeastConnTest, Exclusions) {
  auto balancer = MakeBalancer(config::Balance::kLeastConn);
  auto backends = MakeBackends({1, 1, 1}, {0, 1, 2});
  EXPECT_EQ(balancer->Pick(backends, {true, false, false}), 1);
  EXPECT_EQ(balancer->Pick(backends, {true, true, false}), 2);
  EXPECT_EQ(balancer->Pick(backends, {false, true, true}), 0);
  EXPECT_EQ(balancer->Pick(backends, {true, true, true}), -1);
  EXPECT_EQ(balancer->Pick(backends, PickRequest{}), 0);
  EXPECT_EQ(balancer->Pick(backends, {true}), 1);  // missing entries are not excluded

  BackendList none;
  EXPECT_EQ(balancer->Pick(none, PickRequest{}), -1);

  // Excluded backends never win a tie.
  auto balancer2 = MakeBalancer(config::Balance::kLeastConn);
  auto ties = MakeBackends({1, 1, 1, 1});
  EXPECT_EQ(Picks(*balancer2, ties, 6, {false, true, false, true}),
            (std::vector<int>{0, 2, 0, 2, 0, 2}));
}

template <typename B>
concept HasDraining = requires(B b) {
  b.draining;
};

// Only instantiated when Backend has a draining flag.
template <typename B>
void CheckDrainingIsExcluded() {
  {
    auto balancer = MakeBalancer(config::Balance::kRoundRobin);
    auto backends = MakeBackends({1, 1, 1});
    static_cast<B&>(At(backends, 1)).draining = true;
    EXPECT_EQ(Picks(*balancer, backends, 4), (std::vector<int>{0, 2, 0, 2}));
    static_cast<B&>(At(backends, 0)).draining = true;
    static_cast<B&>(At(backends, 2)).draining = true;
    EXPECT_EQ(balancer->Pick(backends, PickRequest{}), -1);
  }
  {
    auto balancer = MakeBalancer(config::Balance::kLeastConn);
    auto backends = MakeBackends({1, 1, 1}, {5, 0, 3});
    static_cast<B&>(At(backends, 1)).draining = true;
    EXPECT_EQ(balancer->Pick(backends, PickRequest{}), 2);
    EXPECT_EQ(balancer->Pick(backends, {false, false, true}), 0);
    static_cast<B&>(At(backends, 0)).draining = true;
    EXPECT_EQ(balancer->Pick(backends, {false, false, true}), -1);
  }
}

TEST(BalancerTest, DrainingBackendsAreExcluded) {
  if constexpr (HasDraining<Backend>) {
    CheckDrainingIsExcluded<Backend>();
  } else {
    GTEST_SKIP() << "Backend has no draining flag in this version";
  }
}

// A least-connections pool of |n| backends and one request's attempts over it.
struct AttemptsFixture {
  explicit AttemptsFixture(size_t n)
      : pool{"p", MakeBackends(std::vector<uint32_t>(n, 1)),
             MakeBalancer(config::Balance::kLeastConn)} {
    attempts.Reset(n);
  }
  // The chosen backend; its lease is kept, so it stays counted in its active.
  BackendPtr Next(uint32_t retries, int preferred = -1) {
    BackendLease lease = attempts.Next(pool, pick, preferred, retries, &status, &reason);
    if (!lease) return nullptr;
    leases.push_back(std::move(lease));
    return leases.back().shared();
  }
  Pool pool;
  std::vector<BackendLease> leases;
  BackendAttempts attempts;
  PickRequest pick;
  int status = 0;
  const char* reason = nullptr;
};

TEST(BackendAttemptsTest, TriesEachBackendOnceWithinTheRetries) {
  AttemptsFixture f(3);
  std::vector<BackendPtr> chosen;
  for (int i = 0; i < 3; ++i) {
    BackendPtr next = f.Next(5);
    ASSERT_TRUE(next);
    EXPECT_EQ(next->active, 1);  // counted as soon as it is chosen
    EXPECT_EQ(std::count(chosen.begin(), chosen.end(), next), 0);  // never twice
    chosen.push_back(next);
    f.attempts.Failed(/*timed_out=*/i != 1);
  }
  EXPECT_FALSE(f.Next(5));
  EXPECT_EQ(f.status, 502);  // one failure was not a timeout
  EXPECT_EQ(f.attempts.count(), 3u);
}

TEST(BackendAttemptsTest, RetriesBoundTheTriesAndTimeoutsGive504) {
  AttemptsFixture f(3);
  ASSERT_TRUE(f.Next(1));
  f.attempts.Failed(true);
  ASSERT_TRUE(f.Next(1));  // the one retry
  f.attempts.Failed(true);
  EXPECT_FALSE(f.Next(1));
  EXPECT_EQ(f.status, 504);
  EXPECT_STREQ(f.reason, "every backend attempt timed out");
  f.attempts.Restart();  // a fresh round keeps "all timed out" but may try every backend again
  EXPECT_TRUE(f.Next(1));
}

TEST(BackendAttemptsTest, PreferredBackendFirstAndNoneAvailableIs503) {
  AttemptsFixture f(2);
  EXPECT_EQ(f.Next(2, /*preferred=*/1), f.pool.backends[1]);
  for (auto& backend : f.pool.backends) backend->draining = true;
  f.attempts.Reset(2);
  EXPECT_FALSE(f.Next(2));
  EXPECT_EQ(f.status, 503);
}

TEST(BackendLeaseTest, CountsOnceFromTakingUntilReleaseOrDestruction) {
  auto backend = std::make_shared<Backend>();
  {
    BackendLease lease(backend);
    EXPECT_EQ(backend->active, 1);
    BackendLease moved = std::move(lease);
    EXPECT_FALSE(lease);  // NOLINT(bugprone-use-after-move): a moved-from lease holds nothing
    EXPECT_EQ(backend->active, 1);
    moved.Release();
    EXPECT_EQ(backend->active, 0);
    moved.Release();  // a second release does nothing
    EXPECT_EQ(backend->active, 0);
    moved = BackendLease(backend);
    EXPECT_EQ(backend->active, 1);
  }
  EXPECT_EQ(backend->active, 0);  // destruction released it
}

TEST(BackendLeaseTest, AssigningAnotherLeaseReleasesTheFirst) {
  auto first = std::make_shared<Backend>();
  auto second = std::make_shared<Backend>();
  BackendLease lease(first);
  lease = BackendLease(second);
  EXPECT_EQ(first->active, 0);
  EXPECT_EQ(second->active, 1);
  EXPECT_EQ(lease.get(), second.get());
}

TEST(BackendAttemptsTest, DroppingTheLeaseUncountsTheBackend) {
  AttemptsFixture f(1);
  {
    BackendLease lease = f.attempts.Next(f.pool, f.pick, -1, 1, &f.status, &f.reason);
    ASSERT_TRUE(lease);
    EXPECT_EQ(f.pool.backends[0]->active, 1);
  }
  EXPECT_EQ(f.pool.backends[0]->active, 0);
}

}  // namespace
}  // namespace wsgate
