// Service discovery: backend addresses that are DNS names, in pools with `discovery:`, resolved
// asynchronously on the main event loop with libevent's evdns. Every A and AAAA address becomes a
// backend of the pool (the entry's port and weight). The server turns a changed address set into
// the next Runtime generation exactly as a reload does (server.cc), so vanished addresses drain
// like backends removed from the file. A failed or empty answer keeps the last known set.
#pragma once

#include <event2/event.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/validate.h"
#include "proxy/core/libevent_ptr.h"

struct evdns_base;

namespace wsgate {

// One name's answer: every A and AAAA address (numeric text, sorted, unique), or why none.
struct DnsAnswer {
  std::vector<std::string> addresses;
  config::Duration ttl{0};  // the smallest TTL of the records
  std::string error;        // set = the lookup failed or found no address
};

// evdns on one event loop, pointed at resolver.nameservers (or the system's resolv.conf).
class DnsResolver {
 public:
  static std::unique_ptr<DnsResolver> Create(event_base* base, const config::ResolverConfig& config,
                                             std::string* error);
  ~DnsResolver();
  DnsResolver(const DnsResolver&) = delete;
  DnsResolver& operator=(const DnsResolver&) = delete;

  // Point at other nameservers (a reload); queries in flight finish on the old ones.
  bool Reconfigure(const config::ResolverConfig& config, std::string* error);
  // A and AAAA of |host|; |done| runs once, on the loop, with both answers combined.
  void Resolve(const std::string& host, std::function<void(DnsAnswer)> done);

 private:
  struct Query;
  explicit DnsResolver(evdns_base* dns);
  static void OnReply(int result, char type, int count, int ttl, void* addresses, void* arg);
  void Finish(Query* query);

  evdns_base* dns_;
  std::set<std::unique_ptr<Query>> queries_;  // in flight; freed when both answers are in
};

// Last known addresses: pool name → entry address text ("chat.svc:9000") → numeric addresses.
using DiscoveredAddresses = std::map<std::string, std::map<std::string, std::vector<std::string>>>;

// "IP:port" or "[v6]:port", as the loader spells a HostPort.
std::string AddressText(const std::string& ip, uint16_t port);
// |ip| (a numeric IPv4 or IPv6 address) and |port| as a sockaddr; false if |ip| is not numeric.
bool NumericSockaddr(const std::string& ip, uint16_t port, config::ResolvedAddress* out);

// Whether |backend| of |pool| is a name discovery resolves (not an IP address).
bool IsDiscoveredEntry(const config::PoolConfig& pool, const config::BackendConfig& backend);

// |source| with each discovered entry replaced by one backend per address known for it (none
// yet: no backend), with the entry's port, weight and origin; an entry id becomes "ID/ADDRESS".
// An address already in the pool is not added twice. The new addresses' sockaddrs go to
// |resolved| (they are numeric: nothing blocks).
config::ProxyConfig ExpandDiscovered(const config::ProxyConfig& source,
                                     const DiscoveredAddresses& addresses,
                                     config::ResolvedBackends* resolved);

// Start-up and --check: every discovered name resolved now, on a loop of its own (evdns, up to a
// few seconds for a server that does not answer). A name that does not resolve is an error at
// its entry's file:line:column when its pool has require_at_start, else a warning (the pool starts
// without it).
struct StartupResolution {
  DiscoveredAddresses addresses;
  config::ConfigErrors errors;
  config::ConfigErrors warnings;
};
StartupResolution ResolveAtStart(const config::ProxyConfig& config);

// Re-resolves the discovered names of each pool every discovery.interval (shorter when a
// record's TTL is, never below 1s) on the main loop, and calls |on_change| when a pool's address
// set changed.
class Discovery {
 public:
  Discovery(event_base* base, std::unique_ptr<DnsResolver> resolver,
            std::function<void()> on_change);
  ~Discovery();

  // Start, or follow a reload: pools and names no longer configured are forgotten; a name still
  // configured keeps its addresses (|seed| gives them at start-up). Every pool is resolved again
  // at once.
  void Configure(const config::ProxyConfig& config, const DiscoveredAddresses& seed);
  bool Reconfigure(const config::ResolverConfig& config, std::string* error) {
    return resolver_->Reconfigure(config, error);
  }

  DiscoveredAddresses Addresses() const;
  // wsgate_discovery_errors_total by pool.
  std::map<std::string, uint64_t> ErrorCounts() const;
  // One JSON object per discovery pool, for GET /admin/backends.
  std::string StateJson() const;
  // Why |pool| has no address yet ("" when it has one, or has no discovery).
  std::string EmptyReason(const std::string& pool) const;

 private:
  struct PoolState;
  void StartRound(PoolState& state);
  void FinishRound(PoolState& state);
  void Arm(PoolState& state, config::Duration after);
  static void OnTimer(evutil_socket_t, short, void* ctx);

  event_base* base_;
  std::unique_ptr<DnsResolver> resolver_;
  std::function<void()> on_change_;
  std::map<std::string, std::shared_ptr<PoolState>> pools_;
};

}  // namespace wsgate
