// Backends added, re-weighted or removed through the admin API
// (PUT/DELETE /admin/pools/{pool}/backends/{address}), as HAProxy's runtime API does: runtime
// state on top of the file and of discovery. Every new generation (discovery refresh, another
// change) keeps it; the next reload replaces it with the file's.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/validate.h"

namespace wsgate {

class RuntimeBackends {
 public:
  // Add |address| (numeric "IP:port" or "[v6]:port") to |pool| with |weight|, or give a backend
  // it already has that weight. False, with *error set, if |address| is not a numeric address.
  bool Put(const std::string& pool, const std::string& address, uint32_t weight,
           std::string* error);
  // Take |address| out of |pool|, whoever declared it (it drains like a backend a reload removed).
  void Remove(const std::string& pool, const std::string& address);
  void Clear() {
    added_.clear();
    removed_.clear();
  }
  size_t changes() const { return added_.size() + removed_.size(); }

  // |config| (the file with discovered names expanded) with these changes applied; |resolved|
  // gets the added backends' addresses.
  void ApplyTo(config::ProxyConfig& config, config::ResolvedBackends* resolved) const;

 private:
  struct Added {
    config::BackendConfig backend;
    config::ResolvedAddress sockaddr;
  };
  std::map<std::pair<std::string, std::string>, Added> added_;  // by (pool, address)
  std::set<std::pair<std::string, std::string>> removed_;
};

}  // namespace wsgate
