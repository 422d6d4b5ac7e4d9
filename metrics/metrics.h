// wsgate's Prometheus metrics: cheap counters on the data path, aggregated when scraped.
//
// A leaf library: it knows nothing of proxy/. The data path holds plain pointers to the counter
// blocks below (resolved once per connection, never looked up by name per frame). Each block is
// written by one event-loop thread only, with relaxed loads and stores (no locked instruction,
// no shared cache line with another writer); a scrape reads them and serializes the Prometheus
// text format with prometheus-cpp's TextSerializer. Blocks live as long as the registry, so a
// reload never invalidates a pointer a live connection holds.
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

enum Direction { kClientToBackend = 0, kBackendToClient = 1 };
enum FrameKind { kText = 0, kBinary, kContinuation, kPing, kPong, kClose, kFrameKinds };
enum HandshakeResult {
  kUpgraded = 0,
  kBadRequest,
  kForbidden,
  kTooLarge,
  kTimeout,
  kNoBackend,
  kBackendFailed,
  kBackendRejected,
  kTlsFailed,
  kOverLimit,
  kNotFound,
  kAddressLimit,  // 429: limits.max_connections_per_ip or handshake_rate_per_ip
  kHandshakeResults
};
enum Initiator { kByClient = 0, kByBackend, kByProxy, kInitiators };
enum ConnectFailure {
  kRefused = 0,
  kConnectTimeout,
  kReset,
  kBadResponse,
  kTlsHandshake,  // backend TLS handshake failed (e.g. its certificate did not verify)
  kConnectFailures
};
// Why a client's TLS handshake failed; bounded, so scanners cannot grow the label set.
enum TlsFailure {
  kTlsNotTls = 0,          // plain HTTP or other non-TLS bytes on a TLS port
  kTlsProtocolVersion,     // below min_version
  kTlsNoSharedCipher,
  kTlsNoClientCertificate, // mTLS and the client sent none
  kTlsBadCertificate,      // mTLS and the client's certificate did not verify
  kTlsNoApplicationProtocol,  // ALPN without a common protocol
  kTlsTimeout,             // not finished within timeouts.handshake
  kTlsClosed,              // the client closed or reset mid-handshake
  kTlsOther,
  kTlsFailures
};
// How a SIGHUP reload ended: kPartial = applied, but some listener could not be bound.
enum ReloadResult { kReloadSuccess = 0, kReloadPartial, kReloadFailure, kReloadResults };
// Why the admin listener refused a request before looking at the token.
enum AdminRefusal {
  kAdminRefusedHost = 0,   // Host is not an address of this admin listener (DNS rebinding)
  kAdminRefusedOrigin,     // Origin not in admin.allowed_origins (a web page)
  kAdminRefusedFetchSite,  // Sec-Fetch-Site other than none, without an allowed Origin
  kAdminRefusals
};

// Frame and message counts of one pool, one block per pool name.
struct PoolMetrics {
  PoolMetrics();
  std::array<Counter, 2> messages;
  std::array<Counter, 2> bytes;
  std::array<Counter, 2> inflated_bytes;  // permessage-deflate payloads inflated to count them
  std::array<std::array<Counter, kFrameKinds>, 2> frames;
  Histogram handshake_duration;
  Histogram connection_duration;
  // Close codes folded into bounded labels: each registered code, "3xxx", "4xxx", "other".
  std::array<std::array<Counter, 24>, kInitiators> closes;
  // Plain HTTP requests by the status answered (HttpStatusSlot), and their duration.
  std::array<Counter, 501> http_requests;
  Histogram http_request_duration;
};

// Index of an HTTP status in PoolMetrics::http_requests: 100..599, and 500 for anything else
// (a request the client abandoned before any answer, labelled code="0").
inline size_t HttpStatusSlot(int status) {
  return status >= 100 && status <= 599 ? static_cast<size_t>(status - 100) : 500;
}

// One backend of one pool.
struct BackendMetrics {
  Gauge up;  // 1 healthy and accepting, 0 otherwise
  std::array<Counter, kConnectFailures> connect_failures;
};

// Connections on one (listener, pool, backend).
struct ConnectionMetrics {
  Gauge active;
  Counter total;
};

enum TlsVersion { kTls12 = 0, kTls13, kTlsVersions };

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

  // The Prometheus text exposition format (version 0.0.4) of every metric.
  std::string Serialize() const;
  // The same for several registries (one per worker thread) as one: identical series are summed
  // (counters, gauges and histogram buckets); the first registry's version labels build_info.
  static std::string Serialize(const std::vector<const Registry*>& registries);

 private:
  void Collect(std::vector<prometheus::MetricFamily>* families) const;

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

}  // namespace wsgate::metrics
