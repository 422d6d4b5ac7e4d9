#include "proxy/http_exchange.h"

#include <algorithm>

#include "proxy/core/event_loop.h"
#include "proxy/core/log.h"
#include "proxy/http/handshake.h"
#include "proxy/http/request_target.h"
#include "proxy/session_context.h"
#include "proxy/sticky_balancer.h"
#include "proxy/upstream.h"

namespace wsgate {

// libevent trampolines: nothing runs once the forwarder stopped (the session ended or took the
// connection back for a WebSocket); the forwarder itself is freed only with its session.
struct HttpForwarderCallbacks {
  static bool Live(void* ctx) {
    return static_cast<HttpForwarder*>(ctx)->phase_ != HttpForwarder::Phase::kStopped;
  }
  static void BackendRead(bufferevent*, void* ctx) {
    if (Live(ctx)) static_cast<HttpForwarder*>(ctx)->OnBackendRead();
  }
  static void BackendWrite(bufferevent*, void* ctx) {
    if (Live(ctx)) static_cast<HttpForwarder*>(ctx)->OnBackendWritable();
  }
  static void BackendEvent(bufferevent* bev, short what, void* ctx) {
    auto* f = static_cast<HttpForwarder*>(ctx);
    // An event of a connection this exchange already let go of is not ours to handle.
    if (Live(ctx) && f->backend_bev_.get() == bev) f->OnBackendEvent(what);
  }
  static void Timer(evutil_socket_t, short, void* ctx) {
    if (Live(ctx)) static_cast<HttpForwarder*>(ctx)->OnTimer();
  }
};

namespace {

constexpr size_t kMaxFields = 128;

// Judge the chunked framing of the body bytes already buffered, before any backend sees the
// request: a smuggling attempt arrives in one piece and is refused without a backend connection.
// *too_large: a chunk already declared takes the body over |max_body| (0 = no limit).
const char* PrevalidateChunked(evbuffer* input, size_t offset, const http::ChunkLimits& limits,
                               uint64_t max_body, bool* too_large) {
  *too_large = false;
  size_t length = evbuffer_get_length(input);
  if (length <= offset) return nullptr;
  const char* data = reinterpret_cast<const char*>(evbuffer_pullup(input, -1));
  http::ChunkedDecoder decoder(limits);
  size_t pos = offset;
  while (pos < length && !decoder.done() && !decoder.failed()) {
    if (decoder.in_data()) {
      if (max_body != 0 && decoder.data_left() > max_body - decoder.body_bytes()) {
        *too_large = true;
        return nullptr;
      }
      uint64_t n = std::min<uint64_t>(length - pos, decoder.data_left());
      decoder.ConsumeData(n);
      pos += static_cast<size_t>(n);
    } else {
      pos += decoder.Feed(std::string_view(data + pos, length - pos));
    }
  }
  return decoder.failed() ? decoder.error() : nullptr;
}

}  // namespace

HttpForwarder::HttpForwarder(SessionContext& context, RuntimePtr runtime, HttpForwarderOwner& owner,
                             bufferevent* client, HttpClientInfo info)
    : context_(context),
      runtime_(std::move(runtime)),
      owner_(owner),
      client_(client),
      info_(std::move(info)),
      upstream_("http", *runtime_, context.metrics) {
  timer_.reset(evtimer_new(context_.loop.base(), &HttpForwarderCallbacks::Timer, this));
}

HttpForwarder::~HttpForwarder() { DropBackend(); }

size_t HttpForwarder::high_watermark() const { return config().limits.write_buffer_high_watermark; }

void HttpForwarder::ArmTimer(std::chrono::milliseconds after) {
  if (!timer_) return;
  timeval tv = ToTimeval(after);
  evtimer_add(timer_.get(), &tv);
}

void HttpForwarder::Start(std::chrono::steady_clock::time_point first_request_at) {
  phase_ = Phase::kIdle;
  first_request_at_ = first_request_at;
  size_t high = high_watermark();
  bufferevent_setwatermark(client_, EV_READ, 0, config().limits.max_header_bytes);
  bufferevent_setwatermark(client_, EV_WRITE, high / 2, 0);
  bufferevent_enable(client_, EV_READ);
  ArmTimer(config().timeouts.request);
  ParseRequest();
}

void HttpForwarder::Stop() {
  phase_ = Phase::kStopped;
  if (timer_) event_del(timer_.get());
  DropBackend();
}

void HttpForwarder::Drain() {
  draining_ = true;
  if (phase_ == Phase::kIdle && !request_parser_) {
    Stop();
    owner_.OnHttpEnd(false, ClosedBy::kProxy);
    return;
  }
  close_after_response_ = true;
}

void HttpForwarder::PauseClient(bool pause) {
  if (pause == client_paused_ || client_eof_) return;
  client_paused_ = pause;
  if (pause) {
    bufferevent_disable(client_, EV_READ);
  } else {
    bufferevent_enable(client_, EV_READ);
  }
}

void HttpForwarder::PauseBackend(bool pause) {
  if (pause == backend_paused_ || !backend_bev_) return;
  backend_paused_ = pause;
  if (pause) {
    bufferevent_disable(backend_bev_.get(), EV_READ);
  } else {
    bufferevent_enable(backend_bev_.get(), EV_READ);
  }
}

// ---------------------------------------------------------------------------------------------
// Request.

void HttpForwarder::OnClientRead() {
  switch (phase_) {
    case Phase::kIdle:
      ParseRequest();
      return;
    case Phase::kExchanging:
      PumpRequestBody();  // after the body, further bytes (a pipelined request) wait buffered
      return;
    case Phase::kConnecting:
    case Phase::kStopped:
      return;
  }
}

void HttpForwarder::ParseRequest() {
  if (phase_ != Phase::kIdle) return;
  evbuffer* input = bufferevent_get_input(client_);
  size_t length = evbuffer_get_length(input);
  if (length == 0) return;
  if (!request_parser_) {
    request_parser_.emplace(http::HeadKind::kRequest,
                            http::HeadLimits{config().limits.max_header_bytes,
                                             config().limits.max_request_line_bytes, kMaxFields});
    auto now = std::chrono::steady_clock::now();
    started_at_ = first_request_at_.value_or(now);
    first_request_at_.reset();
    request_deadline_ = started_at_ + config().timeouts.request;
    // The head alone must also arrive within timeouts.handshake, like an upgrade's.
    auto head_deadline =
        started_at_ + std::min(config().timeouts.handshake, config().timeouts.request);
    ArmTimer(std::max(std::chrono::duration_cast<std::chrono::milliseconds>(head_deadline - now),
                      std::chrono::milliseconds(1)));
  }
  // The head is bounded by max_header_bytes, so linearising that much is cheap.
  size_t view = std::min<size_t>(length, config().limits.max_header_bytes);
  const char* data =
      reinterpret_cast<const char*>(evbuffer_pullup(input, static_cast<ssize_t>(view)));
  std::string_view buffered(data, view);
  switch (request_parser_->Parse(buffered)) {
    case http::ParseStatus::kNeedMore:
      return;
    case http::ParseStatus::kError: {
      http::ParseError error = request_parser_->error();
      Fail(error == http::ParseError::kHeadTooLarge ? 431 : 400, http::ParseErrorName(error));
      return;
    }
    case http::ParseStatus::kComplete:
      break;
  }
  http::HeadView request(*request_parser_, buffered);
  if (request.FieldHasToken("upgrade", "websocket")) {
    // The session serves upgrades; it re-reads this head from the client's input.
    Stop();
    owner_.OnUpgradeRequest();
    return;
  }
  if (!PrepareRequest(request)) return;
  evbuffer_drain(input, request_parser_->head_length());
  request_parser_.reset();
  bufferevent_setwatermark(client_, EV_READ, 0, high_watermark());
  ConnectBackend();
}

bool HttpForwarder::PrepareRequest(const http::HeadView& request) {
  const http::HeadParser& head = request.parser();
  ++requests_;
  method_.assign(request.Get(head.method()));
  std::string_view target = request.Get(head.target());
  path_.assign(target.substr(0, target.find('?')));
  client_http10_ = head.version_minor() == 0;
  head_request_ = method_ == "HEAD";
  if (head.version_major() != 1) {
    Fail(505, "only HTTP/1.x is supported");
    return false;
  }
  size_t hosts = request.FieldCount("host");
  if (hosts > 1 || (!client_http10_ && hosts != 1)) {
    Fail(400, "exactly one Host field is required");
    return false;
  }
  if (const char* bad = http::CheckHostAndCredentials(request)) {
    Fail(400, bad);
    return false;
  }
  if (method_ == "CONNECT") {
    Fail(501, "CONNECT is not supported");
    return false;
  }
  if (target.empty() || (target.front() != '/' && !(target == "*" && method_ == "OPTIONS"))) {
    Fail(400, "request target must be in origin-form");
    return false;
  }
  // Everything from here on (route, sticky key, access log, backend) sees one target.
  std::string routed_target;
  http::TargetError target_error = http::NormalizeTarget(target, config().paths, &routed_target);
  if (target_error != http::TargetError::kNone) {
    Fail(400, http::TargetErrorReason(target_error));
    return false;
  }
  path_.assign(routed_target, 0, routed_target.find('?'));
  client_keep_alive_ = !client_http10_ && !request.FieldHasToken("connection", "close");
  request_framing_ = http::RequestFraming(request);
  if (request_framing_.error != nullptr) {
    Fail(400, request_framing_.error);
    return false;
  }
  uint64_t max_body = config().limits.max_body_bytes;
  if (request_framing_.kind == http::BodyKind::kLength && max_body != 0 &&
      request_framing_.length > max_body) {
    Fail(413, "request body over limits.max_body_bytes");
    return false;
  }
  if (request_framing_.kind == http::BodyKind::kChunked) {
    bool too_large = false;
    const char* bad = PrevalidateChunked(bufferevent_get_input(client_), head.head_length(),
                                         ChunkLimitsFor(config()), max_body, &too_large);
    if (bad != nullptr) {
      Fail(400, bad);
      return false;
    }
    if (too_large) {
      Fail(413, "request body over limits.max_body_bytes");
      return false;
    }
    request_chunks_.emplace(ChunkLimitsFor(config()));
  }
  request_left_ = request_framing_.length;
  request_done_ = request_framing_.kind == http::BodyKind::kNone;

  std::string_view host = http::StripPort(request.Field("host"));
  UpstreamRefusal refusal;
  if (!upstream_.Place(request, host, path_, info_.client_ip, &refusal)) {
    Fail(refusal.status, refusal.reason);
    return false;
  }
  http::ForwardingInfo forwarding{info_.client_ip, info_.client_tls,
                                  info_.connection_id + "-" + std::to_string(requests_),
                                  info_.peer_trusted};
  forwarding.target = routed_target;
  http::ForwardedBody body = http::ForwardedBody::kNone;
  if (request_framing_.kind == http::BodyKind::kLength) body = http::ForwardedBody::kLength;
  if (request_framing_.kind == http::BodyKind::kChunked) body = http::ForwardedBody::kChunked;
  // The auth hook's copy_headers are wsgate's to state, on every route; never the client's.
  upstream_head_ =
      http::BuildForwardedRequest(request, forwarding, body, {}, &config().auth.copy_headers);
  return true;
}

void HttpForwarder::ConnectBackend() {
  UpstreamRefusal refusal;
  backend_ = upstream_.Next(&refusal);
  if (!backend_) {
    Fail(refusal.status, refusal.reason, refusal.extra_header);
    return;
  }
  if (!fresh_connection_only_) backend_bev_ = context_.http_connections.Take(*backend_);
  backend_reused_ = backend_bev_ != nullptr;
  if (!backend_bev_) {
    // A TLS pool speaks TLS for plain HTTP too (verified as for upgrades).
    backend_bev_ = StartConnect(context_.loop.base(), *backend_, upstream_.pool_tls());
  }
  if (!backend_bev_) {
    OnAttemptFailed(AttemptFailure::kNoSocket);
    return;
  }
  bufferevent_setcb(backend_bev_.get(), &HttpForwarderCallbacks::BackendRead,
                    &HttpForwarderCallbacks::BackendWrite, &HttpForwarderCallbacks::BackendEvent,
                    this);
  bufferevent_setwatermark(backend_bev_.get(), EV_READ, 0, config().limits.max_header_bytes);
  bufferevent_setwatermark(backend_bev_.get(), EV_WRITE, high_watermark() / 2, 0);
  bufferevent_enable(backend_bev_.get(), EV_READ | EV_WRITE);
  if (backend_reused_) {
    SendRequest();
    return;
  }
  phase_ = Phase::kConnecting;
  ArmTimer(config().timeouts.connect);
}

void HttpForwarder::ReportOutcome(bool ok) {
  if (backend_) upstream_.ReportOutcome(*backend_, ok);
}

void HttpForwarder::OnAttemptFailed(AttemptFailure failure) {
  upstream_.Failed(*backend_, failure, info_.peer_text);
  DropBackend();
  ConnectBackend();
}

void HttpForwarder::SendRequest() {
  phase_ = Phase::kExchanging;
  bufferevent_write(backend_bev_.get(), upstream_head_.data(), upstream_head_.size());
  response_parser_.emplace(http::HeadKind::kResponse,
                           http::HeadLimits{config().limits.max_header_bytes,
                                            config().limits.max_header_bytes, kMaxFields});
  PumpRequestBody();
  if (phase_ != Phase::kExchanging) return;
  if (request_done_) {
    ArmTimer(config().timeouts.backend_response);
  } else {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        request_deadline_ - std::chrono::steady_clock::now());
    ArmTimer(std::max(left, std::chrono::milliseconds(1)));
  }
}

void HttpForwarder::PumpRequestBody() {
  if (request_done_ || phase_ != Phase::kExchanging || !backend_bev_) return;
  evbuffer* in = bufferevent_get_input(client_);
  evbuffer* out = bufferevent_get_output(backend_bev_.get());
  uint64_t max_body = config().limits.max_body_bytes;
  while (!request_done_ && evbuffer_get_length(in) > 0) {
    if (evbuffer_get_length(out) >= high_watermark()) {
      PauseClient(true);
      return;
    }
    if (request_framing_.kind == http::BodyKind::kLength) {
      auto n = static_cast<size_t>(std::min<uint64_t>(evbuffer_get_length(in), request_left_));
      evbuffer_remove_buffer(in, out, n);
      request_left_ -= n;
      bytes_in_ += n;
      request_done_ = request_left_ == 0;
      continue;
    }
    BodyRelay::Step step = MoveChunked(*request_chunks_, in, out, false, &bytes_in_);
    if (step == BodyRelay::Step::kError) {
      Fail(400, request_chunks_->error());
      return;
    }
    if (max_body != 0 && request_chunks_->body_bytes() > max_body) {
      Fail(413, "request body over limits.max_body_bytes");
      return;
    }
    if (step == BodyRelay::Step::kDone) request_done_ = true;
  }
  if (!request_done_) return;
  // The request is complete: read ahead at most one head's worth of a pipelined next request.
  bufferevent_setwatermark(client_, EV_READ, 0, config().limits.max_header_bytes);
  PauseClient(false);
  if (!response_done_) ArmTimer(config().timeouts.backend_response);
}

void HttpForwarder::OnBackendWritable() {
  if (!backend_bev_ || phase_ != Phase::kExchanging) return;
  if (evbuffer_get_length(bufferevent_get_output(backend_bev_.get())) < high_watermark()) {
    PauseClient(false);
    PumpRequestBody();
  }
}

// ---------------------------------------------------------------------------------------------
// Response.

void HttpForwarder::OnBackendRead() {
  if (phase_ != Phase::kExchanging) return;
  if (!response_head_done_ && !HandleResponseHead()) return;
  RelayResponseBody();
}

bool HttpForwarder::HandleResponseHead() {
  evbuffer* in = bufferevent_get_input(backend_bev_.get());
  evbuffer* client_out = bufferevent_get_output(client_);
  while (true) {
    std::string_view buffered;
    std::string error;
    switch (ParseResponseHead(in, config().limits.max_header_bytes, *response_parser_, &buffered,
                              &error)) {
      case http::ParseStatus::kNeedMore:
        return false;
      case http::ParseStatus::kError:
        BackendBroken(error);
        return false;
      case http::ParseStatus::kComplete:
        break;
    }
    http::HeadView response(*response_parser_, buffered);
    int status = response_parser_->status_code();
    if (status == 101) {
      BackendBroken("backend switched protocols on a plain request");
      return false;
    }
    if (status < 200) {
      // Interim responses (100 Continue, 103 Early Hints) go to HTTP/1.1 clients as they are.
      size_t n = response_parser_->head_length();
      if (client_http10_) {
        evbuffer_drain(in, n);
      } else {
        evbuffer_remove_buffer(in, client_out, n);
        response_started_ = true;
        bytes_out_ += n;
      }
      response_parser_.emplace(http::HeadKind::kResponse,
                               http::HeadLimits{config().limits.max_header_bytes,
                                                config().limits.max_header_bytes, kMaxFields});
      continue;
    }
    response_framing_ = http::ResponseFraming(response, head_request_);
    if (response_framing_.error != nullptr) {
      BackendBroken(std::string("backend response framing: ") + response_framing_.error);
      return false;
    }
    status_ = status;
    ReportOutcome(true);
    bool until_close = response_framing_.kind == http::BodyKind::kUntilClose;
    backend_reusable_ = response_parser_->version_minor() >= 1 &&
                        !response.FieldHasToken("connection", "close") && !until_close;
    dechunk_ = client_http10_ && response_framing_.kind == http::BodyKind::kChunked;
    close_after_response_ = close_after_response_ || !client_keep_alive_ || until_close ||
                            dechunk_ || !request_done_ || draining_ || client_eof_;
    std::string cookie = StickyCookieLine(upstream_.pool_config(), *backend_);
    http::ResponseHeadOptions options;
    options.keep_transfer_encoding = !dechunk_;
    options.close = close_after_response_;
    options.extra_header = cookie;
    std::string head = http::BuildForwardedResponseHead(response, options);
    evbuffer_drain(in, response_parser_->head_length());
    bufferevent_write(client_, head.data(), head.size());
    bytes_out_ += head.size();
    response_started_ = true;
    response_head_done_ = true;
    response_body_.Start(response_framing_, ChunkLimitsFor(config()), dechunk_);
    bufferevent_setwatermark(backend_bev_.get(), EV_READ, 0, high_watermark());
    return true;
  }
}

void HttpForwarder::RelayResponseBody() {
  if (!response_head_done_ || response_done_ || !backend_bev_) return;
  evbuffer* in = bufferevent_get_input(backend_bev_.get());
  evbuffer* out = bufferevent_get_output(client_);
  uint64_t before = bytes_out_;
  while (!response_body_.done()) {
    if (evbuffer_get_length(out) >= high_watermark()) {
      PauseBackend(true);
      break;
    }
    BodyRelay::Step step = response_body_.Move(in, out, &bytes_out_);
    if (step == BodyRelay::Step::kError) {
      BackendBroken(std::string("backend chunked framing: ") + response_body_.error());
      return;
    }
    if (step == BodyRelay::Step::kNeedMore) break;
  }
  // The backend closed and everything it sent has been relayed.
  if (backend_eof_ && !response_body_.done() && evbuffer_get_length(in) == 0 &&
      !response_body_.EndOfInput()) {
    BackendBroken("backend closed in the middle of the response body");
    return;
  }
  response_done_ = response_body_.done();
  // The response timeout bounds silence, so progress restarts it.
  if (bytes_out_ != before && request_done_) ArmTimer(config().timeouts.backend_response);
  if (response_done_) OnResponseComplete();
}

void HttpForwarder::OnClientWritable() {
  if (phase_ != Phase::kExchanging || !backend_paused_) return;
  if (evbuffer_get_length(bufferevent_get_output(client_)) >= high_watermark()) return;
  PauseBackend(false);
  RelayResponseBody();
}

void HttpForwarder::OnBackendEvent(short what) {
  if ((what & BEV_EVENT_CONNECTED) != 0) {
    if (phase_ == Phase::kConnecting) SendRequest();
    return;
  }
  if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) == 0) return;
  if (phase_ == Phase::kConnecting) {
    OnAttemptFailed(AttemptFailure::kConnectFailed);
    return;
  }
  if (phase_ != Phase::kExchanging) return;
  bufferevent* bev = backend_bev_.get();
  backend_eof_ = true;  // whatever completes now, this connection is not pooled
  OnBackendRead();      // bytes that arrived with the close
  if (backend_bev_.get() != bev || phase_ != Phase::kExchanging) return;
  if (!response_head_done_) {
    bool nothing = evbuffer_get_length(bufferevent_get_input(bev)) == 0 && !response_started_;
    if (backend_reused_ && nothing && request_framing_.kind == http::BodyKind::kNone &&
        !fresh_connection_only_) {
      // The backend closed this pooled connection while it was idle (a race no client can
      // avoid): retry once on a fresh connection; the request had no body to replay.
      fresh_connection_only_ = true;
      backend_eof_ = false;
      upstream_.Restart();
      DropBackend();
      phase_ = Phase::kConnecting;
      ConnectBackend();
      return;
    }
    BackendBroken("backend closed before a complete response head");
    return;
  }
  // The response head went out: RelayResponseBody (run by OnBackendRead above, and again as the
  // client drains) ends the response, or finds it cut short, once the input is used up.
}

void HttpForwarder::OnResponseComplete() {
  // Bytes after the response were never asked for: that connection cannot be trusted again.
  bool clean = backend_bev_ && evbuffer_get_length(bufferevent_get_input(backend_bev_.get())) == 0;
  bool reuse = backend_reusable_ && request_done_ && clean && !backend_eof_;
  Record();
  if (reuse) {
    BackendPtr backend = backend_.shared();
    backend_.Release();  // an idle pooled connection is no connection assigned to it
    context_.http_connections.Put(*backend, std::move(backend_bev_),
                                  upstream_.pool_config().http.max_idle_connections,
                                  config().timeouts.backend_idle);
  } else {
    DropBackend();
  }
  if (close_after_response_ || draining_) {
    Stop();
    owner_.OnHttpEnd(true, ClosedBy::kProxy);
    return;
  }
  ResetExchange();
  phase_ = Phase::kIdle;
  bufferevent_setwatermark(client_, EV_READ, 0, config().limits.max_header_bytes);
  PauseClient(false);
  ArmTimer(config().timeouts.request);
  ParseRequest();  // a pipelined request may already be buffered
}

void HttpForwarder::OnClientEvent(short what) {
  if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) == 0) return;
  bool clean_eof = (what & BEV_EVENT_ERROR) == 0;
  bool in_flight = phase_ == Phase::kExchanging || phase_ == Phase::kConnecting;
  if (in_flight && request_done_ && clean_eof) {
    // A half-close after a complete request: answer it, then close.
    client_eof_ = true;
    close_after_response_ = true;
    return;
  }
  bool mid_request = phase_ != Phase::kIdle || request_parser_.has_value();
  if (mid_request) {
    reason_ = "client closed during the request";
    Record();
  }
  Stop();
  // A response may still wait in the output buffer (it completed in this loop pass, before the
  // client's EOF was read): a half-close is no reason to drop it, so flush before closing.
  bool answer_queued = clean_eof && evbuffer_get_length(bufferevent_get_output(client_)) > 0;
  owner_.OnHttpEnd(answer_queued, ClosedBy::kClient);
}

void HttpForwarder::OnTimer() {
  switch (phase_) {
    case Phase::kIdle:
      if (request_parser_ || evbuffer_get_length(bufferevent_get_input(client_)) > 0) {
        Fail(408, "request head not received in time");
        return;
      }
      // A keep-alive connection with no request pending: close it quietly.
      Stop();
      owner_.OnHttpEnd(false, ClosedBy::kProxy);
      return;
    case Phase::kConnecting:
      OnAttemptFailed(AttemptFailure::kConnectTimedOut);
      return;
    case Phase::kExchanging:
      if (!request_done_) {
        Fail(408, "request body not received within timeouts.request");
      } else if (!response_head_done_) {
        ReportOutcome(false);
        Fail(504, "backend did not respond within timeouts.backend_response");
      } else {
        Fail(504, "backend response stalled longer than timeouts.backend_response");
      }
      return;
    case Phase::kStopped:
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// Endings.

void HttpForwarder::BackendBroken(const std::string& why) {
  ReportOutcome(false);
  if (backend_) {
    context_.metrics.Backend(backend_->pool, backend_->address)
        .connect_failures[metrics::kBadResponse]
        .Add();
  }
  LOG_WARN("http client=" + info_.peer_text +
           " backend=" + (backend_ ? backend_->address : std::string("-")) + ": " + why);
  Fail(502, why);
}

void HttpForwarder::Fail(int status, const std::string& reason, const std::string& extra_header) {
  reason_ = reason;
  if (!response_started_) {
    status_ = status;
    std::string response = http::BuildErrorResponse(status, reason, extra_header);
    bufferevent_write(client_, response.data(), response.size());
    bytes_out_ += response.size();
  }
  // Otherwise part of a response went out already: the connection is cut after it (the client
  // sees a truncated body, never a second status line).
  Record();
  Stop();
  owner_.OnHttpEnd(true, ClosedBy::kProxy);
}

void HttpForwarder::Record() {
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at_).count();
  std::string pool = upstream_.placed() ? upstream_.pool().name : "";
  metrics::PoolMetrics& pool_metrics = context_.metrics.Pool(pool);
  pool_metrics.http_requests[metrics::HttpStatusSlot(status_)].Add();
  pool_metrics.http_request_duration.Observe(seconds);

  AccessRecord r;
  r.connection_id = info_.connection_id;
  r.client = info_.peer_text;
  r.listener = info_.listener;
  r.route = upstream_.route_index() >= 0 ? std::to_string(upstream_.route_index()) : "";
  r.pool = pool;
  r.backend = backend_ ? backend_->address : "";
  r.method = method_;
  r.path = path_;
  r.status = status_;
  r.duration_seconds = seconds;
  r.bytes_in = bytes_in_;
  r.bytes_out = bytes_out_;
  r.reason = reason_;
  context_.access_log.Write(r);
}

void HttpForwarder::DropBackend() {
  backend_bev_.reset();  // never reused: closed here
  backend_paused_ = false;
  backend_.Release();
}

void HttpForwarder::ResetExchange() {
  method_.clear();
  path_.clear();
  head_request_ = false;
  client_http10_ = false;
  client_keep_alive_ = true;
  request_framing_ = http::Framing{};
  request_chunks_.reset();
  request_left_ = 0;
  request_done_ = false;
  bytes_in_ = 0;
  std::string().swap(upstream_head_);
  upstream_.Clear();
  backend_reused_ = false;
  fresh_connection_only_ = false;
  backend_eof_ = false;
  response_parser_.reset();
  response_started_ = false;
  response_head_done_ = false;
  response_done_ = false;
  response_framing_ = http::Framing{};
  response_body_ = BodyRelay{};
  dechunk_ = false;
  backend_reusable_ = false;
  close_after_response_ = false;
  status_ = 0;
  bytes_out_ = 0;
  reason_.clear();
}

}  // namespace wsgate
