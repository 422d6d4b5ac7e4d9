// Server's answers to the admin API (proxy/admin.h's AdminHandler): readiness, backends,
// metrics, backend drain, and backends changed at runtime.
#include <algorithm>

#include "proxy/core/json.h"
#include "proxy/core/log.h"
#include "proxy/server.h"

namespace wsgate {
namespace {

using Clock = std::chrono::steady_clock;

const char* BackendState(const Backend& backend) {
  if (backend.removed) return "removed";
  if (backend.draining) return "draining";
  if (!backend.healthy) return "unhealthy";
  return backend.ejected ? "ejected" : "healthy";
}

std::string BackendJson(const Backend& backend) {
  return "{\"pool\":" + JsonString(backend.pool) + ",\"address\":" + JsonString(backend.address) +
         ",\"state\":\"" + BackendState(backend) +
         "\",\"weight\":" + std::to_string(backend.weight) +
         ",\"active\":" + std::to_string(backend.active) + "}";
}

}  // namespace

std::string Server::NotReadyReason(std::string_view only_pool, bool* unknown_pool) {
  *unknown_pool =
      !only_pool.empty() && std::none_of(current_->pools.begin(), current_->pools.end(),
                                         [&](const Pool& pool) { return pool.name == only_pool; });
  if (*unknown_pool) return "no pool " + std::string(only_pool);
  if (phase_ != Phase::kServing) return "draining";
  if (listeners_.empty()) return "no listener is accepting";
  if (fleet_ && current_->config.cluster.ready_requires_redis && !fleet_->redis_up()) {
    return "redis (cluster) is unreachable";
  }
  const auto& pool_configs = current_->config.pools;
  for (size_t i = 0; i < current_->pools.size(); ++i) {
    const Pool& pool = current_->pools[i];
    if (only_pool.empty() ? pool_configs[i].optional : pool.name != only_pool) continue;
    bool any = false;
    for (const BackendPtr& backend : pool.backends) {
      if (backend->accepting()) any = true;
    }
    if (!any) {
      const std::string why = discovery_ ? discovery_->EmptyReason(pool.name) : std::string();
      return "pool " + pool.name + " has no available backend" +
             (why.empty() ? "" : " (discovery: " + why + ")");
    }
  }
  return {};
}

std::vector<BackendPtr> Server::ExistingBackends() {
  std::vector<BackendPtr> backends;
  for (const Pool& pool : current_->pools) {
    backends.insert(backends.end(), pool.backends.begin(), pool.backends.end());
  }
  std::erase_if(retired_, [](const BackendPtr& backend) { return backend->active <= 0; });
  backends.insert(backends.end(), retired_.begin(), retired_.end());
  return backends;
}

std::string Server::MetricsText() {
  metrics::Scrape scrape;
  scrape.registries = {&metrics_};
  for (const auto& worker : workers_) {
    if (worker->own_metrics() != nullptr) scrape.registries.push_back(worker->own_metrics());
  }
  // Computed now, from what /readyz and the backends API read, so they never disagree.
  for (const BackendPtr& backend : ExistingBackends()) {
    scrape.backends.push_back({backend->pool, backend->address, backend->accepting()});
  }
  scrape.connections_api = connections_api_->MetricsSample();
  if (fleet_) scrape.fleet = &fleet_->metrics();
  if (discovery_) scrape.discovery_errors = discovery_->ErrorCounts();
  return metrics::Serialize(scrape);
}

std::string Server::BackendsJson() {
  std::string out = "{\"backends\":[";
  bool first = true;
  for (const BackendPtr& backend : ExistingBackends()) {
    if (!first) out.push_back(',');
    first = false;
    out += BackendJson(*backend);
  }
  out += "],\"discovery\":[" + (discovery_ ? discovery_->StateJson() : std::string()) + "]}\n";
  return out;
}

void Server::CountRefused(metrics::AdminRefusal reason) { metrics_.admin_refused(reason).Add(); }

int Server::SetBackendDraining(const std::string& pool_name, const std::string& address,
                               bool draining, std::string* body) {
  Pool* pool = current_->FindPool(pool_name);
  if (pool != nullptr) {
    for (const BackendPtr& backend : pool->backends) {
      if (backend->address != address) continue;
      if (draining && !backend->draining) {
        backend->drain_deadline = Clock::now() + current_->config.timeouts.drain;
        LOG_INFO("backend " + pool_name + "/" + address + " draining " +
                 std::to_string(backend->active) + " connections");
      } else if (!draining && backend->draining) {
        LOG_INFO("backend " + pool_name + "/" + address + " undrained");
      }
      backend->draining = draining;
      *body = BackendJson(*backend) + "\n";
      return 200;
    }
  }
  *body = "{\"error\":" + JsonString("no backend " + address + " in pool " + pool_name) + "}\n";
  return 404;
}

int Server::ChangeRuntimeBackend(const std::string& pool_name, const std::string& address,
                                 std::optional<uint32_t> weight, std::string* body) {
  auto error = [body](int status, const std::string& text) {
    *body = "{\"error\":" + JsonString(text) + "}\n";
    return status;
  };
  if (phase_ != Phase::kServing) return error(503, "draining");
  const Pool* pool = current_->FindPool(pool_name);
  if (pool == nullptr) return error(404, "no pool " + pool_name);
  auto find = [&](const Pool& in) -> BackendPtr {
    for (const BackendPtr& backend : in.backends) {
      if (backend->address == address) return backend;
    }
    return nullptr;
  };
  BackendPtr before = find(*pool);
  if (weight) {
    std::string why;
    if (!runtime_backends_.Put(pool_name, address, *weight, &why)) return error(400, why);
  } else {
    if (!before) return error(404, "no backend " + address + " in pool " + pool_name);
    runtime_backends_.Remove(pool_name, address);
  }
  if (!RebuildRuntime("admin: backend " + pool_name + "/" + address)) {
    return error(500, "the pool could not be rebuilt (see the log)");
  }
  BackendPtr after = weight ? find(*current_->FindPool(pool_name)) : before;
  if (!after) return error(500, "the backend is not in the pool after the change");
  LOG_INFO("admin: backend " + pool_name + "/" + address +
           (weight ? (before ? " weight " : " added with weight ") + std::to_string(*weight)
                   : std::string(" removed: draining ") + std::to_string(after->active) +
                         " connections"));
  *body = BackendJson(*after) + "\n";
  return weight && !before ? 201 : 200;
}

}  // namespace wsgate
