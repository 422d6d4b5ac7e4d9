#include "metrics/metrics.h"

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <limits>
#include <map>
#include <sstream>

namespace wsgate::metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Handshakes take milliseconds; WebSocket connections live from seconds to days.
const std::vector<double> kHandshakeBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                               0.25,  0.5,    1,     2.5,  5,     10};
const std::vector<double> kConnectionBuckets = {1,     10,    60,     300,    900,    1800,
                                                3600,  10800, 21600,  43200,  86400,  259200,
                                                604800};

// HTTP requests: milliseconds for an API call, up to minutes for a long poll or a download.
const std::vector<double> kHttpRequestBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                 0.25,  0.5,    1,     2.5,  5,     10,  30, 60};

constexpr std::array<const char*, kFrameKinds> kFrameKindNames = {
    "text", "binary", "continuation", "ping", "pong", "close"};
constexpr std::array<const char*, 2> kDirectionNames = {"client_to_backend", "backend_to_client"};
constexpr std::array<const char*, kHandshakeResults> kHandshakeResultNames = {
    "upgraded",        "bad_request",      "forbidden",  "too_large",  "timeout",  "no_backend",
    "backend_failed",  "backend_rejected", "tls_failed", "over_limit", "not_found",
    "address_limit"};
constexpr std::array<const char*, kInitiators> kInitiatorNames = {"client", "backend", "proxy"};
constexpr std::array<const char*, kConnectFailures> kConnectFailureNames = {
    "refused", "timeout", "reset", "bad_response", "tls_handshake"};
constexpr std::array<const char*, kTlsFailures> kTlsFailureNames = {
    "not_tls",         "protocol_version",        "no_shared_cipher",
    "no_client_certificate", "bad_certificate",   "no_application_protocol",
    "timeout",         "closed",                  "other"};
constexpr std::array<const char*, kReloadResults> kReloadResultNames = {"success", "partial",
                                                                        "failure"};
constexpr std::array<const char*, kAdminRefusals> kAdminRefusalNames = {"host", "origin",
                                                                        "fetch_site"};
// Close code labels, in the order of CloseCodeSlot().
constexpr std::array<const char*, 24> kCloseCodeNames = {
    "1000", "1001", "1002", "1003", "1005", "1006", "1007", "1008", "1009", "1010", "1011", "1012",
    "1013", "1014", "1015", "3xxx", "4xxx", "other", "", "", "", "", "", ""};

ClientMetric WithLabels(std::vector<ClientMetric::Label> labels) {
  ClientMetric metric;
  metric.label = std::move(labels);
  return metric;
}

MetricFamily Family(const char* name, const char* help, MetricType type) {
  MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  return family;
}

void AddHistogram(MetricFamily& family, const Histogram& histogram,
                  std::vector<ClientMetric::Label> labels) {
  ClientMetric metric = WithLabels(std::move(labels));
  std::vector<uint64_t> counts = histogram.Counts();
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound = i < histogram.bounds().size() ? histogram.bounds()[i]
                                                       : std::numeric_limits<double>::infinity();
    metric.histogram.bucket.push_back(bucket);
  }
  metric.histogram.sample_count = cumulative;
  metric.histogram.sample_sum = histogram.Sum();
  family.metric.push_back(std::move(metric));
}

}  // namespace

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), counts_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double seconds) {
  size_t i = 0;
  while (i < bounds_->size() && seconds > (*bounds_)[i]) ++i;
  counts_[i].store(counts_[i].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  auto micros = static_cast<uint64_t>(seconds * 1e6);
  sum_micros_.store(sum_micros_.load(std::memory_order_relaxed) + micros,
                    std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::Counts() const {
  std::vector<uint64_t> out(bounds_->size() + 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

PoolMetrics::PoolMetrics()
    : handshake_duration(&kHandshakeBuckets),
      connection_duration(&kConnectionBuckets),
      http_request_duration(&kHttpRequestBuckets) {}

size_t CloseCodeSlot(uint16_t code) {
  if (code >= 1000 && code <= 1003) return code - 1000;
  if (code >= 1005 && code <= 1015) return code - 1005 + 4;
  if (code >= 3000 && code <= 3999) return 15;
  if (code >= 4000 && code <= 4999) return 16;
  return 17;
}

Registry::Registry(std::string version) : version_(std::move(version)) {}

PoolMetrics& Registry::Pool(const std::string& pool) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = pools_[pool];
  if (!slot) slot = std::make_unique<PoolMetrics>();
  return *slot;
}

BackendMetrics& Registry::Backend(const std::string& pool, const std::string& backend) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = backends_[{pool, backend}];
  if (!slot) slot = std::make_unique<BackendMetrics>();
  return *slot;
}

ConnectionMetrics& Registry::Connections(const std::string& listener, const std::string& pool,
                                         const std::string& backend) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = connections_[{listener, pool, backend}];
  if (!slot) slot = std::make_unique<ConnectionMetrics>();
  return *slot;
}

ListenerMetrics& Registry::Listener(const std::string& listener) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = listeners_[listener];
  if (!slot) slot = std::make_unique<ListenerMetrics>();
  return *slot;
}

std::string Registry::Serialize() const { return Serialize({this}); }

std::string Registry::Serialize(const std::vector<const Registry*>& registries) {
  std::vector<MetricFamily> merged;
  for (const Registry* registry : registries) {
    std::vector<MetricFamily> families;
    registry->Collect(&families);
    if (merged.empty()) {
      merged = std::move(families);
      continue;
    }
    // Every registry yields the same families in the same order.
    for (size_t f = 0; f < families.size() && f < merged.size(); ++f) {
      MetricFamily& into = merged[f];
      if (into.name == "wsgate_build_info") continue;  // one process, one build
      std::map<std::vector<std::pair<std::string, std::string>>, size_t> index;
      auto key_of = [](const ClientMetric& m) {
        std::vector<std::pair<std::string, std::string>> key;
        for (const auto& label : m.label) key.emplace_back(label.name, label.value);
        return key;
      };
      for (size_t i = 0; i < into.metric.size(); ++i) index[key_of(into.metric[i])] = i;
      for (ClientMetric& metric : families[f].metric) {
        auto found = index.find(key_of(metric));
        if (found == index.end()) {
          index[key_of(metric)] = into.metric.size();
          into.metric.push_back(std::move(metric));
          continue;
        }
        ClientMetric& target = into.metric[found->second];
        target.counter.value += metric.counter.value;
        target.gauge.value += metric.gauge.value;
        target.histogram.sample_count += metric.histogram.sample_count;
        target.histogram.sample_sum += metric.histogram.sample_sum;
        for (size_t b = 0; b < target.histogram.bucket.size() && b < metric.histogram.bucket.size();
             ++b) {
          target.histogram.bucket[b].cumulative_count += metric.histogram.bucket[b].cumulative_count;
        }
      }
    }
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, merged);
  return out.str();
}

void Registry::Collect(std::vector<MetricFamily>* out) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<MetricFamily>& families = *out;

  auto active = Family("wsgate_connections_active", "Open client connections by backend.",
                       MetricType::Gauge);
  auto total = Family("wsgate_connections_total", "Client connections upgraded, by backend.",
                      MetricType::Counter);
  for (const auto& [key, m] : connections_) {
    const auto& [listener, pool, backend] = key;
    std::vector<ClientMetric::Label> labels = {
        {"listener", listener}, {"pool", pool}, {"backend", backend}};
    ClientMetric a = WithLabels(labels);
    a.gauge.value = static_cast<double>(m->active.Get());
    active.metric.push_back(std::move(a));
    ClientMetric t = WithLabels(labels);
    t.counter.value = static_cast<double>(m->total.Get());
    total.metric.push_back(std::move(t));
  }
  families.push_back(std::move(active));
  families.push_back(std::move(total));

  auto handshakes = Family("wsgate_handshakes_total", "Client handshakes by outcome.",
                           MetricType::Counter);
  for (const auto& [listener, m] : listeners_) {
    for (size_t r = 0; r < kHandshakeResults; ++r) {
      ClientMetric metric =
          WithLabels({{"listener", listener}, {"result", kHandshakeResultNames[r]}});
      metric.counter.value = static_cast<double>(m->handshakes[r].Get());
      handshakes.metric.push_back(std::move(metric));
    }
  }
  families.push_back(std::move(handshakes));

  auto tls_failures = Family("wsgate_tls_handshake_failures_total",
                             "Failed client TLS handshakes by reason.", MetricType::Counter);
  for (const auto& [listener, m] : listeners_) {
    for (size_t r = 0; r < kTlsFailures; ++r) {
      ClientMetric metric = WithLabels({{"listener", listener}, {"reason", kTlsFailureNames[r]}});
      metric.counter.value = static_cast<double>(m->tls_handshake_failures[r].Get());
      tls_failures.metric.push_back(std::move(metric));
    }
  }
  families.push_back(std::move(tls_failures));

  auto tls_handshakes = Family("wsgate_tls_handshakes_total",
                               "Completed client TLS handshakes by version and resumption.",
                               MetricType::Counter);
  static constexpr std::array<const char*, kTlsVersions> kTlsVersionNames = {"TLSv1.2", "TLSv1.3"};
  for (const auto& [listener, m] : listeners_) {
    for (size_t v = 0; v < kTlsVersions; ++v) {
      for (size_t resumed = 0; resumed < 2; ++resumed) {
        const uint64_t count = m->tls_handshakes[v][resumed].Get();
        if (count == 0) continue;  // plain listeners have none
        ClientMetric metric = WithLabels({{"listener", listener},
                                          {"version", kTlsVersionNames[v]},
                                          {"resumed", resumed != 0 ? "true" : "false"}});
        metric.counter.value = static_cast<double>(count);
        tls_handshakes.metric.push_back(std::move(metric));
      }
    }
  }
  families.push_back(std::move(tls_handshakes));

  auto handshake_duration =
      Family("wsgate_handshake_duration_seconds",
             "Time from accept to the 101 relayed to the client.", MetricType::Histogram);
  auto connection_duration = Family("wsgate_connection_duration_seconds",
                                    "Lifetime of upgraded connections.", MetricType::Histogram);
  auto messages = Family("wsgate_messages_total", "Whole WebSocket messages relayed.",
                         MetricType::Counter);
  auto bytes = Family("wsgate_bytes_total", "WebSocket bytes relayed (frame headers included).",
                      MetricType::Counter);
  auto frames = Family("wsgate_frames_total", "WebSocket frames relayed.", MetricType::Counter);
  auto inflated = Family("wsgate_inflated_bytes_total",
                         "Size of compressed WebSocket payloads once inflated (compression: "
                         "inspect).",
                         MetricType::Counter);
  auto closes = Family("wsgate_closes_total", "Closed WebSocket connections by close code.",
                       MetricType::Counter);
  for (const auto& [pool, m] : pools_) {
    if (pool.empty()) continue;  // plain HTTP requests rejected before routing: HTTP series only
    AddHistogram(handshake_duration, m->handshake_duration, {{"pool", pool}});
    AddHistogram(connection_duration, m->connection_duration, {{"pool", pool}});
    for (size_t d = 0; d < 2; ++d) {
      ClientMetric msg = WithLabels({{"pool", pool}, {"direction", kDirectionNames[d]}});
      msg.counter.value = static_cast<double>(m->messages[d].Get());
      messages.metric.push_back(std::move(msg));
      ClientMetric b = WithLabels({{"pool", pool}, {"direction", kDirectionNames[d]}});
      b.counter.value = static_cast<double>(m->bytes[d].Get());
      bytes.metric.push_back(std::move(b));
      ClientMetric in = WithLabels({{"pool", pool}, {"direction", kDirectionNames[d]}});
      in.counter.value = static_cast<double>(m->inflated_bytes[d].Get());
      inflated.metric.push_back(std::move(in));
      for (size_t k = 0; k < kFrameKinds; ++k) {
        ClientMetric f = WithLabels(
            {{"pool", pool}, {"direction", kDirectionNames[d]}, {"opcode", kFrameKindNames[k]}});
        f.counter.value = static_cast<double>(m->frames[d][k].Get());
        frames.metric.push_back(std::move(f));
      }
    }
    for (size_t i = 0; i < kInitiators; ++i) {
      for (size_t c = 0; c < 18; ++c) {
        uint64_t value = m->closes[i][c].Get();
        if (value == 0) continue;  // keep the exposition short: only codes that happened
        ClientMetric metric = WithLabels(
            {{"pool", pool}, {"initiator", kInitiatorNames[i]}, {"code", kCloseCodeNames[c]}});
        metric.counter.value = static_cast<double>(value);
        closes.metric.push_back(std::move(metric));
      }
    }
  }
  auto http_requests = Family("wsgate_http_requests_total",
                              "Plain HTTP requests by pool and the status answered.",
                              MetricType::Counter);
  auto http_duration = Family("wsgate_http_request_duration_seconds",
                              "Plain HTTP requests, from their first byte to the response's end.",
                              MetricType::Histogram);
  for (const auto& [pool, m] : pools_) {
    bool any = false;
    for (size_t slot = 0; slot < m->http_requests.size(); ++slot) {
      uint64_t value = m->http_requests[slot].Get();
      if (value == 0) continue;  // only codes that happened
      any = true;
      std::string code = slot < 500 ? std::to_string(slot + 100) : "0";
      ClientMetric metric = WithLabels({{"pool", pool}, {"code", code}});
      metric.counter.value = static_cast<double>(value);
      http_requests.metric.push_back(std::move(metric));
    }
    if (any) AddHistogram(http_duration, m->http_request_duration, {{"pool", pool}});
  }
  families.push_back(std::move(handshake_duration));
  families.push_back(std::move(connection_duration));
  families.push_back(std::move(http_requests));
  families.push_back(std::move(http_duration));
  families.push_back(std::move(messages));
  families.push_back(std::move(frames));
  families.push_back(std::move(bytes));
  families.push_back(std::move(inflated));
  families.push_back(std::move(closes));

  auto up = Family("wsgate_backend_up", "1 if the backend takes new connections.",
                   MetricType::Gauge);
  auto failures = Family("wsgate_backend_connect_failures_total",
                         "Failed backend attempts before an upgrade.", MetricType::Counter);
  for (const auto& [key, m] : backends_) {
    ClientMetric u = WithLabels({{"pool", key.first}, {"backend", key.second}});
    u.gauge.value = static_cast<double>(m->up.Get());
    up.metric.push_back(std::move(u));
    for (size_t r = 0; r < kConnectFailures; ++r) {
      ClientMetric f = WithLabels(
          {{"pool", key.first}, {"backend", key.second}, {"reason", kConnectFailureNames[r]}});
      f.counter.value = static_cast<double>(m->connect_failures[r].Get());
      failures.metric.push_back(std::move(f));
    }
  }
  families.push_back(std::move(up));
  families.push_back(std::move(failures));

  auto draining = Family("wsgate_draining", "1 while the process drains.", MetricType::Gauge);
  ClientMetric d;
  d.gauge.value = static_cast<double>(draining_.Get());
  draining.metric.push_back(std::move(d));
  families.push_back(std::move(draining));

  auto reloads = Family("wsgate_config_reloads_total", "Configuration reloads by result.",
                        MetricType::Counter);
  for (size_t r = 0; r < kReloadResults; ++r) {
    ClientMetric m = WithLabels({{"result", kReloadResultNames[r]}});
    m.counter.value = static_cast<double>(reloads_[r].Get());
    reloads.metric.push_back(std::move(m));
  }
  families.push_back(std::move(reloads));

  auto refused = Family("wsgate_admin_requests_refused_total",
                        "Admin requests refused for their Host, Origin or Sec-Fetch-Site.",
                        MetricType::Counter);
  for (size_t r = 0; r < kAdminRefusals; ++r) {
    ClientMetric m = WithLabels({{"reason", kAdminRefusalNames[r]}});
    m.counter.value = static_cast<double>(admin_refused_[r].Get());
    refused.metric.push_back(std::move(m));
  }
  families.push_back(std::move(refused));

  auto rebalance = Family("wsgate_rebalance_closes_total",
                          "Connections closed with 1012 to rebalance a pool.", MetricType::Counter);
  ClientMetric r;
  r.counter.value = static_cast<double>(rebalance_closes_.Get());
  rebalance.metric.push_back(std::move(r));
  families.push_back(std::move(rebalance));

  auto build = Family("wsgate_build_info", "Always 1; the version is in the label.",
                      MetricType::Gauge);
  ClientMetric b = WithLabels({{"version", version_}});
  b.gauge.value = 1;
  build.metric.push_back(std::move(b));
  families.push_back(std::move(build));
}

}  // namespace wsgate::metrics
