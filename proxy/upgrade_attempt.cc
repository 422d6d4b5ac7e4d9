#include "proxy/upgrade_attempt.h"

#include <cerrno>
#include <cstring>

#include "proxy/core/event_loop.h"
#include "proxy/core/log.h"
#include "proxy/http/extensions.h"
#include "proxy/sticky_balancer.h"
#include "proxy/tls/tls_context.h"
#include "proxy/upstream.h"

namespace wsgate {

// libevent trampolines: each returns at once once the attempt has stopped or reported.
struct UpgradeAttemptCallbacks {
  static void Read(bufferevent*, void* ctx) {
    auto* a = static_cast<UpgradeAttempt*>(ctx);
    if (!a->stopped()) a->OnRead();
  }
  static void Write(bufferevent*, void*) {}  // the request is small: no need to watch
  static void Event(bufferevent*, short what, void* ctx) {
    auto* a = static_cast<UpgradeAttempt*>(ctx);
    if (!a->stopped()) a->OnEvent(what);
  }
  static void ReadDirect(void* ctx) { Read(nullptr, ctx); }
  static void WriteDirect(void*) {}
  static void EventDirect(void* ctx, short what) { Event(nullptr, what, ctx); }
  static constexpr DirectSocket::Callbacks kDirect{&ReadDirect, &WriteDirect, &EventDirect};
  static void Timer(evutil_socket_t, short, void* ctx) {
    auto* a = static_cast<UpgradeAttempt*>(ctx);
    if (!a->stopped()) a->OnTimer();
  }
};

namespace {

http::HeadParser ResponseParser(const config::ProxyConfig& config) {
  return http::HeadParser(http::HeadKind::kResponse, UpgradeHeadLimitsFor(config));
}

}  // namespace

UpgradeAttempt::UpgradeAttempt(UpgradeAttemptOwner& owner, event_base* base,
                               const config::ProxyConfig& config, UpstreamAttempt& placement,
                               Endpoint& client, Endpoint& backend, BackendLease& lease,
                               std::string request, std::string expected_accept)
    : owner_(owner),
      base_(base),
      config_(config),
      placement_(placement),
      client_(client),
      backend_(backend),
      lease_(lease),
      request_(std::move(request)),
      expected_accept_(std::move(expected_accept)),
      response_parser_(ResponseParser(config)) {}

void UpgradeAttempt::Start() { TryNextBackend(); }

void UpgradeAttempt::Stop() {
  phase_ = Phase::kStopped;
  if (timer_) event_del(timer_.get());
}

void UpgradeAttempt::ArmTimer(config::Duration after) {
  if (!timer_) timer_.reset(evtimer_new(base_, &UpgradeAttemptCallbacks::Timer, this));
  if (!timer_) return;  // out of memory: the try is then bounded by TCP alone
  timeval tv = ToTimeval(after);
  evtimer_add(timer_.get(), &tv);
}

void UpgradeAttempt::TryNextBackend() {
  UpstreamRefusal refusal;
  lease_ = placement_.Next(&refusal);
  if (!lease_) {
    Report();
    owner_.OnUpgradeFailed(refusal.status, refusal.reason, refusal.extra_header);
    return;
  }
  response_parser_ = ResponseParser(config_);
  const tls::ClientContext* backend_tls = placement_.pool_tls();
  backend_.plain_tcp = backend_tls == nullptr;
  phase_ = Phase::kConnecting;
  if (backend_.plain_tcp) {
    ConnectDirect();
    return;
  }
  backend_.bev = StartConnect(base_, *lease_, backend_tls);
  if (!backend_.bev) {
    OnTryFailed(AttemptFailure::kNoSocket);
    return;
  }
  bufferevent_setcb(backend_.bev.get(), &UpgradeAttemptCallbacks::Read,
                    &UpgradeAttemptCallbacks::Write, &UpgradeAttemptCallbacks::Event, this);
  bufferevent_setwatermark(backend_.bev.get(), EV_READ, 0, config_.limits.max_header_bytes);
  bufferevent_enable(backend_.bev.get(), EV_READ);
  ArmTimer(config_.timeouts.connect);
}

void UpgradeAttempt::ConnectDirect() {
  DirectSocket& socket = backend_.direct;
  evutil_socket_t fd = StartConnectSocket(*lease_);
  if (fd < 0) {
    OnTryFailed(AttemptFailure::kConnectFailed, std::strerror(errno));
    return;
  }
  if (!socket.AdoptConnecting(base_, fd, &UpgradeAttemptCallbacks::kDirect, this)) {
    OnTryFailed(AttemptFailure::kOutOfMemory);
    return;
  }
  socket.SetReadLimit(config_.limits.max_header_bytes);
  socket.SetReading(true);
  owner_.OnUpgradeSending();
  // Written now rather than on EPOLLOUT: a nearby backend has usually accepted the connection
  // within connect() itself. If not, the bytes wait and success comes as BEV_EVENT_CONNECTED.
  backend_.Write(request_.data(), request_.size());
  if (socket.connecting()) {
    ArmTimer(config_.timeouts.connect);
    return;
  }
  OnConnected();
}

void UpgradeAttempt::OnConnected() {
  phase_ = Phase::kAwaitingResponse;
  if (backend_.bev) {  // a direct socket was sent the request already
    owner_.OnUpgradeSending();
    bufferevent_write(backend_.bev.get(), request_.data(), request_.size());
  }
  ArmTimer(config_.timeouts.backend_handshake);
}

void UpgradeAttempt::OnTryFailed(AttemptFailure failure, std::string_view detail) {
  placement_.Failed(*lease_, failure, owner_.ClientText(), detail);
  lease_.Release();
  backend_.Close();  // safe inside its own callback (libevent defers a bufferevent's free)
  TryNextBackend();
}

void UpgradeAttempt::OnTimer() {
  if (phase_ == Phase::kRelayingRefusal) {
    EndRelay("backend response stalled");
    return;
  }
  OnTryFailed(phase_ == Phase::kConnecting ? AttemptFailure::kConnectTimedOut
                                           : AttemptFailure::kUpgradeTimedOut);
}

void UpgradeAttempt::OnEvent(short what) {
  if ((what & BEV_EVENT_CONNECTED) != 0) {
    if (phase_ == Phase::kConnecting) OnConnected();
    return;
  }
  if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) == 0) return;
  if (phase_ == Phase::kRelayingRefusal) {
    RelayBody();
    // A close-delimited body ends here; any other is cut short, which the client sees.
    if (phase_ == Phase::kRelayingRefusal) EndRelay("");
    return;
  }
  if (phase_ == Phase::kAwaitingResponse) {
    OnTryFailed(AttemptFailure::kClosedBeforeResponse);
    return;
  }
  if (backend_.bev && tls::HandshakePending(backend_.bev.get())) {
    std::string detail;
    if (tls::HandshakeFailure(backend_.bev.get(), &detail) != metrics::kTlsClosed) {
      OnTryFailed(AttemptFailure::kTlsHandshake, detail);
      return;
    }
  }
  OnTryFailed(AttemptFailure::kConnectFailed);
}

void UpgradeAttempt::OnRead() {
  if (phase_ == Phase::kAwaitingResponse) {
    HandleResponseHead();
  } else if (phase_ == Phase::kRelayingRefusal) {
    RelayBody();
  }
}

void UpgradeAttempt::HandleResponseHead() {
  std::string_view buffered;
  std::string error;
  switch (ParseResponseHead(backend_.input(), 0, response_parser_, &buffered, &error)) {
    case http::ParseStatus::kNeedMore:
      return;
    case http::ParseStatus::kError:
      FailBadResponse(error);
      return;
    case http::ParseStatus::kComplete:
      break;
  }
  http::HeadView response(response_parser_, buffered);
  http::UpstreamVerdict verdict = http::CheckUpstreamResponse(response, expected_accept_);
  const auto compression = config_.limits.compression;
  const bool strip = compression == config::LimitsConfig::Compression::kStrip;
  const bool inspect = compression == config::LimitsConfig::Compression::kInspect;
  if (verdict.kind == http::UpstreamVerdict::kUpgraded &&
      ((strip && verdict.permessage_deflate) || ((strip || inspect) && verdict.deflate_frame))) {
    verdict.kind = http::UpstreamVerdict::kInvalidUpgrade;  // it was never offered
    verdict.reason =
        verdict.permessage_deflate && strip
            ? "101 accepts permessage-deflate, which wsgate did not offer"
            : "101 accepts " + verdict.deflate_frame_name + ", which wsgate did not offer";
  }
  if (verdict.kind == http::UpstreamVerdict::kInvalidUpgrade) {
    FailBadResponse(verdict.reason);
    return;
  }
  if (verdict.kind == http::UpstreamVerdict::kUpgraded) {
    placement_.ReportOutcome(*lease_, true);
    // Read before the head moves on: |response| views the backend's input.
    std::string subprotocol(response.Field("sec-websocket-protocol"));
    // pools[].migrate: the client compresses each message on its own, so any backend of the
    // pool can inflate what it sends after a move (RFC 7692 lets the answer require it).
    bool require_no_context = placement_.pool_config().migrate && verdict.permessage_deflate &&
                              !verdict.deflate.client_no_context_takeover &&
                              !verdict.other_extension;
    if (require_no_context) verdict.deflate.client_no_context_takeover = true;
    RelayUpgradedHead(require_no_context);
    Report();
    owner_.OnUpgradeAccepted(verdict, subprotocol);
    return;
  }
  // The answer ends where its framing says: a length, the last chunk, or the backend's close.
  http::Framing framing = http::ResponseFraming(response, /*request_was_head=*/false);
  if (framing.error != nullptr) {
    FailBadResponse(std::string("backend response framing: ") + framing.error);
    return;
  }
  placement_.ReportOutcome(*lease_, false);
  if (resuming_) {
    Report();
    owner_.OnUpgradeRefused(response_parser_.status_code(), verdict.reason);
    return;
  }
  StartRelay(response, framing);
  owner_.OnUpgradeRefused(response_parser_.status_code(), verdict.reason);
  if (phase_ == Phase::kRelayingRefusal) RelayBody();
}

void UpgradeAttempt::RelayUpgradedHead(bool require_no_context) {
  // The backend's head goes to the client unchanged, plus the sticky cookie (and, in a migrate
  // pool, client_no_context_takeover).
  evbuffer* input = backend_.input();
  evbuffer* client_output = client_.output();
  size_t head_length = response_parser_.head_length();
  if (resuming_) {
    evbuffer_drain(input, head_length);  // the client had its 101 long ago
    return;
  }
  std::string cookie = StickyCookieLine(placement_.pool_config(), *lease_);
  if (cookie.empty() && !require_no_context) {
    evbuffer_remove_buffer(input, client_output, head_length);
    return;
  }
  std::string head(head_length, '\0');
  evbuffer_remove(input, head.data(), head_length);
  if (require_no_context) head = http::RequireClientNoContextTakeover(head);
  head.insert(head.size() - 2, cookie);  // a whole field line, before the final CRLF
  evbuffer_add(client_output, head.data(), head.size());
}

void UpgradeAttempt::StartRelay(const http::HeadView& response, const http::Framing& framing) {
  phase_ = Phase::kRelayingRefusal;
  std::string head = http::BuildRelayedResponseHead(response);
  evbuffer_drain(backend_.input(), response_parser_.head_length());
  refusal_body_.Start(framing, ChunkLimitsFor(config_), /*dechunk=*/false);
  client_.Write(head.data(), head.size());
  backend_.SetReadLimit(config_.limits.write_buffer_high_watermark);
  ArmTimer(config_.timeouts.backend_handshake);
}

void UpgradeAttempt::RelayBody() {
  evbuffer* output = client_.output();
  uint64_t moved = 0;
  BodyRelay::Step step = BodyRelay::Step::kProgress;
  while (step == BodyRelay::Step::kProgress) {
    step = refusal_body_.Move(backend_.input(), output, &moved);
  }
  backend_.InputConsumed();
  if (step == BodyRelay::Step::kError) {
    // Part of the answer went out already: the client sees it cut short.
    EndRelay(std::string("backend chunked framing: ") + refusal_body_.error());
    return;
  }
  if (refusal_body_.done()) {
    EndRelay("");
    return;
  }
  if (moved > 0) ArmTimer(config_.timeouts.backend_handshake);
  if (evbuffer_get_length(output) >= config_.limits.write_buffer_high_watermark) {
    backend_.SetReading(false);
    relay_paused_ = true;
  }
}

void UpgradeAttempt::OnClientWritable() {
  if (phase_ != Phase::kRelayingRefusal || !relay_paused_ || !backend_.open() ||
      client_.output_length() >= config_.limits.write_buffer_high_watermark) {
    return;
  }
  relay_paused_ = false;
  backend_.SetReading(true);
  RelayBody();
}

void UpgradeAttempt::EndRelay(const std::string& cut_short) {
  Report();
  if (timer_) event_del(timer_.get());
  owner_.OnRefusalRelayed(cut_short);
}

void UpgradeAttempt::FailBadResponse(const std::string& reason) {
  // Garbage, a head over max_header_bytes and a 101 that fails its checks alike: the try
  // failed, for the metrics and for outlier ejection. Not retried: the request may have acted.
  placement_.BadResponse(*lease_);
  Report();
  owner_.OnUpgradeFailed(502, reason, "");
}

}  // namespace wsgate
