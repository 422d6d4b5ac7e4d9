#include "metrics/metrics.h"

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <limits>
#include <map>
#include <sstream>

#include "metrics/process_metrics.h"

namespace wsgate::metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Handshakes take milliseconds; WebSocket connections live from seconds to days.
const std::vector<double> kHandshakeBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                               0.25,  0.5,    1,     2.5,  5,     10};
const std::vector<double> kConnectionBuckets = {1,     10,    60,    300,   900,    1800,  3600,
                                                10800, 21600, 43200, 86400, 259200, 604800};

// HTTP requests: milliseconds for an API call, up to minutes for a long poll or a download.
const std::vector<double> kHttpRequestBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                 0.5,   1,      2.5,   5,    10,    30,   60};

// A series of family |id|, one value per label declared for it, in the declared order.
template <FamilyId id, typename... Values>
ClientMetric Series(const Values&... values) {
  static_assert(sizeof...(Values) == kFamilySpecs[id].label_count,
                "one value for each label the family declares");
  ClientMetric metric;
  size_t i = 0;
  ((metric.label.push_back({std::string(kFamilySpecs[id].labels[i++]), std::string(values)})), ...);
  return metric;
}

// One series per value of the family's index enum, labelled with the scope's |values| and then
// the index label, each counting |counters[i]|.
template <FamilyId id, size_t N, typename... Values>
void AddIndexed(std::vector<MetricFamily>& families, const std::array<Counter, N>& counters,
                const Values&... values) {
  static_assert(N == kFamilySpecs[id].index.size(), "one counter for each label value");
  for (size_t i = 0; i < kFamilySpecs[id].index.size(); ++i) {
    ClientMetric metric = Series<id>(values..., kFamilySpecs[id].index[i]);
    metric.counter.value = static_cast<double>(counters[i].Get());
    families[id].metric.push_back(std::move(metric));
  }
}

MetricFamily Family(FamilyId id) {
  static constexpr MetricType kTypes[] = {MetricType::Counter, MetricType::Gauge,
                                          MetricType::Histogram};
  MetricFamily family;
  family.name = kFamilySpecs[id].name;
  family.help = kFamilySpecs[id].help;
  family.type = kTypes[static_cast<int>(kFamilySpecs[id].type)];
  return family;
}

// Every declared family, without series, indexed by FamilyId.
std::vector<MetricFamily> EmptyFamilies() {
  std::vector<MetricFamily> families;
  families.reserve(kFamilies);
  for (size_t id = 0; id < kFamilies; ++id) families.push_back(Family(static_cast<FamilyId>(id)));
  return families;
}

// A series without labels holding |value| as its family's type wants it.
void AddValue(std::vector<MetricFamily>& families, FamilyId id, double value) {
  ClientMetric metric;
  if (kFamilySpecs[id].type == Type::kCounter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  families[id].metric.push_back(std::move(metric));
}

void AddHistogram(MetricFamily& family, const Histogram& histogram, ClientMetric metric) {
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

void AddFleet(const FleetMetrics& fleet, std::vector<MetricFamily>& families) {
  AddValue(families, kClusterRedisUp, static_cast<double>(fleet.redis_up.Get()));
  AddIndexed<kClusterRegistryWritesTotal>(families, fleet.registry_writes);
  AddValue(families, kClusterRegistryErrorsTotal, static_cast<double>(fleet.registry_errors.Get()));
  AddIndexed<kClusterForwardsTotal>(families, fleet.forwards);
  AddIndexed<kClusterPublishesTotal>(families, fleet.publishes);
  AddIndexed<kClusterUserChecksTotal>(families, fleet.user_gate);
  AddValue(families, kClusterFanoutReceivedTotal, static_cast<double>(fleet.fanout_received.Get()));
  AddHistogram(families[kClusterForwardSeconds], fleet.forward_seconds, ClientMetric{});
  AddHistogram(families[kClusterRedisCommandSeconds], fleet.command_seconds, ClientMetric{});
}

}  // namespace

FleetMetrics::FleetMetrics()
    : forward_seconds(&kHandshakeBuckets), command_seconds(&kHandshakeBuckets) {}

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
      http_request_duration(&kHttpRequestBuckets),
      migration_pause(&kHandshakeBuckets) {}

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

void Registry::Collect(std::vector<MetricFamily>* out) const {
  std::lock_guard<std::mutex> lock(mutex_);
  *out = EmptyFamilies();
  std::vector<MetricFamily>& families = *out;

  for (const auto& [key, m] : connections_) {
    const auto& [listener, pool, backend] = key;
    ClientMetric active = Series<kConnectionsActive>(listener, pool, backend);
    active.gauge.value = static_cast<double>(m->active.Get());
    families[kConnectionsActive].metric.push_back(std::move(active));
    ClientMetric total = Series<kConnectionsTotal>(listener, pool, backend);
    total.counter.value = static_cast<double>(m->total.Get());
    families[kConnectionsTotal].metric.push_back(std::move(total));
  }

  for (const auto& [listener, m] : listeners_) {
    AddIndexed<kHandshakesTotal>(families, m->handshakes, listener);
  }
  for (const auto& [listener, m] : listeners_) {
    AddIndexed<kTlsHandshakeFailuresTotal>(families, m->tls_handshake_failures, listener);
  }
  for (const auto& [listener, m] : listeners_) {
    for (size_t v = 0; v < kTlsVersions; ++v) {
      for (size_t resumed = 0; resumed < 2; ++resumed) {
        const uint64_t count = m->tls_handshakes[v][resumed].Get();
        if (count == 0) continue;  // plain listeners have none
        ClientMetric metric = Series<kTlsHandshakesTotal>(listener, kTlsVersionLabels[v],
                                                          resumed != 0 ? "true" : "false");
        metric.counter.value = static_cast<double>(count);
        families[kTlsHandshakesTotal].metric.push_back(std::move(metric));
      }
    }
  }

  for (const auto& [pool, m] : pools_) {
    if (pool.empty()) continue;  // plain HTTP requests rejected before routing: HTTP series only
    AddHistogram(families[kHandshakeDurationSeconds], m->handshake_duration,
                 Series<kHandshakeDurationSeconds>(pool));
    AddHistogram(families[kConnectionDurationSeconds], m->connection_duration,
                 Series<kConnectionDurationSeconds>(pool));
    AddIndexed<kMessagesTotal>(families, m->messages, pool);
    AddIndexed<kBytesTotal>(families, m->bytes, pool);
    AddIndexed<kInflatedBytesTotal>(families, m->inflated_bytes, pool);
    for (size_t d = 0; d < kDirections; ++d) {
      AddIndexed<kFramesTotal>(families, m->frames[d], pool, kDirectionLabels[d]);
    }
    for (size_t r = 0; r < kMigrationReasons; ++r) {
      for (size_t x = 0; x < kMigrationResults; ++x) {
        uint64_t value = m->migrations[r][x].Get();
        if (value == 0) continue;  // only pools that move sessions, and what happened
        ClientMetric metric =
            Series<kMigrationsTotal>(pool, kMigrationReasonLabels[r], kMigrationResultLabels[x]);
        metric.counter.value = static_cast<double>(value);
        families[kMigrationsTotal].metric.push_back(std::move(metric));
      }
    }
    AddHistogram(families[kMigrationPauseSeconds], m->migration_pause,
                 Series<kMigrationPauseSeconds>(pool));
    for (size_t i = 0; i < kInitiators; ++i) {
      for (size_t c = 0; c < kCloseCodeLabels.size(); ++c) {
        uint64_t value = m->closes[i][c].Get();
        if (value == 0) continue;  // keep the exposition short: only codes that happened
        ClientMetric metric = Series<kClosesTotal>(pool, kInitiatorLabels[i], kCloseCodeLabels[c]);
        metric.counter.value = static_cast<double>(value);
        families[kClosesTotal].metric.push_back(std::move(metric));
      }
    }
  }
  for (const auto& [pool, m] : pools_) {
    bool any = false;
    for (size_t slot = 0; slot < m->http_requests.size(); ++slot) {
      uint64_t value = m->http_requests[slot].Get();
      if (value == 0) continue;  // only codes that happened
      any = true;
      std::string code = slot < 500 ? std::to_string(slot + 100) : "0";
      ClientMetric metric = Series<kHttpRequestsTotal>(pool, code);
      metric.counter.value = static_cast<double>(value);
      families[kHttpRequestsTotal].metric.push_back(std::move(metric));
    }
    if (any) {
      AddHistogram(families[kHttpRequestDurationSeconds], m->http_request_duration,
                   Series<kHttpRequestDurationSeconds>(pool));
    }
  }

  // wsgate_backend_up is not counted but computed when scraped (Serialize).
  for (const auto& [key, m] : backends_) {
    AddIndexed<kBackendConnectFailuresTotal>(families, m->connect_failures, key.first, key.second);
  }

  AddValue(families, kDraining, static_cast<double>(draining_.Get()));
  AddIndexed<kConfigReloadsTotal>(families, reloads_);
  AddIndexed<kAdminRequestsRefusedTotal>(families, admin_refused_);
  AddValue(families, kRebalanceClosesTotal, static_cast<double>(rebalance_closes_.Get()));

  ClientMetric build = Series<kBuildInfo>(version_);
  build.gauge.value = 1;
  families[kBuildInfo].metric.push_back(std::move(build));
}

namespace {

using SeriesKey = std::vector<std::pair<std::string, std::string>>;

SeriesKey KeyOf(const ClientMetric& metric) {
  SeriesKey key;
  for (const auto& label : metric.label) key.emplace_back(label.name, label.value);
  return key;
}

// Adds |from|'s series to |into|'s: identical series are summed, new ones appended.
void Merge(MetricFamily& into, MetricFamily& from) {
  std::map<SeriesKey, size_t> index;
  for (size_t i = 0; i < into.metric.size(); ++i) index[KeyOf(into.metric[i])] = i;
  for (ClientMetric& metric : from.metric) {
    auto found = index.find(KeyOf(metric));
    if (found == index.end()) {
      index[KeyOf(metric)] = into.metric.size();
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

// The value of |metric|'s label |name|, or empty.
std::string_view LabelValue(const ClientMetric& metric, std::string_view name) {
  for (const auto& label : metric.label) {
    if (label.name == name) return label.value;
  }
  return {};
}

// Series of backends no longer listed (removed by a reload and drained) are left out, and
// wsgate_backend_up and the connect failures of every listed backend are written in (pool,
// backend) order, a listed backend without failures yet as zeros.
void ApplyBackends(const std::vector<BackendState>& backends, std::vector<MetricFamily>& families) {
  std::map<std::pair<std::string, std::string>, bool> up;
  // A backend removed and added again is listed twice: the configured one (listed first) wins.
  for (const BackendState& backend : backends) {
    up.emplace(std::pair(backend.pool, backend.address), backend.up);
  }
  auto listed = [&up](const ClientMetric& metric) {
    return up.contains(
        {std::string(LabelValue(metric, "pool")), std::string(LabelValue(metric, "backend"))});
  };
  for (FamilyId id : {kConnectionsActive, kConnectionsTotal}) {
    std::erase_if(families[id].metric, [&](const ClientMetric& m) { return !listed(m); });
  }

  std::map<SeriesKey, double> failures;
  for (const ClientMetric& metric : families[kBackendConnectFailuresTotal].metric) {
    failures[KeyOf(metric)] = metric.counter.value;
  }
  families[kBackendConnectFailuresTotal].metric.clear();
  for (const auto& [key, is_up] : up) {
    const auto& [pool, backend] = key;
    ClientMetric series = Series<kBackendUp>(pool, backend);
    series.gauge.value = is_up ? 1 : 0;
    families[kBackendUp].metric.push_back(std::move(series));
    for (std::string_view reason : kConnectFailureLabels) {
      ClientMetric failure = Series<kBackendConnectFailuresTotal>(pool, backend, reason);
      auto found = failures.find(KeyOf(failure));
      failure.counter.value = found != failures.end() ? found->second : 0;
      families[kBackendConnectFailuresTotal].metric.push_back(std::move(failure));
    }
  }
}

void AddConnectionsApi(const ConnectionsApiSample& api, std::vector<MetricFamily>& families) {
  for (const auto& [key, count] : api.requests) {
    ClientMetric metric =
        Series<kConnectionsApiRequestsTotal>(key.first, std::to_string(key.second));
    metric.counter.value = static_cast<double>(count);
    families[kConnectionsApiRequestsTotal].metric.push_back(std::move(metric));
  }
  AddValue(families, kConnectionsApiConnections, static_cast<double>(api.connections));
  AddValue(families, kDisconnectWebhookDeliveredTotal,
           static_cast<double>(api.disconnect_delivered));
  AddValue(families, kDisconnectWebhookRetriesTotal, static_cast<double>(api.disconnect_retried));
  AddValue(families, kDisconnectWebhookFailedTotal, static_cast<double>(api.disconnect_failed));
  AddValue(families, kDisconnectWebhookDroppedTotal, static_cast<double>(api.disconnect_dropped));
  AddValue(families, kAuthAllowedTotal, static_cast<double>(api.auth_allowed));
  AddValue(families, kAuthDeniedTotal, static_cast<double>(api.auth_denied));
  AddValue(families, kAuthFailedTotal, static_cast<double>(api.auth_failed));
  AddValue(families, kAuthCacheHitsTotal, static_cast<double>(api.auth_cache_hits));
  const uint64_t revalidations[] = {api.revalidation_allowed, api.revalidation_revoked,
                                    api.revalidation_failed};
  for (size_t i = 0; i < std::size(revalidations); ++i) {
    ClientMetric metric = Series<kAuthRevalidationsTotal>(kRevalidationLabels[i]);
    metric.counter.value = static_cast<double>(revalidations[i]);
    families[kAuthRevalidationsTotal].metric.push_back(std::move(metric));
  }
}

}  // namespace

std::string Serialize(const Scrape& scrape) {
  std::vector<MetricFamily> merged = EmptyFamilies();
  bool first = true;
  for (const Registry* registry : scrape.registries) {
    std::vector<MetricFamily> families;
    registry->Collect(&families);
    for (size_t id = 0; id < kFamilies; ++id) {
      if (!first && id == kBuildInfo) continue;  // one process, one build
      Merge(merged[id], families[id]);
    }
    first = false;
  }
  ApplyBackends(scrape.backends, merged);
  AddConnectionsApi(scrape.connections_api, merged);
  if (scrape.fleet != nullptr) AddFleet(*scrape.fleet, merged);
  for (const auto& [pool, errors] : scrape.discovery_errors) {
    ClientMetric metric = Series<kDiscoveryErrorsTotal>(pool);
    metric.counter.value = static_cast<double>(errors);
    merged[kDiscoveryErrorsTotal].metric.push_back(std::move(metric));
  }
  if (scrape.process) CollectProcessMetrics(&merged);
  // A process value that cannot be read is left out, family and all.
  for (size_t id = kProcessCpuSecondsTotal; id < kFamilies; ++id) {
    if (merged[id].metric.empty()) merged[id].name.clear();
  }
  std::erase_if(merged, [](const MetricFamily& family) { return family.name.empty(); });
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, merged);
  return out.str();
}

}  // namespace wsgate::metrics
