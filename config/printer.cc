// Adding a config key: one line in Root() or Pool() below, next to its section's other keys,
// using the helper for its type (Int, Size, Duration, Number, Bool, NameOf, or a plain string).
// config_printer_test round-trips every example; test_docs.py then wants the key in the
// configuration.md example too.
#include "config/printer.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <string_view>
#include <utility>

#include "config/units.h"

namespace wsgate::config {
namespace {

// Shortest text that parses back to the same double (1.25, not 1.2500000000000000).
std::string FormatNumber(double value) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  return ec == std::errc() ? std::string(buf, end) : "0";
}

// The loader's spelling of each enum value.
template <typename Enum, size_t N>
const char* NameOf(Enum value, const std::pair<Enum, const char*> (&names)[N]) {
  for (const auto& [candidate, name] : names) {
    if (candidate == value) return name;
  }
  return names[0].second;
}

constexpr std::pair<Balance, const char*> kBalanceNames[] = {{Balance::kLeastConn, "least_conn"},
                                                             {Balance::kRoundRobin, "round_robin"},
                                                             {Balance::kRandomTwo, "random_two"},
                                                             {Balance::kSticky, "sticky"}};
constexpr std::pair<StickyConfig::Fallback, const char*> kFallbackNames[] = {
    {StickyConfig::Fallback::kLeastConn, "least_conn"},
    {StickyConfig::Fallback::kRoundRobin, "round_robin"},
    {StickyConfig::Fallback::kReject, "reject"}};
constexpr std::pair<HealthCheckConfig::Type, const char*> kCheckTypeNames[] = {
    {HealthCheckConfig::Type::kTcp, "tcp"},
    {HealthCheckConfig::Type::kHttp, "http"},
    {HealthCheckConfig::Type::kWebSocket, "websocket"}};
constexpr std::pair<LimitsConfig::RateAction, const char*> kRateActionNames[] = {
    {LimitsConfig::RateAction::kClose, "close"}, {LimitsConfig::RateAction::kThrottle, "throttle"}};
constexpr std::pair<PathsConfig::EscapedSlashes, const char*> kEscapedSlashesNames[] = {
    {PathsConfig::EscapedSlashes::kReject, "reject"}, {PathsConfig::EscapedSlashes::kKeep, "keep"}};
constexpr std::pair<LimitsConfig::Compression, const char*> kCompressionNames[] = {
    {LimitsConfig::Compression::kInspect, "inspect"},
    {LimitsConfig::Compression::kStrip, "strip"},
    {LimitsConfig::Compression::kPassthrough, "passthrough"}};
constexpr std::pair<LogConfig::Format, const char*> kLogFormatNames[] = {
    {LogConfig::Format::kText, "text"}, {LogConfig::Format::kJson, "json"}};

std::string StickyKey(const StickyConfig& s) {
  using Source = StickyConfig::KeySource;
  switch (s.source) {
    case Source::kCookie:
      return "cookie:" + s.key_name;
    case Source::kHeader:
      return "header:" + s.key_name;
    case Source::kQuery:
      return "query:" + s.key_name;
    case Source::kClientIp:
      return "client_ip";
    case Source::kPath:
      return "path";
  }
  return "client_ip";
}

// Plain YAML scalars: the loader reads numbers and booleans only from unquoted scalars.
YAML::Node Duration(config::Duration d) { return YAML::Node(FormatDuration(d)); }
YAML::Node Size(uint64_t bytes) { return YAML::Node(FormatSize(bytes)); }
YAML::Node Number(double v) { return YAML::Node(FormatNumber(v)); }
YAML::Node Bool(bool v) { return YAML::Node(v ? "true" : "false"); }
YAML::Node Int(uint64_t v) { return YAML::Node(std::to_string(v)); }

YAML::Node Strings(const std::vector<std::string>& items) {
  YAML::Node seq(YAML::NodeType::Sequence);
  seq.SetStyle(YAML::EmitterStyle::Flow);  // "[]" and "[a, b]" on the key's line
  for (const auto& item : items) seq.push_back(item);
  return seq;
}

YAML::Node Pool(const PoolConfig& p) {
  YAML::Node n;
  n["name"] = p.name;
  n["balance"] = NameOf(p.balance, kBalanceNames);
  // Settings of a mode that is not selected are errors, so they are printed only with it.
  if (p.balance == Balance::kSticky) {
    YAML::Node s = n["sticky"];
    s["key"] = StickyKey(p.sticky);
    s["fallback"] = NameOf(p.sticky.fallback, kFallbackNames);
    s["load_factor"] = Number(p.sticky.load_factor);
    s["insert_cookie"] = p.sticky.insert_cookie;
  }
  if (p.health_check.enabled) {
    const HealthCheckConfig& c = p.health_check;
    YAML::Node h = n["health_check"];
    h["interval"] = Duration(c.interval);
    h["timeout"] = Duration(c.timeout);
    h["type"] = NameOf(c.type, kCheckTypeNames);
    if (c.type != HealthCheckConfig::Type::kTcp) h["path"] = c.path;
    h["healthy_threshold"] = Int(c.healthy_threshold);
    h["unhealthy_threshold"] = Int(c.unhealthy_threshold);
  }
  YAML::Node o = n["outlier"];
  o["consecutive_failures"] = Int(p.outlier.consecutive_failures);
  o["ejection_time"] = Duration(p.outlier.ejection_time);
  YAML::Node r = n["rebalance"];
  r["enabled"] = Bool(p.rebalance.enabled);
  r["tolerance"] = Number(p.rebalance.tolerance);
  r["rate"] = std::to_string(static_cast<uint64_t>(p.rebalance.rate)) + "/s";
  n["close_on_unhealthy"] = Bool(p.close_on_unhealthy);
  n["optional"] = Bool(p.optional);
  n["migrate"] = Bool(p.migrate);
  n["http"]["max_idle_connections"] = Int(p.http.max_idle_connections);
  if (p.discovery.enabled) {  // the section's presence is what enables it
    YAML::Node d = n["discovery"];
    d["interval"] = Duration(p.discovery.interval);
    d["require_at_start"] = Bool(p.discovery.require_at_start);
  }
  if (!(p.tls == PoolTlsConfig{})) {
    YAML::Node tls = n["tls"];
    tls["enabled"] = Bool(p.tls.enabled);
    tls["ca"] = p.tls.ca.path;
    tls["verify"] = Bool(p.tls.verify);
    tls["server_name"] = p.tls.server_name;
    tls["cert"] = p.tls.cert.path;
    tls["key"] = p.tls.key.path;
  }
  YAML::Node backends(YAML::NodeType::Sequence);
  for (const BackendConfig& b : p.backends) {
    YAML::Node bn;
    bn["address"] = b.address.text;
    bn["weight"] = Int(b.weight);
    if (!b.id.empty()) bn["id"] = b.id;  // absent: the address is the id
    backends.push_back(bn);
  }
  n["backends"] = backends;
  return n;
}

YAML::Node Root(const ProxyConfig& c, const PrintOptions& options) {
  YAML::Node root;
  root["workers"] = Int(c.workers);
  YAML::Node listeners(YAML::NodeType::Sequence);
  for (const ListenerConfig& l : c.listeners) {
    YAML::Node n;
    n["name"] = l.name;
    n["address"] = l.address.text;
    if (l.tls.enabled) {
      YAML::Node tls = n["tls"];
      YAML::Node certificates(YAML::NodeType::Sequence);
      for (const TlsCertificateConfig& pair : l.tls.certificates) {
        YAML::Node cert;
        cert["cert"] = pair.cert.path;
        cert["key"] = pair.key.path;
        certificates.push_back(cert);
      }
      tls["certificates"] = certificates;
      tls["min_version"] =
          l.tls.min_version == ListenerTlsConfig::Version::kTls13 ? "TLSv1.3" : "TLSv1.2";
      tls["ciphers"] = l.tls.ciphers;
      tls["alpn"] = Strings(l.tls.alpn);
      tls["client_ca"] = l.tls.client_ca.path;
    }
    listeners.push_back(n);
  }
  root["listeners"] = listeners;
  if (c.admin.enabled) {  // the section's presence is what enables it
    root["admin"]["address"] = c.admin.address.text;
    // The file, never its contents; the two keys exclude each other. An inline token is a
    // secret: redacted unless the caller asks for it (round-trip tests).
    if (c.admin.token_file.empty()) {
      root["admin"]["token"] =
          c.admin.token.empty() || options.show_secrets ? c.admin.token : kRedacted;
    } else {
      root["admin"]["token_file"] = c.admin.token_file.path;
    }
    root["admin"]["public_url"] = c.admin.public_url;
    root["admin"]["allowed_origins"] = Strings(c.admin.allowed_origins);
    root["admin"]["allowed_hosts"] = Strings(c.admin.allowed_hosts);
  }
  YAML::Node routes(YAML::NodeType::Sequence);
  for (const RouteConfig& r : c.routes) {
    YAML::Node n;
    if (!r.match.host.empty()) n["match"]["host"] = r.match.host;
    if (!r.match.path_prefix.empty()) n["match"]["path_prefix"] = r.match.path_prefix;
    n["pool"] = r.pool;
    n["auth"] = Bool(r.auth);
    routes.push_back(n);
  }
  root["routes"] = routes;
  YAML::Node paths = root["paths"];
  paths["normalize"] = Bool(c.paths.normalize);
  paths["merge_slashes"] = Bool(c.paths.merge_slashes);
  paths["escaped_slashes"] = NameOf(c.paths.escaped_slashes, kEscapedSlashesNames);
  YAML::Node pools(YAML::NodeType::Sequence);
  for (const PoolConfig& p : c.pools) pools.push_back(Pool(p));
  root["pools"] = pools;

  YAML::Node limits = root["limits"];
  limits["max_connections"] = Int(c.limits.max_connections);
  limits["max_header_bytes"] = Size(c.limits.max_header_bytes);
  limits["max_request_line_bytes"] = Size(c.limits.max_request_line_bytes);
  limits["max_message_bytes"] = Size(c.limits.max_message_bytes);
  limits["write_buffer_high_watermark"] = Size(c.limits.write_buffer_high_watermark);
  limits["allowed_origins"] = Strings(c.limits.allowed_origins);
  limits["max_messages_per_second"] = Int(c.limits.max_messages_per_second);
  limits["rate_action"] = NameOf(c.limits.rate_action, kRateActionNames);
  limits["max_connections_per_ip"] = Int(c.limits.max_connections_per_ip);
  limits["max_connections_per_user"] = Int(c.limits.max_connections_per_user);
  limits["handshake_rate_per_ip"] = Int(c.limits.handshake_rate_per_ip);
  limits["max_pending_handshakes"] = Int(c.limits.max_pending_handshakes);
  limits["max_body_bytes"] = Size(c.limits.max_body_bytes);
  limits["compression"] = NameOf(c.limits.compression, kCompressionNames);

  YAML::Node timeouts = root["timeouts"];
  timeouts["handshake"] = Duration(c.timeouts.handshake);
  timeouts["connect"] = Duration(c.timeouts.connect);
  timeouts["backend_handshake"] = Duration(c.timeouts.backend_handshake);
  timeouts["idle"] = Duration(c.timeouts.idle);
  timeouts["drain"] = Duration(c.timeouts.drain);
  timeouts["close"] = Duration(c.timeouts.close);
  timeouts["ping_interval"] = Duration(c.timeouts.ping_interval);
  timeouts["ping_timeout"] = Duration(c.timeouts.ping_timeout);
  timeouts["request"] = Duration(c.timeouts.request);
  timeouts["backend_response"] = Duration(c.timeouts.backend_response);
  timeouts["backend_idle"] = Duration(c.timeouts.backend_idle);

  YAML::Node drain = root["drain"];
  drain["grace"] = Duration(c.drain.grace);
  drain["close_code"] = Int(c.drain.close_code);
  drain["spread"] = Duration(c.drain.spread);

  YAML::Node log = root["log"];
  log["format"] = NameOf(c.log.format, kLogFormatNames);
  log["access"] = c.log.access;
  log["flush_interval"] = Duration(c.log.flush_interval);

  root["metrics"]["enabled"] = Bool(c.metrics.enabled);
  root["retries"] = Int(c.retries);
  std::vector<std::string> trusted;
  for (const Cidr& cidr : c.trusted_proxies) trusted.push_back(cidr.text);
  root["trusted_proxies"] = Strings(trusted);
  std::vector<std::string> nameservers;
  for (const HostPort& nameserver : c.resolver.nameservers) nameservers.push_back(nameserver.text);
  root["resolver"]["nameservers"] = Strings(nameservers);

  if (c.auth.enabled) {  // the section's presence is what enables it
    YAML::Node auth = root["auth"];
    auth["url"] = c.auth.url;
    auth["forward_headers"] = Strings(c.auth.forward_headers);
    auth["copy_headers"] = Strings(c.auth.copy_headers);
    auth["timeout"] = Duration(c.auth.timeout);
    auth["cache_ttl"] = Duration(c.auth.cache_ttl);
    auth["cache_size"] = Int(c.auth.cache_size);
    auth["revalidate_interval"] = Duration(c.auth.revalidate_interval);
  }
  if (c.cluster.enabled) {
    YAML::Node cluster = root["cluster"];
    const ClusterConfig& k = c.cluster;
    // A password inside the URL is a secret like admin.token.
    std::string url = k.redis;
    if (size_t at = url.rfind('@'); at != std::string::npos && !options.show_secrets) {
      url = "redis://:" + std::string(kRedacted) + url.substr(at);
    }
    cluster["redis"] = url;
    if (!k.password_file.empty()) cluster["password_file"] = k.password_file.path;
    if (!k.password_env.empty()) cluster["password_env"] = k.password_env;
    cluster["instance"] = k.instance;
    if (!k.advertise.empty()) cluster["advertise"] = k.advertise;
    cluster["key_prefix"] = k.key_prefix;
    cluster["heartbeat_interval"] = Duration(k.heartbeat_interval);
    cluster["heartbeat_ttl"] = Duration(k.heartbeat_ttl);
    cluster["connect_timeout"] = Duration(k.connect_timeout);
    cluster["command_timeout"] = Duration(k.command_timeout);
    cluster["reconnect_max"] = Duration(k.reconnect_max);
    cluster["ready_requires_redis"] = Bool(k.ready_requires_redis);
    if (k.tls.enabled) {  // rediss://
      YAML::Node tls = cluster["tls"];
      tls["ca"] = k.tls.ca.path;
      tls["verify"] = Bool(k.tls.verify);
      tls["server_name"] = k.tls.server_name;
      tls["cert"] = k.tls.cert.path;
      tls["key"] = k.tls.key.path;
    }
  }
  if (c.on_disconnect.enabled) {
    YAML::Node hook = root["on_disconnect"];
    hook["url"] = c.on_disconnect.url;
    hook["timeout"] = Duration(c.on_disconnect.timeout);
    hook["retries"] = Int(c.on_disconnect.retries);
    hook["queue_size"] = Int(c.on_disconnect.queue_size);
  }
  return root;
}

}  // namespace

std::string PrintConfig(const ProxyConfig& config, const PrintOptions& options) {
  YAML::Emitter out;
  out << Root(config, options);
  std::string text = out.c_str();
  text += '\n';
  return text;
}

}  // namespace wsgate::config

namespace wsgate::config {

ProxyConfig DefaultConfig() {
  ProxyConfig config;
  ListenerConfig listener;
  listener.name = "public";
  listener.address = {.host = "127.0.0.1", .port = 8080, .text = "127.0.0.1:8080"};
  config.listeners.push_back(std::move(listener));
  RouteConfig route;
  route.pool = "app";
  config.routes.push_back(std::move(route));
  PoolConfig pool;
  pool.name = "app";
  BackendConfig backend;
  backend.address = {.host = "127.0.0.1", .port = 9001, .text = "127.0.0.1:9001"};
  pool.backends.push_back(std::move(backend));
  config.pools.push_back(std::move(pool));
  return config;
}

std::string PrintDefaults() {
  std::string text =
      "# wsgate defaults: every setting at its default value. listeners, routes and pools have\n"
      "# no defaults; the ones below are examples so that this file loads as it is.\n";
  text += PrintConfig(DefaultConfig());
  // Sections that switch a feature on by being present: their defaults, commented out.
  ProxyConfig optional = DefaultConfig();
  optional.admin.enabled = true;
  optional.auth.enabled = true;
  optional.on_disconnect.enabled = true;
  optional.listeners[0].tls.enabled = true;
  optional.pools[0].balance = Balance::kSticky;
  optional.pools[0].health_check.enabled = true;
  optional.pools[0].tls.enabled = true;
  const YAML::Node root = Root(optional, PrintOptions{});
  YAML::Node sections;
  YAML::Node listener;
  listener["name"] = "public";
  listener["tls"] = root["listeners"][0]["tls"];
  sections["listeners"].push_back(listener);
  sections["admin"] = root["admin"];
  YAML::Node pool;
  pool["name"] = "app";
  pool["balance"] = "sticky";
  for (const char* key : {"sticky", "health_check", "tls"}) pool[key] = root["pools"][0][key];
  sections["pools"].push_back(pool);
  sections["auth"] = root["auth"];
  sections["on_disconnect"] = root["on_disconnect"];
  YAML::Emitter out;
  out << sections;
  text +=
      "\n# Present = enabled. Their defaults (tls.certificates, auth.url and on_disconnect.url\n"
      "# have none):\n";
  std::string_view rest = out.c_str();
  while (!rest.empty()) {
    const size_t end = rest.find('\n');
    text += "# " + std::string(rest.substr(0, end)) + "\n";
    rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
  }
  return text;
}

}  // namespace wsgate::config
