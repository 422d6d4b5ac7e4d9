// Plain value types for a loaded wsgate configuration.
//
// config/ is a leaf: it knows nothing of proxy/ or metrics/. LoadConfig() (loader.h) fills these
// structs from one YAML file; every field below has the default the operator docs promise.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace wsgate::config {

using Duration = std::chrono::milliseconds;

// A "host:port" or "[v6]:port" pair exactly as written, split into its parts.
struct HostPort {
  std::string host;  // without brackets for IPv6
  uint16_t port = 0;
  std::string text;  // as written in the file, for logs

  std::string ToString() const { return text; }
};

struct ListenerConfig {
  std::string name;
  HostPort address;
};

struct AdminConfig {
  bool enabled = false;  // true when the `admin` section is present
  HostPort address{.host = "127.0.0.1", .port = 9901, .text = "127.0.0.1:9901"};
  std::string token;     // bearer token; required when address is not loopback
};

struct DrainConfig {
  Duration grace{0};         // after SIGTERM, keep accepting this long (readyz already 503)
  uint16_t close_code = 1001;  // 1001 going away | 1012 service restart
  Duration spread{0};        // spread the final closes evenly over this window
};

struct RouteMatch {
  std::string host;         // empty = any host; "*.example.com" matches any subdomain
  std::string path_prefix;  // empty = any path
};

struct RouteConfig {
  RouteMatch match;
  std::string pool;
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
};

// Passive checks from real traffic.
struct OutlierConfig {
  uint32_t consecutive_failures = 0;  // 0 = off
  Duration ejection_time{std::chrono::seconds(30)};
};

struct RebalanceConfig {
  bool enabled = false;
  double tolerance = 1.2;  // close surplus above tolerance × weighted share
  double rate = 50;        // closes per second, at most
};

// Plain HTTP requests forwarded to the pool (not WebSocket upgrades).
struct PoolHttpConfig {
  uint32_t max_idle_connections = 32;  // idle keep-alive backend connections kept per backend
};

struct BackendConfig {
  HostPort address;
  uint32_t weight = 1;  // 1..1000
  std::string id;       // hashing identity; default: the address text
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
  PoolHttpConfig http;
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
};

struct LogConfig {
  enum class Format { kText, kJson };
  Format format = Format::kText;
  std::string access = "stderr";  // stderr | off | a file path (appended; reopened on SIGHUP)
  Duration flush_interval{0};     // interim access lines for long-lived connections; 0 = off
};

struct MetricsConfig {
  bool enabled = true;  // false: the data path counts nothing (for measuring the cost)
};

struct ProxyConfig {
  std::string source_path;  // file it was loaded from
  uint32_t workers = 1;
  std::vector<ListenerConfig> listeners;
  AdminConfig admin;
  std::vector<RouteConfig> routes;
  std::vector<PoolConfig> pools;
  LimitsConfig limits;
  TimeoutsConfig timeouts;
  DrainConfig drain;
  LogConfig log;
  MetricsConfig metrics;
  uint32_t retries = 2;

  const PoolConfig* FindPool(const std::string& name) const {
    for (const auto& pool : pools) {
      if (pool.name == name) return &pool;
    }
    return nullptr;
  }
};

}  // namespace wsgate::config
