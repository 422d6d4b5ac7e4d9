// Plain value types for a loaded wsgate configuration.
//
// config/ is a leaf: it knows nothing of proxy/ or metrics/. LoadConfig() (loader.h) fills these
// structs from one YAML file; every field below has the default the operator docs promise.
// Equality is memberwise, so a config printed and loaded again can be compared with the original.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "config/config_error.h"

namespace wsgate::config {

using Duration = std::chrono::milliseconds;

// A "host:port" or "[v6]:port" pair exactly as written, split into its parts.
struct HostPort {
  std::string host;  // without brackets for IPv6
  uint16_t port = 0;
  std::string text;  // as written in the file, for logs

  std::string ToString() const { return text; }

  bool operator==(const HostPort&) const = default;
};

// A trusted_proxies entry: an IPv4 or IPv6 network, host bits zero.
struct Cidr {
  bool ipv6 = false;
  std::array<uint8_t, 16> network{};  // network byte order; IPv4 uses the first 4 bytes
  uint8_t prefix_length = 0;          // 0..32 or 0..128
  std::string text;                   // as written, for --print-config and logs

  bool operator==(const Cidr&) const = default;
};

// A file named in the configuration. |origin| says where (file:line:column and key path, message
// empty), so an error found when the proxy loads the file can point at the setting.
struct ConfigFile {
  std::string path;  // resolved against the configuration file's directory; empty = not set
  ConfigError origin;

  bool empty() const { return path.empty(); }
  // Where it was named is not part of the setting.
  bool operator==(const ConfigFile& other) const { return path == other.path; }
};

struct TlsCertificateConfig {
  ConfigFile cert;  // PEM chain: the leaf first
  ConfigFile key;   // PEM private key

  bool operator==(const TlsCertificateConfig&) const = default;
};

// listeners[].tls: terminate TLS (wss://). Present section = enabled.
struct ListenerTlsConfig {
  enum class Version { kTls12, kTls13 };
  bool enabled = false;
  std::vector<TlsCertificateConfig> certificates;  // chosen by SNI; the first is the default
  Version min_version = Version::kTls12;
  std::string ciphers;  // TLS 1.2 cipher list; empty = OpenSSL's defaults
  ConfigError ciphers_origin;
  std::vector<std::string> alpn = {"http/1.1"};
  ConfigFile client_ca;  // set = require client certificates signed by it (mTLS)

  bool operator==(const ListenerTlsConfig& o) const {
    return enabled == o.enabled && certificates == o.certificates && min_version == o.min_version &&
           ciphers == o.ciphers && alpn == o.alpn && client_ca == o.client_ca;
  }
};

// pools[].tls: speak TLS to the backends. Present section = enabled unless enabled: false.
struct PoolTlsConfig {
  bool enabled = false;
  ConfigFile ca;            // empty = the system's default trust store
  bool verify = true;       // false only when written explicitly
  std::string server_name;  // SNI and name check; empty = the backend's host
  ConfigFile cert;          // optional client certificate
  ConfigFile key;

  bool operator==(const PoolTlsConfig&) const = default;
};

struct ListenerConfig {
  std::string name;
  HostPort address;
  ListenerTlsConfig tls;

  bool operator==(const ListenerConfig&) const = default;
};

struct AdminConfig {
  bool enabled = false;  // true when the `admin` section is present
  HostPort address{.host = "127.0.0.1", .port = 9901, .text = "127.0.0.1:9901"};
  std::string token;  // bearer token; required when address is not loopback
  // Where the token was read from (trailing newline stripped); set = |token| holds its contents.
  ConfigFile token_file;
  // Base of the callback URLs sent to backends ("http://10.0.0.5:9901", no trailing slash);
  // empty = "http://" + the bound admin address.
  std::string public_url;
  // Exact Origin values a browser page may call the admin API from; empty = none.
  std::vector<std::string> allowed_origins;
  // Host header names accepted besides the bound address, loopback names and public_url's host.
  std::vector<std::string> allowed_hosts;

  bool operator==(const AdminConfig&) const = default;
};

struct DrainConfig {
  Duration grace{0};           // after SIGTERM, keep accepting this long (readyz already 503)
  uint16_t close_code = 1001;  // 1001 going away | 1012 service restart
  Duration spread{0};          // spread the final closes evenly over this window

  bool operator==(const DrainConfig&) const = default;
};

struct RouteMatch {
  std::string host;         // empty = any host; "*.example.com" matches any subdomain
  std::string path_prefix;  // empty = any path

  bool operator==(const RouteMatch&) const = default;
};

// paths: how the request target's path is normalised before routing (proxy/http/request_target.h).
struct PathsConfig {
  enum class EscapedSlashes { kReject, kKeep };
  bool normalize = true;       // decode unreserved escapes, remove dot segments; false = raw target
  bool merge_slashes = false;  // "//a///b" -> "/a/b"
  EscapedSlashes escaped_slashes = EscapedSlashes::kReject;  // %2F, %5C, "\": 400, or forwarded

  bool operator==(const PathsConfig&) const = default;
};

struct RouteConfig {
  RouteMatch match;
  std::string pool;
  bool auth = true;  // false: this route skips the top-level auth hook

  bool operator==(const RouteConfig&) const = default;
};

// auth ($connect): before connecting upstream, ask auth.url whether the client may pass.
struct AuthConfig {
  bool enabled = false;  // true when the `auth` section is present
  std::string url;       // http://host[:port][/path]; the client's path goes in X-Original-Uri
  std::vector<std::string> forward_headers{"Cookie", "Authorization", "Origin"};
  std::vector<std::string> copy_headers;  // from a 2xx answer into the upstream request
  Duration timeout{2000};
  Duration cache_ttl{0};        // 0 = no cache
  uint64_t cache_size = 10000;  // entries per worker
  // Ask the hook again this often for each live connection; a 401/403 closes it (1008).
  Duration revalidate_interval{0};  // 0 = never

  bool operator==(const AuthConfig&) const = default;
};

// on_disconnect ($disconnect): POST a JSON summary of each ended connection to url.
struct DisconnectHookConfig {
  bool enabled = false;
  std::string url;  // http://host[:port][/path]
  Duration timeout{2000};
  uint32_t retries = 3;
  uint64_t queue_size = 10000;  // events waiting per worker; beyond it they are dropped

  bool operator==(const DisconnectHookConfig&) const = default;
};

enum class Balance { kLeastConn, kRoundRobin, kRandomTwo, kSticky };

// balance: sticky — where the key comes from, and what happens without one.
struct StickyConfig {
  enum class KeySource { kCookie, kHeader, kQuery, kClientIp, kPath };
  enum class Fallback { kLeastConn, kRoundRobin, kReject };
  KeySource source = KeySource::kClientIp;
  std::string key_name;  // cookie / header / query parameter name ("" for client_ip and path)
  Fallback fallback = Fallback::kLeastConn;
  double load_factor = 1.25;  // bounded loads: at most load_factor × the mean; 0 = unbounded
  std::string insert_cookie;  // cookie naming the chosen backend (opaque id), set on the 101

  bool operator==(const StickyConfig&) const = default;
};

struct HealthCheckConfig {
  enum class Type { kTcp, kHttp, kWebSocket };
  bool enabled = false;  // true when the section is present
  Duration interval{std::chrono::seconds(2)};
  Duration timeout{std::chrono::seconds(1)};
  Type type = Type::kTcp;
  std::string path = "/";
  uint32_t healthy_threshold = 2;
  uint32_t unhealthy_threshold = 3;

  bool operator==(const HealthCheckConfig&) const = default;
};

// Passive checks from real traffic.
struct OutlierConfig {
  uint32_t consecutive_failures = 0;  // 0 = off
  Duration ejection_time{std::chrono::seconds(30)};

  bool operator==(const OutlierConfig&) const = default;
};

struct RebalanceConfig {
  bool enabled = false;
  double tolerance = 1.2;  // close surplus above tolerance × weighted share
  double rate = 50;        // closes per second, at most

  bool operator==(const RebalanceConfig&) const = default;
};

// Plain HTTP requests forwarded to the pool (not WebSocket upgrades).
struct PoolHttpConfig {
  uint32_t max_idle_connections = 32;  // idle keep-alive backend connections kept per backend

  bool operator==(const PoolHttpConfig&) const = default;
};

// pools[].discovery: backend addresses that are DNS names are re-resolved on the event loop
// (every A and AAAA address becomes a backend). Present section = enabled.
struct DiscoveryConfig {
  bool enabled = false;
  Duration interval{std::chrono::seconds(5)};  // at least 1s; shorter when the record's TTL is
  bool require_at_start = true;                // false: an unresolvable name starts the pool empty

  bool operator==(const DiscoveryConfig&) const = default;
};

// resolver: the DNS servers discovery asks. Empty = the system's (/etc/resolv.conf).
struct ResolverConfig {
  std::vector<HostPort> nameservers;  // numeric IP addresses with a port

  bool operator==(const ResolverConfig&) const = default;
};

struct BackendConfig {
  HostPort address;
  uint32_t weight = 1;  // 1..1000
  std::string id;       // hashing identity; default: the address text
  ConfigError origin;   // where |address| was written, for errors found by config/validate.h

  // Where it was written is not part of the setting.
  bool operator==(const BackendConfig& other) const {
    return address == other.address && weight == other.weight && id == other.id;
  }
};

struct PoolConfig {
  std::string name;
  Balance balance = Balance::kLeastConn;
  std::vector<BackendConfig> backends;
  StickyConfig sticky;
  HealthCheckConfig health_check;
  OutlierConfig outlier;
  RebalanceConfig rebalance;
  bool close_on_unhealthy = false;  // close live connections (1001) when a backend turns unhealthy
  bool optional = false;  // the plain /readyz ignores this pool (/readyz?pool=NAME still asks)
  // A backend leaving (drain, removal, unhealthy, rebalance, lost) moves its sessions to another
  // backend while the client stays connected, instead of closing them.
  bool migrate = false;
  PoolTlsConfig tls;
  PoolHttpConfig http;
  DiscoveryConfig discovery;

  bool operator==(const PoolConfig&) const = default;
};

struct LimitsConfig {
  uint64_t max_connections = 100000;
  uint64_t max_header_bytes = 16 * 1024;
  uint64_t max_request_line_bytes = 8 * 1024;
  uint64_t max_message_bytes = 16 * 1024 * 1024;
  uint64_t write_buffer_high_watermark = 64 * 1024;  // backpressure threshold per direction
  std::vector<std::string> allowed_origins;          // empty = any Origin
  // Messages a client may send per second on one connection (token bucket with a one-second
  // burst); 0 = unlimited. Over it: close 1008, or pause reading when rate_action is throttle.
  uint64_t max_messages_per_second = 0;
  enum class RateAction { kClose, kThrottle };
  RateAction rate_action = RateAction::kClose;
  uint64_t max_body_bytes = 16 * 1024 * 1024;  // plain HTTP request bodies (413 above); 0 = any
  // Per client address (IPv4 address, or IPv6 /64): concurrent connections, and new connections
  // per second (token bucket with a one-second burst). Over either: 429 and close. 0 = unlimited.
  uint64_t max_connections_per_ip = 0;
  // Connections of one auth-given user (X-Wsgate-User); fleet-wide with `cluster`. 0 = any.
  uint64_t max_connections_per_user = 0;
  uint64_t handshake_rate_per_ip = 0;
  // Connections still in their handshake (request head, backend connect, 101) at once; over it
  // new connections get 503 at once, so slow senders cannot hold every slot.
  uint64_t max_pending_handshakes = 10000;
  // permessage-deflate against max_message_bytes: inspect inflates compressed messages (only to
  // count them) and closes 1009 past the limit; strip removes the offer from the upgrade sent
  // to the backend; passthrough counts compressed bytes only.
  enum class Compression { kInspect, kStrip, kPassthrough };
  Compression compression = Compression::kInspect;

  bool operator==(const LimitsConfig&) const = default;
};

struct TimeoutsConfig {
  Duration handshake{std::chrono::seconds(10)};
  Duration connect{std::chrono::seconds(5)};
  Duration backend_handshake{std::chrono::seconds(5)};
  Duration idle{0};  // 0 = never
  Duration drain{std::chrono::seconds(30)};
  Duration close{std::chrono::seconds(5)};  // wait for the peer's close frame / TCP close
  // Keepalive: after this long without data from the client, send it a ping; if nothing
  // (pong or data) arrives within ping_timeout, close with 1001. 0 = off.
  Duration ping_interval{0};
  Duration ping_timeout{std::chrono::seconds(10)};
  // Plain HTTP: the whole request (head and body) must arrive within |request| (408), the
  // backend must start its response, and keep sending it, within |backend_response| (504), and
  // an idle pooled backend connection is closed after |backend_idle|.
  Duration request{std::chrono::seconds(60)};
  Duration backend_response{std::chrono::seconds(60)};
  Duration backend_idle{std::chrono::seconds(60)};

  bool operator==(const TimeoutsConfig&) const = default;
};

struct LogConfig {
  enum class Format { kText, kJson };
  Format format = Format::kText;
  std::string access = "stderr";  // stderr | off | a file path (appended; reopened on SIGHUP)
  Duration flush_interval{0};     // interim access lines for long-lived connections; 0 = off

  bool operator==(const LogConfig&) const = default;
};

// cluster: a fleet of instances sharing a connection registry on Redis (docs/fleet.md).
struct ClusterConfig {
  bool enabled = false;  // true when the section is present
  std::string redis;     // as written, for logs (the password is never printed)
  std::string redis_host;
  uint16_t redis_port = 6379;
  uint32_t redis_db = 0;
  std::string password;  // from the URL, password_file or password_env
  ConfigFile password_file;
  std::string password_env;
  std::string instance;   // default: the host name
  std::string advertise;  // http://host:port of this instance's admin API; default derived
  std::string key_prefix = "wsgate:";
  Duration heartbeat_interval{1000};
  Duration heartbeat_ttl{5000};
  Duration connect_timeout{1000};
  Duration command_timeout{1000};
  Duration reconnect_max{5000};
  bool ready_requires_redis = false;
  // rediss://: TLS to Redis (ca, verify, server_name, client cert and key), as a pool's tls.
  PoolTlsConfig tls;

  bool operator==(const ClusterConfig&) const = default;
};

struct MetricsConfig {
  bool enabled = true;  // false: the data path counts nothing (for measuring the cost)

  bool operator==(const MetricsConfig&) const = default;
};

struct ProxyConfig {
  std::string source_path;  // file it was loaded from
  uint32_t workers = 1;
  std::vector<ListenerConfig> listeners;
  AdminConfig admin;
  std::vector<RouteConfig> routes;
  PathsConfig paths;
  std::vector<PoolConfig> pools;
  LimitsConfig limits;
  TimeoutsConfig timeouts;
  DrainConfig drain;
  LogConfig log;
  MetricsConfig metrics;
  uint32_t retries = 2;
  AuthConfig auth;
  DisconnectHookConfig on_disconnect;
  // Peers whose X-Forwarded-*, X-Real-IP and Forwarded fields are believed; empty = nobody.
  std::vector<Cidr> trusted_proxies;
  ResolverConfig resolver;
  ClusterConfig cluster;

  const PoolConfig* FindPool(const std::string& name) const {
    for (const auto& pool : pools) {
      if (pool.name == name) return &pool;
    }
    return nullptr;
  }

  bool operator==(const ProxyConfig&) const = default;
};

}  // namespace wsgate::config
