#include "proxy/runtime.h"

#include "config/validate.h"
#include "proxy/core/log.h"
#include "proxy/upstream.h"

namespace wsgate {
namespace {

std::vector<std::string> PoolNames(const config::ProxyConfig& config) {
  std::vector<std::string> names;
  for (const auto& pool : config.pools) names.push_back(pool.name);
  return names;
}

BackendPtr FindBackend(const Runtime* runtime, const std::string& pool,
                       const std::string& address) {
  if (runtime == nullptr) return nullptr;
  for (const auto& p : runtime->pools) {
    if (p.name != pool) continue;
    for (const auto& backend : p.backends) {
      if (backend->address == address) return backend;
    }
  }
  return nullptr;
}

std::string JoinErrors(const config::ConfigErrors& errors) {
  std::string out;
  for (const auto& e : errors) out += (out.empty() ? "" : "; ") + e.Format();
  return out;
}

// Builds one context; on failure falls back to |kept| (the previous generation's) with the errors
// logged, or fails with |error| when there is none.
template <typename Context, typename Settings>
bool BuildOrKeep(const Settings& settings, std::shared_ptr<Context> kept, const std::string& what,
                 std::shared_ptr<Context>* out, std::string* error) {
  config::ConfigErrors errors;
  *out = Context::Build(settings, &errors);
  if (*out) return true;
  if (!kept) {
    *error = JoinErrors(errors);
    return false;
  }
  for (const auto& e : errors) LOG_ERROR("reload: " + e.Format());
  LOG_ERROR("reload: " + what + " keeps its previous TLS certificates and settings");
  *out = std::move(kept);
  return true;
}

bool BuildTls(const config::ProxyConfig& config, const Runtime* previous, bool reuse, Runtime* out,
              std::string* error) {
  if (reuse && previous != nullptr) {
    out->listener_tls = previous->listener_tls;
    for (const auto& pool : config.pools) {
      tls::ClientContextPtr kept;
      for (size_t i = 0; i < previous->config.pools.size() && i < previous->pool_tls.size(); ++i) {
        if (previous->config.pools[i].name == pool.name) kept = previous->pool_tls[i];
      }
      out->pool_tls.push_back(std::move(kept));
    }
    return true;
  }
  for (const auto& listener : config.listeners) {
    if (!listener.tls.enabled) continue;
    tls::ServerContextPtr kept;
    if (previous != nullptr) {
      for (const auto& [name, context] : previous->listener_tls) {
        if (name == listener.name) kept = context;
      }
    }
    tls::ServerContextPtr built;
    if (!BuildOrKeep(listener.tls, kept, "listener " + listener.name, &built, error)) return false;
    out->listener_tls.emplace_back(listener.name, std::move(built));
  }
  for (const auto& pool : config.pools) {
    tls::ClientContextPtr kept;
    if (previous != nullptr) {
      for (size_t i = 0; i < previous->config.pools.size() && i < previous->pool_tls.size(); ++i) {
        if (previous->config.pools[i].name == pool.name) kept = previous->pool_tls[i];
      }
    }
    tls::ClientContextPtr built;
    if (pool.tls.enabled && !BuildOrKeep(pool.tls, kept, "pool " + pool.name, &built, error)) {
      return false;
    }
    out->pool_tls.push_back(std::move(built));
  }
  return true;
}

}  // namespace

const tls::ServerContext* Runtime::ListenerTls(const std::string& listener) const {
  for (const auto& [name, context] : listener_tls) {
    if (name == listener) return context.get();
  }
  return nullptr;
}

Pool* Runtime::FindPool(const std::string& name) {
  for (auto& pool : pools) {
    if (pool.name == name) return &pool;
  }
  return nullptr;
}

config::ConfigErrors ValidateConfig(const config::ProxyConfig& config, const Runtime* previous,
                                    config::ResolvedBackends* resolved) {
  config::ValidateChecks checks;
  checks.tls_files = [previous](const config::ProxyConfig& full) {
    if (previous == nullptr) return tls::CheckFiles(full);
    config::ProxyConfig fresh_tls = full;  // only what has no previous context to keep
    for (auto& listener : fresh_tls.listeners) {
      if (previous->ListenerTls(listener.name) != nullptr) listener.tls.enabled = false;
    }
    for (auto& pool : fresh_tls.pools) {
      for (size_t i = 0; i < previous->config.pools.size() && i < previous->pool_tls.size(); ++i) {
        if (previous->config.pools[i].name == pool.name && previous->pool_tls[i]) {
          pool.tls.enabled = false;
        }
      }
    }
    return tls::CheckFiles(fresh_tls);
  };
  if (previous != nullptr) {
    checks.already_resolved = [previous](const std::string& pool, const config::HostPort& address) {
      const BackendPtr kept = FindBackend(previous, pool, address.text);
      return kept != nullptr && !kept->removed;
    };
  }
  return config::Validate(config, checks, resolved);
}

Result<RuntimePtr> BuildRuntime(config::ProxyConfig config, const Runtime* previous,
                                const config::ResolvedBackends& resolved, bool reuse_tls) {
  std::string error;
  std::vector<Pool> pools;
  for (const auto& pool_config : config.pools) {
    Pool pool;
    pool.name = pool_config.name;
    pool.balancer = MakeBalancer(pool_config);
    for (const auto& backend_config : pool_config.backends) {
      BackendPtr backend = FindBackend(previous, pool.name, backend_config.address.text);
      std::string id = backend_config.id.empty() ? backend_config.address.text : backend_config.id;
      // A backend kept from the previous generation is shared with every worker thread: its
      // address (and so its resolved sockaddr) never changes. With one worker everything runs on
      // one thread and a changed id is updated in place; with several, a changed id makes a new
      // backend (the old one drains as removed), so no thread reads a string being rewritten.
      bool multi_threaded = config.workers != 1;
      if (backend != nullptr && !backend->removed && backend->id != id && !multi_threaded) {
        backend->id = id;
      }
      if (backend == nullptr || backend->removed || backend->id != id) {
        backend = std::make_shared<Backend>();
        backend->pool = pool.name;
        backend->address = backend_config.address.text;
        backend->id = std::move(id);
        // Validation's answer, so the name is not resolved twice. Resolved here only without
        // one: a caller that did not validate, or a kept backend remade for a changed id.
        if (auto known = resolved.find(backend_config.address.text); known != resolved.end()) {
          backend->sockaddr = known->second.addr;
          backend->sockaddr_len = known->second.len;
        } else if (!ResolveAddress(backend_config.address, &backend->sockaddr,
                                   &backend->sockaddr_len, &error)) {
          return Fail("pool " + pool.name + ": " + error);
        }
      }
      backend->weight = backend_config.weight;
      pool.backends.push_back(std::move(backend));
    }
    pools.push_back(std::move(pool));
  }
  Router router(config.routes, PoolNames(config), &config.paths);
  auto runtime = std::make_shared<Runtime>(
      Runtime{std::move(config), std::move(pools), std::move(router), {}, {}});
  if (!BuildTls(runtime->config, previous, reuse_tls, runtime.get(), &error)) {
    return Fail(std::move(error));
  }
  return runtime;
}

RuntimePtr BuildWorkerRuntime(const Runtime& shared) {
  std::vector<Pool> pools;
  for (size_t i = 0; i < shared.pools.size(); ++i) {
    Pool pool;
    pool.name = shared.pools[i].name;
    pool.backends = shared.pools[i].backends;
    const config::PoolConfig* pool_config = shared.config.FindPool(pool.name);
    pool.balancer = pool_config != nullptr ? MakeBalancer(*pool_config)
                                           : MakeBalancer(config::Balance::kLeastConn);
    pools.push_back(std::move(pool));
  }
  config::ProxyConfig config = shared.config;
  Router router(config.routes, PoolNames(config), &config.paths);
  auto runtime = std::make_shared<Runtime>(
      Runtime{std::move(config), std::move(pools), std::move(router), {}, {}});
  runtime->listener_tls = shared.listener_tls;
  runtime->pool_tls = shared.pool_tls;
  return runtime;
}

std::vector<BackendPtr> RemovedBackends(const Runtime& previous, const Runtime& next) {
  std::vector<BackendPtr> removed;
  for (const auto& pool : previous.pools) {
    for (const auto& backend : pool.backends) {
      if (FindBackend(&next, pool.name, backend->address) != backend) removed.push_back(backend);
    }
  }
  return removed;
}

}  // namespace wsgate
