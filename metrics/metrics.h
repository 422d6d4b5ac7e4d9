// wsgate's Prometheus metrics: cheap counters on the data path, aggregated when scraped.
//
// A leaf library: it knows nothing of proxy/. The data path holds plain pointers to the counter
// blocks below (resolved once per connection, never looked up by name per frame). Each block is
// written by one event-loop thread only, with relaxed loads and stores (no locked instruction,
// no shared cache line with another writer); a scrape reads them and serializes the Prometheus
// text format with prometheus-cpp's TextSerializer. Every family is declared once, in
// families.h. Blocks live as long as the registry, so a reload never invalidates a pointer a
// live connection holds.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "metrics/families.h"

namespace prometheus {
struct MetricFamily;
}  // namespace prometheus

namespace wsgate::metrics {

// A monotonically increasing count with one writer thread.
class Counter {
 public:
  void Add(uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t Get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down, with one writer thread.
class Gauge {
 public:
  void Add(int64_t n) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void Set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  int64_t Get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// Fixed-bucket histogram of seconds, one writer thread.
class Histogram {
 public:
  explicit Histogram(const std::vector<double>* bounds);
  void Observe(double seconds);
  const std::vector<double>& bounds() const { return *bounds_; }
  std::vector<uint64_t> Counts() const;  // per bucket, not cumulative; last = +Inf
  double Sum() const {
    return static_cast<double>(sum_micros_.load(std::memory_order_relaxed)) / 1e6;
  }

 private:
  const std::vector<double>* bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<uint64_t> sum_micros_{0};
};

// Frame and message counts of one pool, one block per pool name.
struct PoolMetrics {
  PoolMetrics();
  std::array<Counter, kDirections> messages;
  std::array<Counter, kDirections> bytes;
  std::array<Counter, kDirections> inflated_bytes;  // permessage-deflate payloads inflated
  std::array<std::array<Counter, kFrameKinds>, kDirections> frames;
  Histogram handshake_duration;
  Histogram connection_duration;
  // Close codes folded into bounded labels: each registered code, "3xxx", "4xxx", "other".
  std::array<std::array<Counter, kCloseCodeLabels.size()>, kInitiators> closes;
  // Plain HTTP requests by the status answered (HttpStatusSlot), and their duration.
  std::array<Counter, 501> http_requests;
  Histogram http_request_duration;
  // Session moves (pools[].migrate), by reason and result, and the pause each moved one caused.
  std::array<std::array<Counter, kMigrationResults>, kMigrationReasons> migrations;
  Histogram migration_pause;
};

// Index of an HTTP status in PoolMetrics::http_requests: 100..599, and 500 for anything else
// (a request the client abandoned before any answer, labelled code="0").
inline size_t HttpStatusSlot(int status) {
  return status >= 100 && status <= 599 ? static_cast<size_t>(status - 100) : 500;
}

// One backend of one pool.
// (wsgate_backend_up is computed when scraped: Scrape::backends.)
struct BackendMetrics {
  std::array<Counter, kConnectFailures> connect_failures;
};

// Connections on one (listener, pool, backend).
struct ConnectionMetrics {
  Gauge active;
  Counter total;
};

struct ListenerMetrics {
  std::array<Counter, kHandshakeResults> handshakes;
  std::array<Counter, kTlsFailures> tls_handshake_failures;
  // Completed client TLS handshakes by version, then [0] full / [1] resumed.
  std::array<std::array<Counter, 2>, kTlsVersions> tls_handshakes;
};

// Index of |code| in PoolMetrics::closes.
size_t CloseCodeSlot(uint16_t code);

class Registry {
 public:
  explicit Registry(std::string version);

  // Blocks are created on first use and never freed before the registry. Not for the per-frame
  // path: call once per connection (or at configuration time) and keep the pointer.
  PoolMetrics& Pool(const std::string& pool);
  BackendMetrics& Backend(const std::string& pool, const std::string& backend);
  ConnectionMetrics& Connections(const std::string& listener, const std::string& pool,
                                 const std::string& backend);
  ListenerMetrics& Listener(const std::string& listener);

  Gauge& draining() { return draining_; }
  Counter& reloads(ReloadResult result) { return reloads_[result]; }
  Counter& admin_refused(AdminRefusal reason) { return admin_refused_[reason]; }
  Counter& rebalance_closes() { return rebalance_closes_; }

  // Every family of kFamilySpecs, by FamilyId, with the series this registry counts.
  void Collect(std::vector<prometheus::MetricFamily>* families) const;

 private:
  // Guards the maps below (lookups happen once per connection; a scrape reads them from another
  // thread). The counters themselves are atomics and need no lock.
  mutable std::mutex mutex_;
  std::string version_;
  std::map<std::string, std::unique_ptr<PoolMetrics>> pools_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<BackendMetrics>> backends_;
  std::map<std::tuple<std::string, std::string, std::string>, std::unique_ptr<ConnectionMetrics>>
      connections_;
  std::map<std::string, std::unique_ptr<ListenerMetrics>> listeners_;
  Gauge draining_;
  std::array<Counter, kReloadResults> reloads_;
  std::array<Counter, kAdminRefusals> admin_refused_;
  Counter rebalance_closes_;
};

// A backend as it is when scraped.
struct BackendState {
  std::string pool;
  std::string address;
  bool up = false;  // takes new connections: what /readyz and the admin backends API say
};

// The connections API's own counters (main thread), sampled when scraped.
struct ConnectionsApiSample {
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (method, status) -> answered
  uint64_t connections = 0;                                  // reachable now
  uint64_t disconnect_delivered = 0;
  uint64_t disconnect_retried = 0;
  uint64_t disconnect_failed = 0;
  uint64_t disconnect_dropped = 0;
  uint64_t auth_allowed = 0;
  uint64_t auth_denied = 0;
  uint64_t auth_failed = 0;
  uint64_t auth_cache_hits = 0;
  uint64_t revalidation_allowed = 0;
  uint64_t revalidation_revoked = 0;
  uint64_t revalidation_failed = 0;
};

// cluster: the fleet's counters, written on the main thread (cluster/fleet.h).
struct FleetMetrics {
  FleetMetrics();
  Gauge redis_up;
  std::array<Counter, kRegistryOps> registry_writes;
  Counter registry_errors;
  std::array<Counter, kForwardResults> forwards;
  std::array<Counter, kForwardResults> publishes;
  std::array<Counter, kForwardResults> user_gate;  // fleet-wide per-user cap checks
  Counter fanout_received;
  Histogram forward_seconds;
  Histogram command_seconds;
};

// Everything one /metrics answer reports.
struct Scrape {
  // One per worker thread (or one): identical series are summed (counters, gauges, histogram
  // buckets); the first one's version labels build_info.
  std::vector<const Registry*> registries;
  // Every backend that exists now: configured, or removed by a reload and still draining. Series
  // labelled with a backend not listed (removed and drained) are left out; wsgate_backend_up
  // comes from here, so it never disagrees with /readyz.
  std::vector<BackendState> backends;
  ConnectionsApiSample connections_api;
  const FleetMetrics* fleet = nullptr;  // with `cluster`
  // wsgate_discovery_errors_total by pool (main thread's discovery, sampled when scraped).
  std::map<std::string, uint64_t> discovery_errors;
  bool process = true;  // the process_* families, read from /proc now
};

// The Prometheus text exposition format (version 0.0.4) of every family in kFamilySpecs.
std::string Serialize(const Scrape& scrape);

}  // namespace wsgate::metrics
