#include "proxy/session.h"

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "proxy/client_handshake.h"
#include "proxy/core/event_loop.h"
#include "proxy/core/log.h"
#include "proxy/http/handshake.h"
#include "proxy/trusted_peer.h"
#include "proxy/upgrade_attempt.h"
#include "proxy/upstream.h"

namespace wsgate {

Session& SessionRegistry::Add(SessionPtr session) {
  sessions_.push_front(std::move(session));
  Session& added = *sessions_.front();
  added.self_ = sessions_.begin();
  size_.store(sessions_.size(), std::memory_order_relaxed);
  return added;
}

SessionPtr SessionRegistry::Release(Session& session) {
  SessionPtr owned = std::move(*session.self_);
  sessions_.erase(session.self_);
  size_.store(sessions_.size(), std::memory_order_relaxed);
  return owned;
}

// libevent trampolines: each returns at once if the session already finished (its deletion is
// queued), and never deletes anything itself.
struct SessionCallbacks {
  static void ClientRead(bufferevent*, void* ctx) {
    auto* s = static_cast<Session*>(ctx);
    if (!s->finished()) s->OnClientRead();
  }
  static void ClientWrite(bufferevent*, void* ctx) {
    auto* s = static_cast<Session*>(ctx);
    if (!s->finished()) s->OnClientWritable();
  }
  static void ClientEvent(bufferevent*, short what, void* ctx) {
    auto* s = static_cast<Session*>(ctx);
    if (!s->finished()) s->OnClientEvent(what);
  }
  static void Timer(evutil_socket_t, short, void* ctx) {
    auto* s = static_cast<Session*>(ctx);
    if (!s->finished()) s->OnTimer();
  }
};

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

Session::Session(SessionContext& context, evutil_socket_t fd, const sockaddr* peer,
                 std::string listener_name)
    : context_(context),
      runtime_(context.current),
      id_(NewConnectionId()),
      listener_name_(std::move(listener_name)),
      handshake_(std::make_unique<Handshake>(context.current->config)),
      upstream_("session", *runtime_, context.metrics),
      started_at_(std::chrono::steady_clock::now()) {
  std::memcpy(&peer_, peer,
              peer->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
  // TCP_NODELAY is already set: the listener's, inherited (Listener::SetListenerNoDelay).
  if (const tls::ServerContext* tls = runtime_->ListenerTls(listener_name_)) {
    client_tls_ = true;
    client_.plain_tcp = false;
    client_.bev = tls->Accept(context_.loop.base(), fd);  // closes |fd| if it fails
  } else {
    client_.bev.reset(bufferevent_socket_new(context_.loop.base(), fd,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS));
    if (!client_.bev) evutil_closesocket(fd);
  }
  timer_.reset(evtimer_new(context_.loop.base(), &SessionCallbacks::Timer, this));
}

Session::~Session() = default;

std::string Session::peer_text() const {
  return FormatSockaddr(reinterpret_cast<const sockaddr*>(&peer_));
}

void Session::Start() {
  if (!client_.bev || !timer_) {
    Finish(ClosedBy::kProxy);
    return;
  }
  bufferevent_setcb(client_.bev.get(), &SessionCallbacks::ClientRead,
                    &SessionCallbacks::ClientWrite, &SessionCallbacks::ClientEvent, this);
  // Read at most one head's worth before the parser has judged it.
  bufferevent_setwatermark(client_.bev.get(), EV_READ, 0, config().limits.max_header_bytes);
  bufferevent_enable(client_.bev.get(), EV_READ);
  ArmTimer(config().timeouts.handshake);
}

void Session::StartRejected(int status, const std::string& reason, const std::string& extra_header,
                            metrics::HandshakeResult result) {
  reject_result_ = result;
  if (!client_.bev || !timer_) {
    Finish(ClosedBy::kProxy);
    return;
  }
  bufferevent_setcb(client_.bev.get(), &SessionCallbacks::ClientRead,
                    &SessionCallbacks::ClientWrite, &SessionCallbacks::ClientEvent, this);
  Reject(status, reason, extra_header);
}

// ---------------------------------------------------------------------------------------------
// Handshake: client side.

void Session::OnClientRead() {
  evbuffer* input = client_.input();
  switch (state_) {
    case State::kReadingRequest:
      HandleRequestHead();
      return;
    case State::kLingering:
      evbuffer_drain(input, evbuffer_get_length(input));
      return;
    case State::kAuthorizing:
    case State::kUpstream:
      return;  // bytes after the head wait until the backend has accepted the upgrade
    case State::kRelayingResponse:
      // The backend refused the upgrade: nothing the client sends may reach it.
      evbuffer_drain(input, evbuffer_get_length(input));
      return;
    case State::kSpliced:  // the tunnel reads from here on
      return;
    case State::kHttp:
      http_->OnClientRead();
      return;
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
      Reject(head.status, head.reason, head.extra_header);
      return;
    case HeadJudgement::kPlainHttp:
      StartHttp();
      return;
    case HeadJudgement::kUpgrade:
      break;
  }
  path_ = std::move(head.plan.path);
  handshake_->upstream_request = std::move(head.plan.upstream_request);
  handshake_->expected_accept = std::move(head.plan.expected_accept);
  if (head.plan.authorize) {
    StartAuth(std::move(head.plan.auth_headers), std::move(head.plan.auth_cache_key));
    return;
  }
  ConnectUpstream();
}

void Session::OnTlsHandshakeFailed(metrics::TlsFailure failure, const std::string& detail) {
  // Scanners make these constantly: counted, logged at debug only, and nothing answered.
  CountHandshake(metrics::kTlsFailed);
  context_.metrics.Listener(listener_name_).tls_handshake_failures[failure].Add();
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
  bufferevent_setwatermark(client_.bev.get(), EV_READ, 0, config().limits.max_header_bytes);
  bufferevent_enable(client_.bev.get(), EV_READ);
  ArmTimer(config().timeouts.handshake);
  HandleRequestHead();
}

void Session::OnHttpEnd(bool linger, ClosedBy closed_by) {
  if (linger) {
    BeginLingeringClose();
  } else {
    Finish(closed_by);
  }
}

void Session::CountHandshake(metrics::HandshakeResult result) {
  if (handshake_counted_) return;
  handshake_counted_ = true;
  context_.metrics.Listener(listener_name_).handshakes[result].Add();
}

void Session::Reject(int status, const std::string& reason, const std::string& extra_header) {
  CountHandshake(reject_result_ != metrics::kHandshakeResults ? reject_result_
                                                              : HandshakeResultFor(status));
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
  // Keep reading (and dropping) until the answer is flushed and the client closes, so unread
  // input never turns our close into a reset that destroys the answer in flight.
  state_ = State::kLingering;
  DropBackend();
  evbuffer* input = bufferevent_get_input(client_.bev.get());
  evbuffer_drain(input, evbuffer_get_length(input));
  bufferevent_setwatermark(client_.bev.get(), EV_READ, 0, 0);
  bufferevent_enable(client_.bev.get(), EV_READ);
  client_.CloseAfterFlush(/*linger=*/true);
  if (client_.output_length() == 0) OnClientWritable();
  if (finished()) return;
  ArmTimer(std::min(config().timeouts.close, config::Duration(std::chrono::seconds(2))));
}

void Session::OnClientEvent(short what) {
  if ((what & BEV_EVENT_CONNECTED) != 0 && client_tls_) {  // the TLS handshake completed
    metrics::TlsVersion version{};
    bool resumed = false;
    tls::HandshakeDetails(client_.bev.get(), &version, &resumed);
    context_.metrics.Listener(listener_name_).tls_handshakes[version][resumed ? 1 : 0].Add();
  }
  if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) == 0) return;
  switch (state_) {
    case State::kSpliced:  // the tunnel's
      return;
    case State::kReadingRequest:
      if (client_tls_ && tls::HandshakePending(client_.bev.get())) {
        std::string detail;
        bool plain_http = false;
        metrics::TlsFailure failure =
            tls::HandshakeFailure(client_.bev.get(), &detail, &plain_http);
        if (plain_http) {
          static const std::string kPlainHttp = http::BuildErrorResponse(
              400, "plain HTTP sent to a TLS port: use wss:// or https://", "");
          tls::AnswerPlaintext(client_.bev.get(), kPlainHttp);
        }
        OnTlsHandshakeFailed(failure, detail);
        return;
      }
      reason_ = "client closed before sending a complete request";
      Finish(ClosedBy::kClient);
      return;
    case State::kLingering:
      if ((what & BEV_EVENT_EOF) != 0 && client_.flushing_to_close() &&
          client_.output_length() != 0) {
        // The client only half-closed: its answer still goes out, then the socket closes
        // (nothing is left to read, so no lingering after the flush).
        client_.SkipLinger();
        client_.SetReading(false);
        return;
      }
      Finish(ClosedBy::kProxy);
      return;
    case State::kHttp:
      http_->OnClientEvent(what);
      return;
    default:
      reason_ = "client closed during the upstream handshake";
      Finish(ClosedBy::kClient);
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// Upstream: connect, retry, check the 101.

void Session::ConnectUpstream() {
  state_ = State::kUpstream;
  if (timer_) event_del(timer_.get());  // the attempt times each try
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
  CountHandshake(metrics::kBackendRejected);
  http_status_ = status;
  reason_ = reason;
  state_ = State::kRelayingResponse;
  evbuffer* client_input = client_.input();
  evbuffer_drain(client_input, evbuffer_get_length(client_input));
}

void Session::OnRefusalRelayed(const std::string& cut_short) {
  if (cut_short.empty()) {
    BeginLingeringClose();
    return;
  }
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
  CountHandshake(metrics::kUpgraded);
  pool_metrics_ = &context_.metrics.Pool(pool().name);
  pool_metrics_->handshake_duration.Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at_).count());
  connection_metrics_ =
      &context_.metrics.Connections(listener_name_, pool().name, chosen_backend_->address);
  connection_metrics_->active.Add(1);
  connection_metrics_->total.Add();
  tunnel_ = std::make_unique<Tunnel>(static_cast<TunnelOwner&>(*this), context_.loop.base(),
                                     config(), client_, backend_, negotiated);
  // Long-lived connections hold none of the handshake; deferred, as its attempt is on the stack.
  context_.loop.DeferDelete(std::move(handshake_));
  RegisterConnection();  // again: now with the subprotocol
  tunnel_->Start(config().metrics.enabled ? pool_metrics_ : nullptr, std::move(pushes));
}

void Session::OnTunnelEnded() { Finish(tunnel_->close().by); }

void Session::GoAway(uint16_t code, const std::string& reason) {
  if (finished() || going_away_) return;
  going_away_ = true;
  switch (state_) {
    case State::kReadingRequest:
    case State::kAuthorizing:
    case State::kUpstream:
      Reject(503, reason, "Retry-After: 1\r\n");
      return;
    case State::kHttp:
      http_->Drain();  // the request in flight is answered, then the connection closes
      return;
    case State::kRelayingResponse:
    case State::kLingering:
    case State::kFinished:
      return;  // already ending
    case State::kSpliced:
      tunnel_->GoAway(code, reason);
      return;
  }
}

void Session::OnClientWritable() {
  Endpoint& e = client_;
  if (!e.open()) return;
  if (state_ == State::kHttp) {
    http_->OnClientWritable();
    return;
  }
  if (e.flushing_to_close()) {
    if (e.ContinueEnding() == Endpoint::FlushStep::kClosed && !client_.open() && !backend_.open()) {
      Finish(ClosedBy::kProxy);
    }
    return;
  }
  // A refused upgrade's answer, paused while the client's output was full.
  if (state_ == State::kRelayingResponse) handshake_->attempt->OnClientWritable();
}

// ---------------------------------------------------------------------------------------------
// Timers and teardown.

void Session::ArmTimer(config::Duration after) {
  if (!timer_) {
    timer_.reset(evtimer_new(context_.loop.base(), &SessionCallbacks::Timer, this));
    if (!timer_) {
      LOG_WARN("session client=" + peer_text() + " out of memory for a timer");
      return;  // the connection is then bounded by TCP alone
    }
  }
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
      Reject(408, "request head not received in time");
      return;
    case State::kLingering:
      Finish(ClosedBy::kProxy);
      return;
    case State::kAuthorizing:
      // A safety net: the auth request's own timeout normally answers first.
      context_.connections->index()->hook_counters().auth_failed.fetch_add(1);
      Reject(503, "the auth service did not answer in time", "Retry-After: 1\r\n");
      return;
    case State::kUpstream:  // the attempt times each try and the answer it relays
    case State::kRelayingResponse:
      return;
    case State::kSpliced:  // the tunnel has its own timers
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
  if (tunnel_) {
    // Pushes reach the client like backend messages do, so they count in the *_out figures (and
    // on their own in messages_pushed); the on_disconnect hook reports the same record.
    r.bytes_in = tunnel_->bytes_from_client();
    r.bytes_out = tunnel_->bytes_to_client();
    r.messages_in = tunnel_->messages_from_client();
    r.messages_out = tunnel_->messages_to_client();
    r.messages_pushed = tunnel_->pushes().messages();
    const CloseDecision& close = tunnel_->close();
    r.close_code = close.code;
    r.closed_by = close.by != ClosedBy::kUndecided ? close.by : closed_by_;
    r.reason = close.reason;
  } else {
    if (handshake_) {  // queued during the upgrade, then dropped with it
      r.bytes_out = handshake_->pushes.bytes();
      r.messages_out = r.messages_pushed = handshake_->pushes.messages();
    }
    r.closed_by = closed_by_;
    r.reason = reason_;
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
  DropBackend();
  client_.Close();
  if (timer_) event_del(timer_.get());

  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at_).count();
  if (connection_metrics_ != nullptr) {
    connection_metrics_->active.Add(-1);
    pool_metrics_->connection_duration.Observe(seconds);
  }
  AccessRecord record = MakeAccessRecord(false);
  if (connection_metrics_ != nullptr) {
    pool_metrics_->closes[InitiatorOf(record.closed_by)][metrics::CloseCodeSlot(record.close_code)]
        .Add();
  }
  if (http_status_ == 101 && context_.connections != nullptr) NotifyDisconnect(record);
  UnregisterConnection();
  if (access_line_ && !served_http_) context_.access_log.Write(record);

  context_.loop.DeferDelete(context_.registry.Release(*this));
}

}  // namespace wsgate
