// The validation stage after loading: what the file alone cannot tell. Backend host names must
// resolve, and every certificate, key and CA file must load (a key must match its certificate).
// It runs identically on --check, at start and on reload; each error names file:line:column and
// the key, like the loader's.
#pragma once

#include <sys/socket.h>

#include <functional>
#include <map>
#include <string>

#include "config/config.h"
#include "config/config_error.h"
#include "config/result.h"

namespace wsgate::config {

struct ResolvedAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
};

// Resolve |address| (numeric or DNS name) with getaddrinfo, blocking: the first answer. The one
// resolver of backend and listen addresses. The error reads "cannot resolve HOST:PORT: REASON".
Result<ResolvedAddress> ResolveHostPort(const HostPort& address);

// The backend addresses the validation stage resolved, by address text ("host:port"). The proxy
// builds its pools from these answers (proxy/runtime.h), so a name is resolved once, not again.
using ResolvedBackends = std::map<std::string, ResolvedAddress>;

struct ValidateChecks {
  // Loads the TLS files the configuration names (config/ knows no OpenSSL: the proxy supplies
  // it). Unset: not checked.
  std::function<ConfigErrors(const ProxyConfig&)> tls_files;
  // On a reload: whether the running generation already resolved this backend (it is kept, not
  // resolved again). Unset: every backend is resolved.
  std::function<bool(const std::string& pool, const HostPort& address)> already_resolved;
};

// Every error found, in file order per kind (backends, then TLS files); empty when valid. Each
// address is resolved once however many backends name it (a name in a pool with discovery is
// left to proxy/discovery.h); with |resolved| set, the answers are
// stored there.
[[nodiscard]] ConfigErrors Validate(const ProxyConfig& config, const ValidateChecks& checks,
                                    ResolvedBackends* resolved = nullptr);

}  // namespace wsgate::config
