#include "proxy/session.h"

#include <sys/socket.h>

#include <cstring>

#include "proxy/client_handshake.h"
#include "proxy/core/event_loop.h"
#include "proxy/core/guarded_callback.h"
#include "proxy/core/log.h"
#include "proxy/http/handshake.h"
#include "proxy/trusted_peer.h"
#include "proxy/upgrade_attempt.h"
#include "proxy/upstream.h"

namespace wsgate {

Session::Session(SessionContext& context, evutil_socket_t fd, const sockaddr* peer,
                 std::string listener_name)
    : context_(context),
      runtime_(context.current),
      id_(NewConnectionId()),
      listener_name_(std::move(listener_name)),
      handshake_(std::make_unique<Handshake>(context.current->config)),
      upstream_("session", *runtime_, context.metrics),
      started_at_(std::chrono::steady_clock::now()),
      meters_(context.metrics, listener_name_) {
  std::memcpy(&peer_, peer,
              peer->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
  // TCP_NODELAY is already set: the listener's, inherited (Listener::SetListenerNoDelay).
  const tls::ServerContext* tls = runtime_->ListenerTls(listener_name_);
  client_tls_ = tls != nullptr;
  client_.AcceptClient(context_.loop.base(), fd, tls);
  timer_.reset(evtimer_new(context_.loop.base(), &Guarded<&Session::OnTimer>::OnTimer, this));
}

Session::~Session() = default;

std::string Session::peer_text() const {
  return FormatSockaddr(reinterpret_cast<const sockaddr*>(&peer_));
}

bool Session::Attach() {
  if (!client_.bev || !timer_) {
    Finish(ClosedBy::kProxy);
    return false;
  }
  bufferevent_setcb(client_.bev.get(), &Guarded<&Session::OnClientRead>::OnBufferevent,
                    &Guarded<&Session::OnClientWritable>::OnBufferevent,
                    &Guarded<&Session::OnClientEvent>::OnBuffereventEvent, this);
  return true;
}

void Session::Start() {
  if (Attach()) ReadRequestHead();
}

void Session::ReadRequestHead() {
  // Read at most one head's worth before the parser has judged it.
  client_.SetReadLimit(config().limits.max_header_bytes);
  client_.SetReading(true);
  ArmTimer(config().timeouts.handshake);
}

void Session::StartRejected(int status, const std::string& reason, const std::string& extra_header,
                            metrics::HandshakeResult result) {
  meters_.OverrideRefusal(result);
  if (Attach()) Reject(status, reason, extra_header);
}

// ---------------------------------------------------------------------------------------------
// Handshake: client side.

void Session::OnClientRead() {
  switch (state_) {
    case State::kReadingRequest:
      return HandleRequestHead();
    case State::kLingering:
      return lingering_->OnRead();
    case State::kRelayingResponse:
      // The backend refused the upgrade: nothing the client sends may reach it.
      return (void)evbuffer_drain(client_.input(), evbuffer_get_length(client_.input()));
    case State::kHttp:
      return http_->OnClientRead();
    case State::kAuthorizing:  // bytes after the head wait until the backend accepts the upgrade
    case State::kUpstream:
    case State::kSpliced:  // the tunnel reads from here on
    case State::kFinished:
      return;
  }
}

void Session::HandleRequestHead() {
  ConnectionIndex* index = context_.connections ? context_.connections->index() : nullptr;
  std::string callback_base = index && config().admin.enabled ? index->public_url() : "";
  UpgradeClient who{id_, reinterpret_cast<const sockaddr*>(&peer_), client_tls_, callback_base,
                    index != nullptr};
  HeadJudgement head = handshake_->request.Read(client_.input(), config(), who, upstream_);
  switch (head.outcome) {
    case HeadJudgement::kNeedMore:
      return;
    case HeadJudgement::kRefused:
      return Reject(head.status, head.reason, head.extra_header);
    case HeadJudgement::kPlainHttp:
      return StartHttp();
    case HeadJudgement::kUpgrade:
      break;
  }
  path_ = std::move(head.plan.path);
  handshake_->upstream_request = std::move(head.plan.upstream_request);
  handshake_->expected_accept = std::move(head.plan.expected_accept);
  if (!head.plan.authorize) return ConnectUpstream();
  StartAuth(head.plan.auth_headers, std::move(head.plan.auth_cache_key));
}

void Session::OnTlsHandshakeFailed(metrics::TlsFailure failure, const std::string& detail) {
  // Scanners make these constantly: counted, logged at debug only, and nothing answered.
  meters_.TlsHandshakeFailed(failure);
  LOG_DEBUG("session client=" + peer_text() + " listener=" + listener_name_ +
            " TLS handshake failed: " + detail);
  reason_ = "TLS handshake failed: " + detail;
  access_line_ = false;
  Finish(ClosedBy::kClient);
}

void Session::StartHttp() {
  state_ = State::kHttp;
  served_http_ = true;
  event_del(timer_.get());  // the forwarder times its own requests
  // A keep-alive HTTP connection is no handshake in progress; timeouts.request bounds each request.
  context_.admission.EndHandshake(admission_);
  if (!http_) {
    http_ = std::make_unique<HttpForwarder>(
        context_, runtime_, *this, client_.bev.get(),
        HttpClientInfo{
            id_, peer_text(), FormatIp(reinterpret_cast<const sockaddr*>(&peer_)), listener_name_,
            client_tls_,
            IsTrustedPeer(config().trusted_proxies, reinterpret_cast<const sockaddr*>(&peer_))});
  }
  http_->Start(started_at_);
}

void Session::OnUpgradeRequest() {
  // A WebSocket upgrade after plain requests on the same connection: the usual path from here.
  served_http_ = false;
  state_ = State::kReadingRequest;
  handshake_->request.Reset(config());
  ReadRequestHead();
  HandleRequestHead();
}

void Session::OnHttpEnd(bool linger, ClosedBy closed_by) {
  if (linger) return BeginLingeringClose();
  Finish(closed_by);
}

void Session::Reject(int status, const std::string& reason, const std::string& extra_header) {
  meters_.CountRefusal(status);
  http_status_ = status;
  reason_ = reason;
  DropBackend();
  LOG_DEBUG("session client=" + peer_text() + " rejected status=" + std::to_string(status) +
            " reason=" + log::Quoted(reason));
  std::string response = http::BuildErrorResponse(status, reason, extra_header);
  bufferevent_write(client_.bev.get(), response.data(), response.size());
  BeginLingeringClose();
}

void Session::BeginLingeringClose() {
  state_ = State::kLingering;
  DropBackend();
  if (timer_) event_del(timer_.get());  // the lingering close has its own
  lingering_ = std::make_unique<LingeringClose>(static_cast<LingeringCloseOwner&>(*this), client_);
  lingering_->Start(context_.loop.base(),
                    std::min(config().timeouts.close, config::Duration(std::chrono::seconds(2))));
}

void Session::OnClientEvent(short what) {
  if ((what & BEV_EVENT_CONNECTED) != 0 && client_tls_) meters_.TlsHandshakeDone(client_.bev.get());
  if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) == 0) return;
  switch (state_) {
    case State::kSpliced:  // the tunnel's
      return;
    case State::kReadingRequest:
      if (client_tls_ && tls::HandshakePending(client_.bev.get())) {
        static const std::string kPlainHttp = http::BuildErrorResponse(
            400, "plain HTTP sent to a TLS port: use wss:// or https://", "");
        std::string detail;
        metrics::TlsFailure failure = tls::HandshakeFailure(client_.bev.get(), &detail, kPlainHttp);
        return OnTlsHandshakeFailed(failure, detail);
      }
      reason_ = "client closed before sending a complete request";
      return Finish(ClosedBy::kClient);
    case State::kLingering:
      return lingering_->OnEvent(what);
    case State::kHttp:
      return http_->OnClientEvent(what);
    default:
      reason_ = "client closed during the upstream handshake";
      return Finish(ClosedBy::kClient);
  }
}

// ---------------------------------------------------------------------------------------------
// Upstream: connect, retry, check the 101.

void Session::ConnectUpstream() {
  state_ = State::kUpstream;
  if (timer_) event_del(timer_.get());  // the attempt times each try
  if (pool_config().migrate) {
    handshake_->resume_request = handshake_->upstream_request;
    handshake_->resume_accept = handshake_->expected_accept;
  }
  handshake_->attempt = std::make_unique<UpgradeAttempt>(
      static_cast<UpgradeAttemptOwner&>(*this), context_.loop.base(), config(), upstream_, client_,
      backend_, chosen_backend_, std::move(handshake_->upstream_request),
      std::move(handshake_->expected_accept));
  handshake_->attempt->Start();
}

void Session::OnUpgradeSending() {
  RegisterConnection();  // before the backend can read its callback URL: a push must find us
}

void Session::OnUpgradeFailed(int status, const std::string& reason,
                              const std::string& extra_header) {
  Reject(status, reason, extra_header);
}

void Session::OnUpgradeRefused(int status, const std::string& reason) {
  meters_.CountHandshake(metrics::kBackendRejected);
  http_status_ = status;
  reason_ = reason;
  state_ = State::kRelayingResponse;
  evbuffer_drain(client_.input(), evbuffer_get_length(client_.input()));
}

void Session::OnRefusalRelayed(const std::string& cut_short) {
  if (cut_short.empty()) return BeginLingeringClose();
  reason_ = cut_short;
  Finish(ClosedBy::kBackend);
}

void Session::OnUpgradeAccepted(const http::UpstreamVerdict& verdict,
                                const std::string& subprotocol) {
  http_status_ = 101;
  subprotocol_ = subprotocol;
  StartTunnel(verdict);
}

void Session::StartTunnel(const http::UpstreamVerdict& negotiated) {
  state_ = State::kSpliced;
  event_del(timer_.get());
  timer_.reset();  // the tunnel times itself; long-lived connections hold only what it needs
  context_.admission.EndHandshake(admission_);
  upstream_.EndTries();
  PushQueue pushes = std::move(handshake_->pushes);
  LOG_DEBUG("session client=" + peer_text() + " upgraded backend=" + chosen_backend_->address);
  metrics::PoolMetrics& pool_metrics =
      meters_.Upgraded(pool().name, chosen_backend_->address, started_at_);
  tunnel_ = std::make_unique<Tunnel>(static_cast<TunnelOwner&>(*this), context_.loop.base(),
                                     config(), client_, backend_, negotiated);
  if (pool_config().migrate) KeepForMoves(negotiated);
  // Long-lived connections hold none of the handshake; deferred, as its attempt is on the stack.
  context_.loop.DeferDelete(std::move(handshake_));
  RegisterConnection();  // again: now with the subprotocol
  tunnel_->Start(config().metrics.enabled ? &pool_metrics : nullptr, std::move(pushes));
}

void Session::OnTunnelEnded() { Finish(tunnel_->close().by); }

void Session::GoAway(uint16_t code, const std::string& reason) {
  if (finished() || going_away_) return;
  going_away_ = true;
  switch (state_) {
    case State::kReadingRequest:
    case State::kAuthorizing:
    case State::kUpstream:
      return Reject(503, reason, "Retry-After: 1\r\n");
    case State::kHttp:
      http_->Drain();  // the request in flight is answered, then the connection closes
      return;
    case State::kRelayingResponse:
    case State::kLingering:
    case State::kFinished:
      return;  // already ending
    case State::kSpliced:
      return tunnel_->GoAway(code, reason);
  }
}

void Session::OnClientWritable() {
  if (!client_.open()) return;
  if (state_ == State::kHttp) http_->OnClientWritable();
  if (state_ == State::kLingering) lingering_->OnWritable();
  // A refused upgrade's answer, paused while the client's output was full.
  if (state_ == State::kRelayingResponse) handshake_->attempt->OnClientWritable();
}

// ---------------------------------------------------------------------------------------------
// Timers and teardown.

void Session::ArmTimer(config::Duration after) {
  timeval tv = ToTimeval(after);
  evtimer_add(timer_.get(), &tv);
}

void Session::OnTimer() {
  switch (state_) {
    case State::kReadingRequest:
      if (client_tls_ && tls::HandshakePending(client_.bev.get())) {
        OnTlsHandshakeFailed(metrics::kTlsTimeout, "not finished within timeouts.handshake");
        return;
      }
      return Reject(408, "request head not received in time");
    case State::kAuthorizing:
      // A safety net: the auth request's own timeout normally answers first.
      context_.connections->index()->hook_counters().auth_failed.fetch_add(1);
      return Reject(503, "the auth service did not answer in time", "Retry-After: 1\r\n");
    case State::kUpstream:          // the attempt times each try and the answer it relays,
    case State::kRelayingResponse:  // the tunnel its frames, the forwarder its requests,
    case State::kLingering:         // the lingering close its wait
    case State::kSpliced:
    case State::kHttp:
    case State::kFinished:
      return;
  }
}

AccessRecord Session::MakeAccessRecord(bool interim) const {
  AccessRecord r;
  r.interim = interim;
  r.connection_id = id_;
  r.client = peer_text();
  r.listener = listener_name_;
  r.route = upstream_.route_index() >= 0 ? std::to_string(upstream_.route_index()) : "";
  r.pool = upstream_.placed() ? upstream_.pool().name : "";
  r.backend = chosen_backend_ ? chosen_backend_->address : last_backend_;
  r.path = path_;
  r.subprotocol = subprotocol_;
  r.status = http_status_;
  r.duration_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at_).count();
  r.closed_by = closed_by_;
  r.reason = reason_;
  if (resume_) r.moves = resume_->moves;
  if (tunnel_) {
    tunnel_->Describe(r);
  } else if (handshake_) {  // pushes queued during the upgrade, then dropped with it
    handshake_->pushes.Describe(r);
  }
  return r;
}

void Session::MaybeLogInterim(std::chrono::steady_clock::duration interval) {
  auto now = std::chrono::steady_clock::now();
  if (state_ != State::kSpliced || tunnel_->closing()) return;
  if (last_access_line_ == std::chrono::steady_clock::time_point{}) last_access_line_ = started_at_;
  if (now - last_access_line_ < interval) return;
  last_access_line_ = now;
  context_.access_log.Write(MakeAccessRecord(true));
}

void Session::DropBackend() {
  if (handshake_ && handshake_->attempt) handshake_->attempt->Stop();
  backend_.Close();
  if (resume_) resume_->other.Close();
  if (!chosen_backend_) return;
  last_backend_ = chosen_backend_->address;
  chosen_backend_.Release();
}

void Session::Finish(ClosedBy closed_by) {
  if (state_ == State::kFinished) return;
  if (closed_by_ == ClosedBy::kUndecided) closed_by_ = closed_by;
  state_ = State::kFinished;
  context_.admission.Release(admission_, reinterpret_cast<const sockaddr*>(&peer_));
  if (http_) http_->Stop();
  if (tunnel_) tunnel_->Stop();
  if (lingering_) lingering_->Stop();
  if (moving()) EndMove(metrics::kMoveAborted);
  DropBackend();
  client_.Close();
  if (timer_) event_del(timer_.get());

  AccessRecord record = MakeAccessRecord(false);
  meters_.Finished(record);
  if (http_status_ == 101 && context_.connections != nullptr) NotifyDisconnect(record);
  UnregisterConnection();
  ReleaseUser();
  if (access_line_ && !served_http_) context_.access_log.Write(record);

  context_.loop.DeferDelete(context_.registry.Release(*this));
}

}  // namespace wsgate
