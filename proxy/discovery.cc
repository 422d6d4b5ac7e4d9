#include "proxy/discovery.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "config/units.h"
#include "proxy/core/event_loop.h"
#include "proxy/core/json.h"
#include "proxy/core/log.h"

namespace wsgate {
namespace {

using SystemClock = std::chrono::system_clock;

constexpr config::Duration kMinInterval = std::chrono::seconds(1);
// A server that does not answer: each query gives up after attempts × timeout.
constexpr const char* kQueryTimeout = "1.5";
constexpr const char* kQueryAttempts = "2";
// Start-up waits at most this long for every name (attempts × timeout, with room).
constexpr int kStartupDeadlineSeconds = 8;

std::string JoinAddresses(const std::vector<std::string>& addresses) {
  std::string out;
  for (const auto& a : addresses) out += (out.empty() ? "" : ", ") + a;
  return out.empty() ? "none" : out;
}

// evdns's own messages: its warnings as ours, the rest (per query, per nameserver state) at debug;
// the operator's line is discovery's own, once per change.
void EvdnsLog(int is_warning, const char* message) {
  if (is_warning) {
    LOG_WARN(std::string("discovery: evdns: ") + message);
  } else {
    LOG_DEBUG(std::string("discovery: evdns: ") + message);
  }
}

}  // namespace

std::string AddressText(const std::string& ip, uint16_t port) {
  if (ip.find(':') != std::string::npos) return "[" + ip + "]:" + std::to_string(port);
  return ip + ":" + std::to_string(port);
}

bool NumericSockaddr(const std::string& ip, uint16_t port, config::ResolvedAddress* out) {
  *out = {};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out->addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out->addr);
  if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    out->len = sizeof(sockaddr_in);
    return true;
  }
  *out = {};
  if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    out->len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// DnsResolver.

struct DnsResolver::Query {
  DnsResolver* owner = nullptr;
  std::string host;
  int pending = 0;
  std::set<std::string> addresses;
  config::Duration ttl = config::Duration::max();
  std::string error;          // the first failure that is not "no such name / no such record"
  bool no_such_name = false;  // NXDOMAIN
  std::function<void(DnsAnswer)> done;
};

std::unique_ptr<DnsResolver> DnsResolver::Create(event_base* base,
                                                 const config::ResolverConfig& config,
                                                 std::string* error) {
  evdns_set_log_fn(&EvdnsLog);
  evdns_base* dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
  if (dns == nullptr) {
    *error = "cannot create the DNS resolver";
    return nullptr;
  }
  evdns_base_set_option(dns, "timeout:", kQueryTimeout);
  evdns_base_set_option(dns, "attempts:", kQueryAttempts);
  std::unique_ptr<DnsResolver> resolver(new DnsResolver(dns));
  if (!resolver->Reconfigure(config, error)) return nullptr;
  return resolver;
}

DnsResolver::DnsResolver(evdns_base* dns) : dns_(dns) {}

DnsResolver::~DnsResolver() {
  // Callbacks of queries in flight are not run: their loop no longer runs when this goes.
  evdns_base_free(dns_, 0);
}

bool DnsResolver::Reconfigure(const config::ResolverConfig& config, std::string* error) {
  evdns_base_clear_nameservers_and_suspend(dns_);
  if (config.nameservers.empty()) {
    // The system's servers, search list and options, as getaddrinfo would use them.
    const int rc = evdns_base_resolv_conf_parse(dns_, DNS_OPTIONS_ALL, "/etc/resolv.conf");
    if (rc != 0 && rc != 6) {  // 6: no nameserver listed, evdns then asks 127.0.0.1
      *error = "cannot read /etc/resolv.conf (evdns error " + std::to_string(rc) + ")";
      evdns_base_resume(dns_);
      return false;
    }
  }
  for (const config::HostPort& nameserver : config.nameservers) {
    if (evdns_base_nameserver_ip_add(dns_, nameserver.text.c_str()) != 0) {
      *error = "cannot use nameserver " + nameserver.text;
      evdns_base_resume(dns_);
      return false;
    }
  }
  evdns_base_resume(dns_);
  return true;
}

void DnsResolver::Resolve(const std::string& host, std::function<void(DnsAnswer)> done) {
  auto owned = std::make_unique<Query>();
  Query* query = owned.get();
  query->owner = this;
  query->host = host;
  query->done = std::move(done);
  queries_.insert(std::move(owned));
  for (bool ipv6 : {false, true}) {
    ++query->pending;
    evdns_request* request =
        ipv6 ? evdns_base_resolve_ipv6(dns_, host.c_str(), 0, &DnsResolver::OnReply, query)
             : evdns_base_resolve_ipv4(dns_, host.c_str(), 0, &DnsResolver::OnReply, query);
    if (request == nullptr) {
      --query->pending;
      if (query->error.empty()) query->error = "the query could not be sent";
    }
  }
  if (query->pending == 0) Finish(query);
}

void DnsResolver::OnReply(int result, char type, int count, int ttl, void* addresses, void* arg) {
  auto* query = static_cast<Query*>(arg);
  if (result == DNS_ERR_NONE && addresses != nullptr) {
    char text[INET6_ADDRSTRLEN];
    const bool v4 = type == DNS_IPv4_A;
    const auto* bytes = static_cast<const unsigned char*>(addresses);
    const size_t size = v4 ? sizeof(in_addr) : sizeof(in6_addr);
    for (int i = 0; i < count; ++i) {
      const void* address = bytes + static_cast<size_t>(i) * size;
      if (inet_ntop(v4 ? AF_INET : AF_INET6, address, text, sizeof(text))) {
        query->addresses.insert(text);
      }
    }
    if (count > 0) query->ttl = std::min<config::Duration>(query->ttl, std::chrono::seconds(ttl));
  } else if (result == DNS_ERR_NOTEXIST) {
    query->no_such_name = true;
  } else if (result != DNS_ERR_NONE && result != DNS_ERR_NODATA && query->error.empty()) {
    query->error = evdns_err_to_string(result);
  }
  if (--query->pending == 0) query->owner->Finish(query);
}

void DnsResolver::Finish(Query* query) {
  auto owned = std::find_if(queries_.begin(), queries_.end(),
                            [query](const auto& q) { return q.get() == query; });
  std::unique_ptr<Query> mine = std::move(queries_.extract(owned).value());
  DnsAnswer answer;
  answer.addresses.assign(mine->addresses.begin(), mine->addresses.end());
  if (answer.addresses.empty()) {
    answer.error = !mine->error.empty() ? mine->error
                   : mine->no_such_name ? "no such name (NXDOMAIN)"
                                        : "no A or AAAA record";
  } else {
    answer.ttl = mine->ttl;
  }
  mine->done(std::move(answer));
}

// ---------------------------------------------------------------------------------------------
// Expansion into backends.

bool IsDiscoveredEntry(const config::PoolConfig& pool, const config::BackendConfig& backend) {
  return pool.discovery.enabled && !config::IsIpLiteral(backend.address.host);
}

config::ProxyConfig ExpandDiscovered(const config::ProxyConfig& source,
                                     const DiscoveredAddresses& addresses,
                                     config::ResolvedBackends* resolved) {
  config::ProxyConfig out = source;
  for (config::PoolConfig& pool : out.pools) {
    if (!pool.discovery.enabled) continue;
    const auto known = addresses.find(pool.name);
    std::vector<config::BackendConfig> backends;
    std::set<std::string> seen;
    for (const config::BackendConfig& entry : pool.backends) {
      if (!IsDiscoveredEntry(pool, entry)) {
        if (seen.insert(entry.address.text).second) backends.push_back(entry);
        continue;
      }
      if (known == addresses.end()) continue;
      const auto ips = known->second.find(entry.address.text);
      if (ips == known->second.end()) continue;
      for (const std::string& ip : ips->second) {
        config::ResolvedAddress sockaddr;
        if (!NumericSockaddr(ip, entry.address.port, &sockaddr)) continue;
        config::BackendConfig backend = entry;
        backend.address.host = ip;
        backend.address.text = AddressText(ip, entry.address.port);
        if (!entry.id.empty()) backend.id = entry.id + "/" + backend.address.text;
        if (!seen.insert(backend.address.text).second) continue;
        if (resolved != nullptr) resolved->insert_or_assign(backend.address.text, sockaddr);
        backends.push_back(std::move(backend));
      }
    }
    pool.backends = std::move(backends);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Start-up.

StartupResolution ResolveAtStart(const config::ProxyConfig& config) {
  StartupResolution out;
  struct Pending {
    const config::PoolConfig* pool;
    const config::BackendConfig* entry;
  };
  std::vector<Pending> names;
  for (const config::PoolConfig& pool : config.pools) {
    for (const config::BackendConfig& entry : pool.backends) {
      if (IsDiscoveredEntry(pool, entry)) names.push_back({&pool, &entry});
    }
  }
  if (names.empty()) return out;
  std::unique_ptr<event_base, decltype(&event_base_free)> base(event_base_new(), &event_base_free);
  std::string error;
  std::unique_ptr<DnsResolver> resolver =
      base ? DnsResolver::Create(base.get(), config.resolver, &error) : nullptr;
  if (!resolver) {
    config::ConfigError failure;
    failure.file = config.source_path;
    failure.key_path = "resolver";
    failure.message = error.empty() ? "cannot create an event loop" : error;
    out.errors.push_back(std::move(failure));
    return out;
  }
  std::vector<DnsAnswer> answers(names.size());
  size_t left = names.size();
  for (size_t i = 0; i < names.size(); ++i) {
    resolver->Resolve(names[i].entry->address.host, [&, i](DnsAnswer answer) {
      answers[i] = std::move(answer);
      if (--left == 0) event_base_loopexit(base.get(), nullptr);
    });
  }
  if (left > 0) {
    timeval deadline{kStartupDeadlineSeconds, 0};
    event_base_loopexit(base.get(), &deadline);
    event_base_dispatch(base.get());
  }
  for (size_t i = 0; i < names.size(); ++i) {
    const config::PoolConfig& pool = *names[i].pool;
    const config::BackendConfig& entry = *names[i].entry;
    DnsAnswer& answer = answers[i];
    if (answer.error.empty() && answer.addresses.empty()) answer.error = "no answer in time";
    if (answer.error.empty()) {
      out.addresses[pool.name][entry.address.text] = answer.addresses;
      continue;
    }
    config::ConfigError failure = entry.origin;
    failure.message = "cannot resolve " + entry.address.host + ": " + answer.error;
    if (pool.discovery.require_at_start) {
      out.errors.push_back(std::move(failure));
    } else {
      failure.message += " (pool " + pool.name + " starts without it: require_at_start is false)";
      out.warnings.push_back(std::move(failure));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Discovery on the main loop.

struct Discovery::PoolState {
  Discovery* owner = nullptr;
  std::string pool;
  config::DiscoveryConfig settings;
  std::vector<config::HostPort> names;  // the entries discovery resolves, in file order
  std::map<std::string, std::vector<std::string>> addresses;  // last known, by entry text
  std::map<std::string, std::string> failures;  // this round's failures, by entry text
  std::string last_error;                       // "" = the last round had no failure
  SystemClock::time_point last_success{};
  SystemClock::time_point last_error_at{};
  uint64_t errors = 0;
  size_t waiting = 0;  // answers of this round still to come
  uint64_t round = 0;
  config::Duration next_interval{0};
  std::map<std::string, DnsAnswer> answers;
  EventPtr timer;
};

Discovery::Discovery(event_base* base, std::unique_ptr<DnsResolver> resolver,
                     std::function<void()> on_change)
    : base_(base), resolver_(std::move(resolver)), on_change_(std::move(on_change)) {}

Discovery::~Discovery() = default;

void Discovery::Configure(const config::ProxyConfig& config, const DiscoveredAddresses& seed) {
  std::map<std::string, std::shared_ptr<PoolState>> next;
  for (const config::PoolConfig& pool : config.pools) {
    if (!pool.discovery.enabled) continue;
    std::shared_ptr<PoolState> state;
    if (auto kept = pools_.find(pool.name); kept != pools_.end()) state = kept->second;
    if (!state) {
      state = std::make_shared<PoolState>();
      state->owner = this;
      state->pool = pool.name;
      state->timer.reset(evtimer_new(base_, &Discovery::OnTimer, state.get()));
    }
    state->settings = pool.discovery;
    state->names.clear();
    std::map<std::string, std::vector<std::string>> addresses;
    for (const config::BackendConfig& entry : pool.backends) {
      if (!IsDiscoveredEntry(pool, entry)) continue;
      state->names.push_back(entry.address);
      if (auto known = state->addresses.find(entry.address.text); known != state->addresses.end()) {
        addresses[entry.address.text] = known->second;
      } else if (auto from_seed = seed.find(pool.name); from_seed != seed.end()) {
        if (auto found = from_seed->second.find(entry.address.text);
            found != from_seed->second.end()) {
          addresses[entry.address.text] = found->second;
          state->last_success = SystemClock::now();
        }
      }
    }
    state->addresses = std::move(addresses);
    next[pool.name] = state;
  }
  pools_ = std::move(next);  // a forgotten pool's round in flight finds its state gone
  // A round in flight is superseded (its answers are for the previous names).
  for (auto& [name, state] : pools_) StartRound(*state);
}

void Discovery::StartRound(PoolState& state) {
  evtimer_del(state.timer.get());
  ++state.round;
  state.answers.clear();
  state.waiting = state.names.size();
  if (state.waiting == 0) return;
  std::weak_ptr<PoolState> weak = pools_.at(state.pool);
  const uint64_t round = state.round;
  for (const config::HostPort& name : state.names) {
    resolver_->Resolve(name.host, [weak, round, text = name.text](DnsAnswer answer) {
      std::shared_ptr<PoolState> live = weak.lock();
      if (!live || live->round != round) return;  // forgotten by a reload, or superseded
      live->answers[text] = std::move(answer);
      if (--live->waiting == 0) live->owner->FinishRound(*live);
    });
  }
}

void Discovery::FinishRound(PoolState& state) {
  bool changed = false;
  std::string errors;  // "name: why; ..." of this round
  config::Duration next = state.settings.interval;
  for (const config::HostPort& name : state.names) {
    const DnsAnswer& answer = state.answers[name.text];
    if (!answer.error.empty()) {
      ++state.errors;
      errors += (errors.empty() ? "" : "; ") + name.host + ": " + answer.error;
      continue;  // a blip never empties a pool: the last known set stays
    }
    next = std::min(next, answer.ttl);
    std::vector<std::string>& known = state.addresses[name.text];
    if (known != answer.addresses) {
      LOG_INFO("discovery: pool " + state.pool + ": " + name.text + " now resolves to " +
               JoinAddresses(answer.addresses) + " (was " + JoinAddresses(known) + ")");
      known = answer.addresses;
      changed = true;
    }
  }
  const auto now = SystemClock::now();
  if (errors.empty()) {
    state.last_success = now;
    if (!state.last_error.empty()) LOG_INFO("discovery: pool " + state.pool + " resolves again");
  } else {
    state.last_error_at = now;
    // Logged once per change, not every interval.
    if (errors != state.last_error) {
      LOG_WARN("discovery: pool " + state.pool + ": " + errors + "; keeping the last known " +
               "addresses");
    }
  }
  state.last_error = errors;
  Arm(state, std::max(next, kMinInterval));
  if (changed) on_change_();
}

void Discovery::Arm(PoolState& state, config::Duration after) {
  state.next_interval = after;
  timeval tv = ToTimeval(after);
  evtimer_add(state.timer.get(), &tv);
}

void Discovery::OnTimer(evutil_socket_t, short, void* ctx) {
  auto* state = static_cast<PoolState*>(ctx);
  state->owner->StartRound(*state);
}

DiscoveredAddresses Discovery::Addresses() const {
  DiscoveredAddresses out;
  for (const auto& [name, state] : pools_) out[name] = state->addresses;
  return out;
}

std::map<std::string, uint64_t> Discovery::ErrorCounts() const {
  std::map<std::string, uint64_t> out;
  for (const auto& [name, state] : pools_) out[name] = state->errors;
  return out;
}

std::string Discovery::EmptyReason(const std::string& pool) const {
  auto found = pools_.find(pool);
  if (found == pools_.end()) return {};
  for (const auto& [text, addresses] : found->second->addresses) {
    if (!addresses.empty()) return {};
  }
  return found->second->last_error.empty() ? "no address resolved yet"
                                           : "no address resolved: " + found->second->last_error;
}

std::string Discovery::StateJson() const {
  auto seconds = [](SystemClock::time_point t) {
    if (t == SystemClock::time_point{}) return std::string("null");
    return std::to_string(
        std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
  };
  std::string out;
  for (const auto& [name, state] : pools_) {
    if (!out.empty()) out.push_back(',');
    out += "{\"pool\":" + JsonString(name) + ",\"names\":[";
    bool first = true;
    for (const config::HostPort& entry : state->names) {
      if (!first) out.push_back(',');
      first = false;
      out += "{\"name\":" + JsonString(entry.text) + ",\"addresses\":[";
      bool first_address = true;
      if (auto known = state->addresses.find(entry.text); known != state->addresses.end()) {
        for (const std::string& address : known->second) {
          if (!first_address) out.push_back(',');
          first_address = false;
          out += JsonString(address);
        }
      }
      out += "]}";
    }
    out += "],\"interval_ms\":" + std::to_string(state->next_interval.count()) +
           ",\"last_success\":" + seconds(state->last_success) + ",\"last_error\":" +
           (state->last_error.empty() ? "null" : JsonString(state->last_error)) +
           ",\"last_error_at\":" + seconds(state->last_error_at) +
           ",\"errors\":" + std::to_string(state->errors) + "}";
  }
  return out;
}

}  // namespace wsgate
