#include "proxy/connection_meters.h"

#include "proxy/client_handshake.h"
#include "proxy/tls/tls_context.h"

namespace wsgate {

namespace {

// wsgate_closes_total's initiator: the API, timeouts and the proxy itself all count as proxy.
metrics::Initiator InitiatorOf(ClosedBy closed_by) {
  switch (closed_by) {
    case ClosedBy::kClient:
      return metrics::kByClient;
    case ClosedBy::kBackend:
      return metrics::kByBackend;
    case ClosedBy::kUndecided:
    case ClosedBy::kProxy:
    case ClosedBy::kApi:
    case ClosedBy::kTimeout:
      break;
  }
  return metrics::kByProxy;
}

}  // namespace

void ConnectionMeters::CountHandshake(metrics::HandshakeResult result) {
  if (handshake_counted_) return;
  handshake_counted_ = true;
  metrics_.Listener(listener_).handshakes[result].Add();
}

void ConnectionMeters::CountRefusal(int status) {
  CountHandshake(refusal_override_ != metrics::kHandshakeResults ? refusal_override_
                                                                 : HandshakeResultFor(status));
}

void ConnectionMeters::TlsHandshakeDone(bufferevent* bev) {
  metrics::TlsVersion version{};
  bool resumed = false;
  tls::HandshakeDetails(bev, &version, &resumed);
  metrics_.Listener(listener_).tls_handshakes[version][resumed ? 1 : 0].Add();
}

void ConnectionMeters::TlsHandshakeFailed(metrics::TlsFailure failure) {
  CountHandshake(metrics::kTlsFailed);
  metrics_.Listener(listener_).tls_handshake_failures[failure].Add();
}

metrics::PoolMetrics& ConnectionMeters::Upgraded(const std::string& pool,
                                                 const std::string& backend,
                                                 std::chrono::steady_clock::time_point started_at) {
  CountHandshake(metrics::kUpgraded);
  pool_ = &metrics_.Pool(pool);
  pool_->handshake_duration.Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at).count());
  connections_ = &metrics_.Connections(listener_, pool, backend);
  connections_->active.Add(1);
  connections_->total.Add();
  return *pool_;
}

void ConnectionMeters::CountMove(metrics::MigrationReason reason, metrics::MigrationResult result) {
  if (pool_ != nullptr) pool_->migrations[reason][result].Add();
}

void ConnectionMeters::Moved(const std::string& pool, const std::string& backend,
                             std::chrono::steady_clock::duration pause) {
  if (pool_ == nullptr) return;
  pool_->migration_pause.Observe(std::chrono::duration<double>(pause).count());
  connections_->active.Add(-1);
  connections_ = &metrics_.Connections(listener_, pool, backend);
  connections_->active.Add(1);
}

void ConnectionMeters::Finished(const AccessRecord& record) {
  if (connections_ == nullptr) return;
  connections_->active.Add(-1);
  pool_->connection_duration.Observe(record.duration_seconds);
  pool_->closes[InitiatorOf(record.closed_by)][metrics::CloseCodeSlot(record.close_code)].Add();
}

}  // namespace wsgate
