// One configuration generation: the validated config plus the pools and router built from it.
//
// The server holds the current generation; each session keeps the one it started under alive
// (shared_ptr), so a reload never changes a live connection's limits or routes. Backends are
// shared between generations by (pool name, address), so connection counts and drain state
// survive a reload.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/result.h"
#include "config/validate.h"
#include "proxy/balancer.h"
#include "proxy/router.h"
#include "proxy/tls/tls_context.h"

namespace wsgate {

struct Runtime {
  config::ProxyConfig config;
  std::vector<Pool> pools;
  Router router;
  // TLS contexts, shared by every worker's copy of this generation.
  std::vector<std::pair<std::string, tls::ServerContextPtr>> listener_tls;  // TLS listeners only
  std::vector<tls::ClientContextPtr> pool_tls;  // by pool index; null for a plain pool

  Pool* FindPool(const std::string& name);
  const tls::ServerContext* ListenerTls(const std::string& listener) const;
};
using RuntimePtr = std::shared_ptr<Runtime>;

// The validation stage (config/validate.h) with the proxy's TLS file check: run on --check, at
// start (|previous| null) and on reload. On a reload what |previous| already has is left as
// BuildRuntime leaves it: a kept backend is not resolved again, and a TLS listener or pool with
// bad files keeps its previous context (BuildRuntime logs why). The backend addresses it
// resolved go to |resolved| (if set), for BuildRuntime.
[[nodiscard]] config::ConfigErrors ValidateConfig(const config::ProxyConfig& config,
                                                  const Runtime* previous,
                                                  config::ResolvedBackends* resolved = nullptr);

// Build a generation from |config|, reusing |previous|'s backends where pool name and address
// match (|previous| may be null), and load TLS certificates. A new backend takes its address
// from |resolved| (ValidateConfig's answers); one not there is resolved here (blocking). Fails if
// an address cannot be resolved or a TLS context cannot be built. On a reload (|previous| set) a
// listener or pool whose TLS files are bad keeps its previous context, and the errors are logged.
// With |reuse_tls| (a change found by service discovery, not a reload) every TLS context of
// |previous| is kept as it is instead of loading the files again.
Result<RuntimePtr> BuildRuntime(config::ProxyConfig config, const Runtime* previous,
                                const config::ResolvedBackends& resolved = {},
                                bool reuse_tls = false);

// A generation for one worker thread: the same config and the same (shared) backends as
// |shared|, with its own Pool objects, balancers and router, so picking never shares balancer
// state between threads. Never blocks.
RuntimePtr BuildWorkerRuntime(const Runtime& shared);

// Backends of |previous| that |next| no longer has.
std::vector<BackendPtr> RemovedBackends(const Runtime& previous, const Runtime& next);

}  // namespace wsgate
