// Every metric wsgate exports, declared once: its name, type, help, label names and the enum its
// last label is indexed by. The declarations below produce the label enums, their label values
// (sized and checked at compile time) and the exposition's families, in the order listed.
//
// Adding a metric: one line in WSGATE_METRIC_FAMILIES (plus, for a new enum-indexed label, one
// WSGATE_LABELLED_ENUM), the counter it reads (metrics.h: a field of the block it belongs to, or
// a field of Scrape for a value computed when scraped), the code that counts it, the lines in
// Collect() or Serialize() that read it, and its entry in docs/metrics.md.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string_view>

namespace wsgate::metrics {

// True if every label value is non-empty and no two are equal.
template <size_t N>
constexpr bool AllLabelled(const std::array<std::string_view, N>& labels) {
  for (size_t i = 0; i < N; ++i) {
    if (labels[i].empty()) return false;
    for (size_t j = 0; j < i; ++j) {
      if (labels[i] == labels[j]) return false;
    }
  }
  return true;
}

#define WSGATE_ENUMERATOR(id, label) id,
#define WSGATE_LABEL_VALUE(id, label) label,
// Declares `enum Enum { <ids of LIST>, count }` and `names`, the label value of each enum value.
// Enum, count and names are declared names, which cannot be parenthesised.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define WSGATE_LABELLED_ENUM(Enum, count, names, LIST)                                     \
  enum Enum { LIST(WSGATE_ENUMERATOR) count };                                             \
  inline constexpr std::array<std::string_view, count> names = {LIST(WSGATE_LABEL_VALUE)}; \
  static_assert(AllLabelled(names), #Enum ": every value needs its own non-empty label")
// NOLINTEND(bugprone-macro-parentheses)

// Label enums: X(enumerator, "label value").
#define WSGATE_DIRECTIONS(X)               \
  X(kClientToBackend, "client_to_backend") \
  X(kBackendToClient, "backend_to_client")
WSGATE_LABELLED_ENUM(Direction, kDirections, kDirectionLabels, WSGATE_DIRECTIONS);

#define WSGATE_FRAME_KINDS(X)      \
  X(kText, "text")                 \
  X(kBinary, "binary")             \
  X(kContinuation, "continuation") \
  X(kPing, "ping")                 \
  X(kPong, "pong")                 \
  X(kClose, "close")
WSGATE_LABELLED_ENUM(FrameKind, kFrameKinds, kFrameKindLabels, WSGATE_FRAME_KINDS);

// address_limit: 429 for limits.max_connections_per_ip or handshake_rate_per_ip; user_limit: 429
// for limits.max_connections_per_user.
#define WSGATE_HANDSHAKE_RESULTS(X)       \
  X(kUpgraded, "upgraded")                \
  X(kBadRequest, "bad_request")           \
  X(kForbidden, "forbidden")              \
  X(kTooLarge, "too_large")               \
  X(kTimeout, "timeout")                  \
  X(kNoBackend, "no_backend")             \
  X(kBackendFailed, "backend_failed")     \
  X(kBackendRejected, "backend_rejected") \
  X(kTlsFailed, "tls_failed")             \
  X(kOverLimit, "over_limit")             \
  X(kNotFound, "not_found")               \
  X(kAddressLimit, "address_limit")       \
  X(kUserLimit, "user_limit")
WSGATE_LABELLED_ENUM(HandshakeResult, kHandshakeResults, kHandshakeResultLabels,
                     WSGATE_HANDSHAKE_RESULTS);

#define WSGATE_INITIATORS(X) X(kByClient, "client") X(kByBackend, "backend") X(kByProxy, "proxy")
WSGATE_LABELLED_ENUM(Initiator, kInitiators, kInitiatorLabels, WSGATE_INITIATORS);

// tls_handshake: the backend TLS handshake failed (e.g. its certificate did not verify).
#define WSGATE_CONNECT_FAILURES(X) \
  X(kRefused, "refused")           \
  X(kConnectTimeout, "timeout")    \
  X(kReset, "reset")               \
  X(kBadResponse, "bad_response")  \
  X(kTlsHandshake, "tls_handshake")
WSGATE_LABELLED_ENUM(ConnectFailure, kConnectFailures, kConnectFailureLabels,
                     WSGATE_CONNECT_FAILURES);

// Why a client's TLS handshake failed; bounded, so scanners cannot grow the label set. not_tls:
// plain HTTP or other non-TLS bytes; protocol_version: below min_version; no_client_certificate,
// bad_certificate: mTLS, none sent or it did not verify; no_application_protocol: no common ALPN;
// timeout: not done within timeouts.handshake; closed: closed or reset mid-handshake.
#define WSGATE_TLS_FAILURES(X)                            \
  X(kTlsNotTls, "not_tls")                                \
  X(kTlsProtocolVersion, "protocol_version")              \
  X(kTlsNoSharedCipher, "no_shared_cipher")               \
  X(kTlsNoClientCertificate, "no_client_certificate")     \
  X(kTlsBadCertificate, "bad_certificate")                \
  X(kTlsNoApplicationProtocol, "no_application_protocol") \
  X(kTlsTimeout, "timeout")                               \
  X(kTlsClosed, "closed")                                 \
  X(kTlsOther, "other")
WSGATE_LABELLED_ENUM(TlsFailure, kTlsFailures, kTlsFailureLabels, WSGATE_TLS_FAILURES);

#define WSGATE_TLS_VERSIONS(X) X(kTls12, "TLSv1.2") X(kTls13, "TLSv1.3")
WSGATE_LABELLED_ENUM(TlsVersion, kTlsVersions, kTlsVersionLabels, WSGATE_TLS_VERSIONS);

// How a SIGHUP reload ended: partial = applied, but some listener could not be bound.
#define WSGATE_RELOAD_RESULTS(X) \
  X(kReloadSuccess, "success")   \
  X(kReloadPartial, "partial")   \
  X(kReloadFailure, "failure")
WSGATE_LABELLED_ENUM(ReloadResult, kReloadResults, kReloadResultLabels, WSGATE_RELOAD_RESULTS);

// Why the admin listener refused a request before looking at the token: host: not an address of
// this listener (DNS rebinding); origin: Origin not in admin.allowed_origins; fetch_site:
// Sec-Fetch-Site other than none, without an allowed Origin.
#define WSGATE_ADMIN_REFUSALS(X)   \
  X(kAdminRefusedHost, "host")     \
  X(kAdminRefusedOrigin, "origin") \
  X(kAdminRefusedFetchSite, "fetch_site")
WSGATE_LABELLED_ENUM(AdminRefusal, kAdminRefusals, kAdminRefusalLabels, WSGATE_ADMIN_REFUSALS);

// Why a session moved to another backend (pools[].migrate): its backend was drained through the
// admin API, removed (reload or discovery), turned unhealthy, held more than its share after a
// pool grew, or was lost (closed or reset without a close frame).
#define WSGATE_MIGRATION_REASONS(X) \
  X(kMoveDrain, "drain")            \
  X(kMoveRemoved, "removed")        \
  X(kMoveUnhealthy, "unhealthy")    \
  X(kMoveRebalance, "rebalance")    \
  X(kMoveBackendLost, "backend-lost")
WSGATE_LABELLED_ENUM(MigrationReason, kMigrationReasons, kMigrationReasonLabels,
                     WSGATE_MIGRATION_REASONS);

// How a move ended: moved; refused: the new backend did not answer a 101 with the same
// subprotocol and extensions; no_backend: no other backend could be reached; aborted: the session
// ended, or the old backend cut a message short, during the move; unsupported: the session
// cannot move (permessage-deflate with client context takeover).
// auth.revalidate_interval: the hook allowed the connection again, revoked it (401/403: closed
// with 1008), or gave no usable answer (the connection stays).
inline constexpr std::array<std::string_view, 3> kRevalidationLabels = {"allowed", "revoked",
                                                                        "failed"};

// cluster (docs/fleet.md). Registry writes by operation; forwarded API requests and published
// user/tag operations by result (unavailable: Redis could not be asked; error: the owner did not
// answer).
#define WSGATE_REGISTRY_OPS(X) \
  X(kRegistryAdd, "add")       \
  X(kRegistryUpdate, "update") \
  X(kRegistryRemove, "remove") \
  X(kRegistryTags, "tags")     \
  X(kRegistryUser, "user")     \
  X(kRegistryResync, "resync")
WSGATE_LABELLED_ENUM(RegistryOp, kRegistryOps, kRegistryOpLabels, WSGATE_REGISTRY_OPS);
#define WSGATE_FORWARD_RESULTS(X) \
  X(kForwardOk, "ok")             \
  X(kForwardError, "error")       \
  X(kForwardUnavailable, "unavailable")
WSGATE_LABELLED_ENUM(ForwardResult, kForwardResults, kForwardResultLabels, WSGATE_FORWARD_RESULTS);

#define WSGATE_MIGRATION_RESULTS(X) \
  X(kMoved, "moved")                \
  X(kMoveRefused, "refused")        \
  X(kMoveNoBackend, "no_backend")   \
  X(kMoveAborted, "aborted")        \
  X(kMoveUnsupported, "unsupported")
WSGATE_LABELLED_ENUM(MigrationResult, kMigrationResults, kMigrationResultLabels,
                     WSGATE_MIGRATION_RESULTS);

// Close codes folded into bounded labels, in the order of CloseCodeSlot().
inline constexpr std::array<std::string_view, 18> kCloseCodeLabels = {
    "1000", "1001", "1002", "1003", "1005", "1006", "1007", "1008", "1009",
    "1010", "1011", "1012", "1013", "1014", "1015", "3xxx", "4xxx", "other"};
static_assert(AllLabelled(kCloseCodeLabels));

enum class Type { kCounter, kGauge, kHistogram };

// No enum-indexed label.
inline constexpr std::span<const std::string_view> kNotIndexed;

struct FamilySpec {
  std::string_view name;
  Type type;
  std::string_view help;
  std::span<const std::string_view> index;  // values of the last label, by enum value
  std::array<std::string_view, 3> labels;   // label names, in exposition order
  size_t label_count;
};

template <typename... Labels>
constexpr FamilySpec Declare(std::string_view name, Type type, std::string_view help,
                             std::span<const std::string_view> index, Labels... labels) {
  static_assert(sizeof...(Labels) <= 3, "FamilySpec holds up to three labels");
  return FamilySpec{name, type, help, index, {labels...}, sizeof...(Labels)};
}

// X(id, name, type, help, label values of the last label or kNotIndexed, label names...), in
// exposition order.
#define WSGATE_METRIC_FAMILIES(X)                                                                  \
  X(kConnectionsActive, "wsgate_connections_active", kGauge,                                       \
    "Open client connections by backend.", kNotIndexed, "listener", "pool", "backend")             \
  X(kConnectionsTotal, "wsgate_connections_total", kCounter,                                       \
    "Client connections upgraded, by backend.", kNotIndexed, "listener", "pool", "backend")        \
  X(kHandshakesTotal, "wsgate_handshakes_total", kCounter, "Client handshakes by outcome.",        \
    kHandshakeResultLabels, "listener", "result")                                                  \
  X(kTlsHandshakeFailuresTotal, "wsgate_tls_handshake_failures_total", kCounter,                   \
    "Failed client TLS handshakes by reason.", kTlsFailureLabels, "listener", "reason")            \
  X(kTlsHandshakesTotal, "wsgate_tls_handshakes_total", kCounter,                                  \
    "Completed client TLS handshakes by version and resumption.", kNotIndexed, "listener",         \
    "version", "resumed")                                                                          \
  X(kHandshakeDurationSeconds, "wsgate_handshake_duration_seconds", kHistogram,                    \
    "Time from accept to the 101 relayed to the client.", kNotIndexed, "pool")                     \
  X(kConnectionDurationSeconds, "wsgate_connection_duration_seconds", kHistogram,                  \
    "Lifetime of upgraded connections.", kNotIndexed, "pool")                                      \
  X(kHttpRequestsTotal, "wsgate_http_requests_total", kCounter,                                    \
    "Plain HTTP requests by pool and the status answered.", kNotIndexed, "pool", "code")           \
  X(kHttpRequestDurationSeconds, "wsgate_http_request_duration_seconds", kHistogram,               \
    "Plain HTTP requests, from their first byte to the response's end.", kNotIndexed, "pool")      \
  X(kMessagesTotal, "wsgate_messages_total", kCounter, "Whole WebSocket messages relayed.",        \
    kDirectionLabels, "pool", "direction")                                                         \
  X(kFramesTotal, "wsgate_frames_total", kCounter, "WebSocket frames relayed.", kFrameKindLabels,  \
    "pool", "direction", "opcode")                                                                 \
  X(kBytesTotal, "wsgate_bytes_total", kCounter,                                                   \
    "WebSocket bytes relayed (frame headers included).", kDirectionLabels, "pool", "direction")    \
  X(kInflatedBytesTotal, "wsgate_inflated_bytes_total", kCounter,                                  \
    "Size of compressed WebSocket payloads once inflated (compression: inspect).",                 \
    kDirectionLabels, "pool", "direction")                                                         \
  X(kClosesTotal, "wsgate_closes_total", kCounter, "Closed WebSocket connections by close code.",  \
    kCloseCodeLabels, "pool", "initiator", "code")                                                 \
  X(kMigrationsTotal, "wsgate_migrations_total", kCounter,                                         \
    "Sessions moved (or not) to another backend, by reason and result.", kMigrationResultLabels,   \
    "pool", "reason", "result")                                                                    \
  X(kMigrationPauseSeconds, "wsgate_migration_pause_seconds", kHistogram,                          \
    "How long a moved session held the client's messages (the pause the client sees).",            \
    kNotIndexed, "pool")                                                                           \
  X(kBackendUp, "wsgate_backend_up", kGauge, "1 if the backend takes new connections.",            \
    kNotIndexed, "pool", "backend")                                                                \
  X(kBackendConnectFailuresTotal, "wsgate_backend_connect_failures_total", kCounter,               \
    "Failed backend attempts before an upgrade.", kConnectFailureLabels, "pool", "backend",        \
    "reason")                                                                                      \
  X(kDraining, "wsgate_draining", kGauge, "1 while the process drains.", kNotIndexed)              \
  X(kConfigReloadsTotal, "wsgate_config_reloads_total", kCounter,                                  \
    "Configuration reloads by result.", kReloadResultLabels, "result")                             \
  X(kAdminRequestsRefusedTotal, "wsgate_admin_requests_refused_total", kCounter,                   \
    "Admin requests refused for their Host, Origin or Sec-Fetch-Site.", kAdminRefusalLabels,       \
    "reason")                                                                                      \
  X(kRebalanceClosesTotal, "wsgate_rebalance_closes_total", kCounter,                              \
    "Connections closed with 1012 to rebalance a pool.", kNotIndexed)                              \
  X(kDiscoveryErrorsTotal, "wsgate_discovery_errors_total", kCounter,                              \
    "Failed or empty DNS answers for a discovery pool's names.", kNotIndexed, "pool")              \
  X(kBuildInfo, "wsgate_build_info", kGauge, "Always 1; the version is in the label.",             \
    kNotIndexed, "version")                                                                        \
  X(kConnectionsApiRequestsTotal, "wsgate_connections_api_requests_total", kCounter,               \
    "Connections API requests by method and answered status.", kNotIndexed, "method", "status")    \
  X(kConnectionsApiConnections, "wsgate_connections_api_connections", kGauge,                      \
    "Connections the API can reach now.", kNotIndexed)                                             \
  X(kDisconnectWebhookDeliveredTotal, "wsgate_disconnect_webhook_delivered_total", kCounter,       \
    "on_disconnect events delivered (2xx).", kNotIndexed)                                          \
  X(kDisconnectWebhookRetriesTotal, "wsgate_disconnect_webhook_retries_total", kCounter,           \
    "on_disconnect deliveries retried.", kNotIndexed)                                              \
  X(kDisconnectWebhookFailedTotal, "wsgate_disconnect_webhook_failed_total", kCounter,             \
    "on_disconnect events given up after every retry.", kNotIndexed)                               \
  X(kDisconnectWebhookDroppedTotal, "wsgate_disconnect_webhook_dropped_total", kCounter,           \
    "on_disconnect events dropped because the queue was full.", kNotIndexed)                       \
  X(kAuthAllowedTotal, "wsgate_auth_allowed_total", kCounter,                                      \
    "Upgrades the auth hook allowed (2xx).", kNotIndexed)                                          \
  X(kAuthDeniedTotal, "wsgate_auth_denied_total", kCounter,                                        \
    "Upgrades the auth hook denied (401/403 relayed).", kNotIndexed)                               \
  X(kAuthFailedTotal, "wsgate_auth_failed_total", kCounter,                                        \
    "Upgrades answered 503: the auth hook timed out or failed.", kNotIndexed)                      \
  X(kAuthRevalidationsTotal, "wsgate_auth_revalidations_total", kCounter,                          \
    "auth.revalidate_interval checks of live connections, by result.", kNotIndexed, "result")      \
  X(kAuthCacheHitsTotal, "wsgate_auth_cache_hits_total", kCounter,                                 \
    "Auth decisions served from auth.cache_ttl's cache.", kNotIndexed)                             \
  X(kClusterRedisUp, "wsgate_cluster_redis_up", kGauge,                                            \
    "1 while both Redis links (registry and subscriber) are up.", kNotIndexed)                     \
  X(kClusterRegistryWritesTotal, "wsgate_cluster_registry_writes_total", kCounter,                 \
    "Registry changes written to Redis, by operation.", kRegistryOpLabels, "op")                   \
  X(kClusterRegistryErrorsTotal, "wsgate_cluster_registry_errors_total", kCounter,                 \
    "Registry writes Redis refused or never answered (resynchronised on reconnect).", kNotIndexed) \
  X(kClusterForwardsTotal, "wsgate_cluster_forwards_total", kCounter,                              \
    "Connections API requests forwarded to the owning instance, by result.", kForwardResultLabels, \
    "result")                                                                                      \
  X(kClusterForwardSeconds, "wsgate_cluster_forward_seconds", kHistogram,                          \
    "Time from a forwarded request's lookup to the owner's answer.", kNotIndexed)                  \
  X(kClusterPublishesTotal, "wsgate_cluster_publishes_total", kCounter,                            \
    "User and tag operations published to the fleet, by result.", kForwardResultLabels, "result")  \
  X(kClusterUserChecksTotal, "wsgate_cluster_user_checks_total", kCounter,                         \
    "Fleet-wide max_connections_per_user checks, by result (unavailable: admitted unchecked).",    \
    kForwardResultLabels, "result")                                                                \
  X(kClusterFanoutReceivedTotal, "wsgate_cluster_fanout_received_total", kCounter,                 \
    "User and tag operations received from the fleet (this instance's own included).",             \
    kNotIndexed)                                                                                   \
  X(kClusterRedisCommandSeconds, "wsgate_cluster_redis_command_seconds", kHistogram,               \
    "Round-trip time of the Redis commands whose answer is waited for.", kNotIndexed)              \
  /* Process metrics (process_metrics.h): left out when /proc cannot be read. */                   \
  X(kProcessCpuSecondsTotal, "process_cpu_seconds_total", kCounter,                                \
    "Total user and system CPU time spent in seconds.", kNotIndexed)                               \
  X(kProcessOpenFds, "process_open_fds", kGauge, "Number of open file descriptors.", kNotIndexed)  \
  X(kProcessMaxFds, "process_max_fds", kGauge, "Maximum number of open file descriptors.",         \
    kNotIndexed)                                                                                   \
  X(kProcessVirtualMemoryBytes, "process_virtual_memory_bytes", kGauge,                            \
    "Virtual memory size in bytes.", kNotIndexed)                                                  \
  X(kProcessResidentMemoryBytes, "process_resident_memory_bytes", kGauge,                          \
    "Resident memory size in bytes.", kNotIndexed)                                                 \
  X(kProcessStartTimeSeconds, "process_start_time_seconds", kGauge,                                \
    "Start time of the process since unix epoch in seconds.", kNotIndexed)

#define WSGATE_FAMILY_ID(id, ...) id,
enum FamilyId { WSGATE_METRIC_FAMILIES(WSGATE_FAMILY_ID) kFamilies };
#undef WSGATE_FAMILY_ID

#define WSGATE_FAMILY_SPEC(id, name, type, help, index, ...) \
  Declare(name, Type::type, help, index __VA_OPT__(, ) __VA_ARGS__),
inline constexpr std::array<FamilySpec, kFamilies> kFamilySpecs = {
    WSGATE_METRIC_FAMILIES(WSGATE_FAMILY_SPEC)};
#undef WSGATE_FAMILY_SPEC

// An indexed family names the label its enum indexes.
constexpr bool IndexesHaveALabel() {
  for (const FamilySpec& spec : kFamilySpecs) {
    if (!spec.index.empty() && spec.label_count == 0) return false;
    if (spec.name.empty() || spec.help.empty()) return false;
  }
  return true;
}
static_assert(IndexesHaveALabel());

}  // namespace wsgate::metrics
