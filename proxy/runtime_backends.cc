#include "proxy/runtime_backends.h"

#include <algorithm>

#include "config/units.h"
#include "proxy/discovery.h"

namespace wsgate {

bool RuntimeBackends::Put(const std::string& pool, const std::string& address, uint32_t weight,
                          std::string* error) {
  std::optional<config::HostPort> parsed = config::ParseHostPort(address, false);
  Added added;
  if (!parsed || !NumericSockaddr(parsed->host, parsed->port, &added.sockaddr)) {
    *error = "address \"" + address + "\" must be an IP address with a port (e.g. 10.0.0.7:9000)";
    return false;
  }
  added.backend.address = *parsed;
  added.backend.address.text = AddressText(parsed->host, parsed->port);  // one spelling
  added.backend.weight = weight;
  removed_.erase({pool, added.backend.address.text});
  added_[{pool, added.backend.address.text}] = std::move(added);
  return true;
}

void RuntimeBackends::Remove(const std::string& pool, const std::string& address) {
  added_.erase({pool, address});
  removed_.insert({pool, address});
}

void RuntimeBackends::ApplyTo(config::ProxyConfig& config,
                              config::ResolvedBackends* resolved) const {
  for (config::PoolConfig& pool : config.pools) {
    std::vector<config::BackendConfig>& backends = pool.backends;
    std::erase_if(backends, [&](const config::BackendConfig& b) {
      return removed_.count({pool.name, b.address.text}) != 0;
    });
    for (const auto& entry : added_) {
      const std::string& address = entry.first.second;
      if (entry.first.first != pool.name) continue;
      auto same = std::find_if(backends.begin(), backends.end(),
                               [&](const auto& b) { return b.address.text == address; });
      if (same != backends.end()) {
        same->weight = entry.second.backend.weight;
        continue;
      }
      backends.push_back(entry.second.backend);
      if (resolved != nullptr) resolved->insert_or_assign(address, entry.second.sockaddr);
    }
  }
}

}  // namespace wsgate
