#include "config/validate.h"

#include <netdb.h>

#include <cstring>

namespace wsgate::config {

Result<ResolvedAddress> ResolveHostPort(const HostPort& address) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  const std::string port = std::to_string(address.port);
  const int rc = getaddrinfo(address.host.c_str(), port.c_str(), &hints, &result);
  if (rc != 0 || result == nullptr) {
    return Fail("cannot resolve " + address.text + ": " + gai_strerror(rc));
  }
  ResolvedAddress resolved;
  std::memcpy(&resolved.addr, result->ai_addr, result->ai_addrlen);
  resolved.len = static_cast<socklen_t>(result->ai_addrlen);
  freeaddrinfo(result);
  return resolved;
}

ConfigErrors Validate(const ProxyConfig& config, const ValidateChecks& checks) {
  ConfigErrors errors;
  // Resolved the way the proxy resolves them when it builds its pools (proxy/runtime.cc), so a
  // name that passes here does not fail there. Service discovery (issue 19, async evdns) hooks in
  // here: a name it owns is checked for syntax only.
  for (const PoolConfig& pool : config.pools) {
    for (const BackendConfig& backend : pool.backends) {
      if (checks.already_resolved && checks.already_resolved(pool.name, backend.address)) continue;
      Result<ResolvedAddress> resolved = ResolveHostPort(backend.address);
      if (resolved) continue;
      ConfigError error = backend.origin;
      error.message = std::move(resolved).error();
      errors.push_back(std::move(error));
    }
  }
  if (checks.tls_files) {
    for (ConfigError& error : checks.tls_files(config)) errors.push_back(std::move(error));
  }
  return errors;
}

}  // namespace wsgate::config
