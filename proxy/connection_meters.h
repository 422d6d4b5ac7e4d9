// The metrics one client connection feeds. Blocks are resolved once per connection, so the
// per-frame path never looks a name up; the handshake is counted exactly once, by its first
// outcome.
#pragma once

#include <event2/bufferevent.h>

#include <chrono>
#include <string>

#include "metrics/metrics.h"
#include "proxy/access_log.h"

namespace wsgate {

class ConnectionMeters {
 public:
  // |listener| must outlive the meters (the session's own copy of the name).
  ConnectionMeters(metrics::Registry& metrics, const std::string& listener)
      : metrics_(metrics), listener_(listener) {}

  // wsgate_handshakes_total: the first call wins.
  void CountHandshake(metrics::HandshakeResult result);
  // A refusal answered with |status|, counted by its status unless OverrideRefusal named the
  // result (a connection refused before it was read, e.g. over max_connections).
  void CountRefusal(int status);
  void OverrideRefusal(metrics::HandshakeResult result) { refusal_override_ = result; }

  // A client's TLS handshake: completed (version, resumed) on |bev|, or failed.
  void TlsHandshakeDone(bufferevent* bev);
  void TlsHandshakeFailed(metrics::TlsFailure failure);

  // The upgrade succeeded on |backend| of |pool|: counts the handshake, its duration since
  // |started_at| and the connection as active. Returns the pool's block for the tunnel.
  metrics::PoolMetrics& Upgraded(const std::string& pool, const std::string& backend,
                                 std::chrono::steady_clock::time_point started_at);
  // A move to another backend (pools[].migrate) ended with |result|.
  void CountMove(metrics::MigrationReason reason, metrics::MigrationResult result);
  // It moved: now active on |backend| of |pool|, after holding the client's messages |pause|.
  void Moved(const std::string& pool, const std::string& backend,
             std::chrono::steady_clock::duration pause);
  // The connection ended: no longer active, its duration, and its close by initiator and code.
  // Nothing for a connection that never upgraded.
  void Finished(const AccessRecord& record);

 private:
  metrics::Registry& metrics_;
  const std::string& listener_;
  bool handshake_counted_ = false;
  metrics::HandshakeResult refusal_override_ = metrics::kHandshakeResults;  // none
  metrics::PoolMetrics* pool_ = nullptr;                                    // once upgraded
  metrics::ConnectionMetrics* connections_ = nullptr;
};

}  // namespace wsgate
