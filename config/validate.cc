#include "config/validate.h"

#include <netdb.h>

#include <cstring>
#include <map>

#include "config/units.h"

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

ConfigErrors Validate(const ProxyConfig& config, const ValidateChecks& checks,
                      ResolvedBackends* resolved) {
  ConfigErrors errors;
  // The proxy builds its pools from these answers (proxy/runtime.cc). A name in a pool with
  // discovery is resolved by service discovery (proxy/discovery.h, evdns), not here.
  std::map<std::string, Result<ResolvedAddress>> answers;  // by address text
  for (const PoolConfig& pool : config.pools) {
    for (const BackendConfig& backend : pool.backends) {
      if (pool.discovery.enabled && !IsIpLiteral(backend.address.host)) continue;
      if (checks.already_resolved && checks.already_resolved(pool.name, backend.address)) continue;
      auto answer = answers.find(backend.address.text);
      if (answer == answers.end()) {
        answer = answers.emplace(backend.address.text, ResolveHostPort(backend.address)).first;
      }
      if (answer->second) {
        if (resolved != nullptr) resolved->insert_or_assign(answer->first, answer->second.value());
        continue;
      }
      ConfigError error = backend.origin;
      error.message = answer->second.error();
      errors.push_back(std::move(error));
    }
  }
  if (checks.tls_files) {
    for (ConfigError& error : checks.tls_files(config)) errors.push_back(std::move(error));
  }
  return errors;
}

}  // namespace wsgate::config
