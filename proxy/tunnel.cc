#include "proxy/tunnel.h"

#include <sys/socket.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "proxy/core/event_loop.h"
#include "proxy/core/log.h"
#include "proxy/core/random.h"

namespace wsgate {

// libevent trampolines: each returns at once once the tunnel has ended (its owner is finishing
// and frees it later, on the deferred-delete pass), and never frees anything itself.
struct TunnelCallbacks {
  using Side = Tunnel::Side;
  template <Side side>
  static void Read(bufferevent*, void* ctx) {
    auto* t = static_cast<Tunnel*>(ctx);
    if (!t->ended()) t->OnRead(side);
  }
  template <Side side>
  static void Write(bufferevent*, void* ctx) {
    auto* t = static_cast<Tunnel*>(ctx);
    if (!t->ended()) t->OnWritable(side);
  }
  template <Side side>
  static void Event(bufferevent*, short what, void* ctx) {
    auto* t = static_cast<Tunnel*>(ctx);
    if (!t->ended()) t->OnEvent(side, what);
  }
  template <Side side>
  static void ReadDirect(void* ctx) {
    Read<side>(nullptr, ctx);
  }
  template <Side side>
  static void WriteDirect(void* ctx) {
    Write<side>(nullptr, ctx);
  }
  template <Side side>
  static void EventDirect(void* ctx, short what) {
    Event<side>(nullptr, what, ctx);
  }
  template <Side side>
  static constexpr DirectSocket::Callbacks kDirect{&ReadDirect<side>, &WriteDirect<side>,
                                                   &EventDirect<side>};
  static void Timer(evutil_socket_t, short, void* ctx) {
    auto* t = static_cast<Tunnel*>(ctx);
    if (!t->ended()) t->OnTimer();
  }
  static void PingTimer(evutil_socket_t, short, void* ctx) {
    auto* t = static_cast<Tunnel*>(ctx);
    if (!t->ended()) t->OnPingTimer();
  }
  static void ThrottleTimer(evutil_socket_t, short, void* ctx) {
    auto* t = static_cast<Tunnel*>(ctx);
    if (!t->ended()) t->OnThrottleTimer();
  }
};

namespace {

// The reason logged (and sent in the close frame) for a violation FramePipe reports.
const char* ViolationText(uint16_t code, bool in_inflate) {
  if (code == ws::kMessageTooBig) return "message too big";
  if (!in_inflate) return "protocol error";
  return code == ws::kInvalidPayload ? "invalid compressed data" : "out of memory for inflating";
}

ws::DirectionPolicy PolicyTowards(Tunnel::Side to, const http::UpstreamVerdict& negotiated,
                                  const config::ProxyConfig& config) {
  return ws::DirectionPolicy{/*expect_masked=*/to == Tunnel::Side::kBackend,
                             negotiated.permessage_deflate, negotiated.other_extension,
                             config.limits.max_message_bytes};
}

}  // namespace

Tunnel::Tunnel(TunnelOwner& owner, event_base* base, const config::ProxyConfig& config,
               Endpoint& client, Endpoint& backend, const http::UpstreamVerdict& negotiated)
    : owner_(owner),
      base_(base),
      config_(config),
      client_(client),
      backend_(backend),
      client_to_backend_(PolicyTowards(Side::kBackend, negotiated, config)),
      backend_to_client_(PolicyTowards(Side::kClient, negotiated, config)) {
  if (negotiated.permessage_deflate &&
      config.limits.compression == config::LimitsConfig::Compression::kInspect) {
    // Each direction inflates with its sender's window and context takeover (RFC 7692 §7.1).
    const http::DeflateParams& deflate = negotiated.deflate;
    size_t hold = high_watermark();
    client_to_backend_.set_inflate(deflate.client_max_window_bits,
                                   !deflate.client_no_context_takeover, hold);
    backend_to_client_.set_inflate(deflate.server_max_window_bits,
                                   !deflate.server_no_context_takeover, hold);
  }
  client_to_backend_.set_message_rate(config.limits.max_messages_per_second);
}

Tunnel::~Tunnel() { Stop(); }

void Tunnel::Describe(AccessRecord& record) const {
  record.bytes_in = bytes_from_client();
  record.bytes_out = bytes_to_client();
  record.messages_in = messages_from_client();
  record.messages_out = messages_to_client();
  record.messages_pushed = pushes_.messages();
  record.close_code = close_.code;
  if (close_.by != ClosedBy::kUndecided) record.closed_by = close_.by;
  record.reason = close_.reason;
}

void Tunnel::Attach(Side side) {
  size_t high = high_watermark();
  Endpoint& e = socket(side);
  const DirectSocket::Callbacks* direct_callbacks = side == Side::kClient
                                                        ? &TunnelCallbacks::kDirect<Side::kClient>
                                                        : &TunnelCallbacks::kDirect<Side::kBackend>;
  // A backend connection was direct from the start; a client moves to it now.
  if (e.plain_tcp && e.direct.open()) e.direct.SetCallbacks(direct_callbacks, this);
  if (e.plain_tcp && (e.direct.open() || e.direct.TakeOver(e.bev, direct_callbacks, this))) {
    e.direct.SetReadLimit(high);
    e.direct.WatchWritable(high / 2);
    e.direct.SetReading(true);
    e.direct.Flush();  // the 101 head, or the upgrade request's tail
    return;
  }
  if (side == Side::kClient) {
    bufferevent_setcb(e.bev.get(), &TunnelCallbacks::Read<Side::kClient>,
                      &TunnelCallbacks::Write<Side::kClient>,
                      &TunnelCallbacks::Event<Side::kClient>, this);
  } else {
    bufferevent_setcb(e.bev.get(), &TunnelCallbacks::Read<Side::kBackend>,
                      &TunnelCallbacks::Write<Side::kBackend>,
                      &TunnelCallbacks::Event<Side::kBackend>, this);
  }
  bufferevent_setwatermark(e.bev.get(), EV_READ, 0, high);
  // The write callback fires once the output has drained below half: resume the peer then.
  bufferevent_setwatermark(e.bev.get(), EV_WRITE, high / 2, 0);
  bufferevent_enable(e.bev.get(), EV_READ);
}

void Tunnel::Start(metrics::PoolMetrics* pool_metrics, PushQueue pushes) {
  pushes_ = std::move(pushes);
  Attach(Side::kClient);
  Attach(Side::kBackend);
  if (pool_metrics != nullptr) {
    client_to_backend_.set_metrics(pool_metrics, metrics::kClientToBackend);
    backend_to_client_.set_metrics(pool_metrics, metrics::kBackendToClient);
  }
  const config::TimeoutsConfig& timeouts = config_.timeouts;
  if (timeouts.idle.count() > 0) ArmTimer(timeouts.idle);
  if (timeouts.ping_interval.count() > 0) {
    last_client_data_ = std::chrono::steady_clock::now();
    ping_timer_.reset(evtimer_new(base_, &TunnelCallbacks::PingTimer, this));
    if (ping_timer_) {
      timeval interval = ToTimeval(timeouts.ping_interval);
      evtimer_add(ping_timer_.get(), &interval);
    }
  }
  FlushPushed();  // pushes the backend sent during the upgrade, right after the 101
  // Either side may already have sent frames along with the handshake.
  Pump(Side::kBackend);
  if (!ended_) Pump(Side::kClient);
}

void Tunnel::Stop() {
  ended_ = true;
  // Deleted, not freed: this may run inside one of their callbacks.
  for (EventPtr* timer : {&timer_, &ping_timer_, &throttle_timer_}) {
    if (*timer) event_del(timer->get());
  }
  if (move_ && move_->step) event_del(move_->step.get());
  client_.splice.reset();
  backend_.splice.reset();
}

void Tunnel::End(ClosedBy fallback) {
  if (ended_) return;
  close_.by = close_.by != ClosedBy::kUndecided ? close_.by : fallback;
  ended_ = true;
  owner_.OnTunnelEnded();
}

void Tunnel::EndIfBothClosed() {
  if (!client_.socket->open() && !backend_.socket->open()) End(ClosedBy::kProxy);
}

void Tunnel::OnRead(Side from) { Pump(from); }

void Tunnel::OnEvent(Side side, short what) {
  if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) == 0) return;
  Pump(side);
  if (ended_) return;
  OnPeerGone(side, (what & BEV_EVENT_EOF) != 0);
}

// ---------------------------------------------------------------------------------------------
// Relaying.

void Tunnel::NoteClientAlive(std::chrono::steady_clock::time_point now) {
  last_client_data_ = now;  // a pong, or any data, proves the client is alive
  ping_outstanding_ = false;
}

void Tunnel::Pump(Side from) {
  Peer& source = peer(from);
  Side to = Other(from);
  Peer& sink = peer(to);
  Endpoint& in = *source.socket;
  Endpoint& out = *sink.socket;
  if (!in.open()) return;
  // Whatever this pass queued towards the sink goes out before returning to the loop, and the
  // source may read again if its input was at the limit.
  struct AfterPump {
    Endpoint& in;
    Endpoint& out;
    ~AfterPump() {
      out.Flush();
      in.InputConsumed();
    }
  } after_pump{in, out};
  evbuffer* input = in.input();
  // Bytes in the pipe are part of the current frame: they reach the sink before anything else.
  if (source.splice && !DrainSplice(from)) return;
  if (source.in == Inbound::kDiscarding) {
    evbuffer_drain(input, evbuffer_get_length(input));
    return;
  }
  last_activity_ = std::chrono::steady_clock::now();
  if (from == Side::kClient && evbuffer_get_length(input) > 0) NoteClientAlive(last_activity_);
  FramePipe& pipe = pipe_from(from);
  while (true) {
    if (move_ && from == Side::kClient && pipe.at_message_boundary()) {
      OnClientHeld();  // the rest waits for the new backend
      return;
    }
    bool deliver = out.open() && !sink.close_sent();
    evbuffer* output = deliver ? out.output() : nullptr;
    size_t limit = flush_all_ ? SIZE_MAX : high_watermark();
    switch (pipe.Pump(input, output, limit)) {
      case FramePipe::Result::kDrained:
        MaybeStartSplice(from);
        return;
      case FramePipe::Result::kOutputFull:
        // A direct socket may take the bytes right now; pause only if the kernel is full too.
        out.Flush();  // may hand an emptied buffer back: ask the sink, not |output|
        if (out.output_length() < limit) continue;
        in.SetReading(false);
        source.backpressured = true;
        return;
      case FramePipe::Result::kStopped:
        FlushPendingClose(to);
        if (out.open() && !sink.close_sent()) return;  // nothing was pending; never spin
        continue;  // the sink got its close: further frames are parsed and dropped
      case FramePipe::Result::kCloseRelayed:
        source.in = Inbound::kCloseReceived;
        if (move_ && move_->retired && from == Side::kBackend) {
          move_->old_done = true;  // its close reply, swallowed: the client never sees it
          ScheduleMoveStep();
          return;
        }
        DropMove();  // a close of its own: the connection ends as usual
        if (deliver) sink.out = Outbound::kCloseSent;
        close_.Decide(pipe.close_code(),
                      from == Side::kClient ? ClosedBy::kClient : ClosedBy::kBackend,
                      pipe.close_reason());
        closing_ = true;
        StartClosingTimer();
        CloseIfDone(from);
        if (ended_) return;
        CloseIfDone(to);
        return;
      case FramePipe::Result::kMessageBoundary:
        // Pushes wait for the backend's message to the client to end; the client's own pipe
        // stops at a boundary only for a move (Pump holds its next message above).
        if (from == Side::kBackend) FlushPushed();
        continue;
      case FramePipe::Result::kRateLimited:
        if (config_.limits.rate_action == config::LimitsConfig::RateAction::kThrottle) {
          // Pause reading until the bucket holds a token again; nothing is dropped.
          in.SetReading(false);
          source.throttled = true;
          timeval wait = ToTimeval(
              config::Duration(static_cast<int64_t>(pipe.SecondsUntilToken() * 1000.0) + 1));
          // Made on first use: most connections never meet the rate, and idle ones stay small.
          if (!throttle_timer_) {
            throttle_timer_.reset(evtimer_new(base_, &TunnelCallbacks::ThrottleTimer, this));
          }
          if (!throttle_timer_) {
            OnViolation(from, ws::kInternalError, "out of memory");
            return;
          }
          evtimer_add(throttle_timer_.get(), &wait);
          return;
        }
        OnViolation(from, ws::kPolicyViolation, "message rate exceeded");
        return;
      case FramePipe::Result::kViolation:
        OnViolation(from, pipe.violation_code(),
                    ViolationText(pipe.violation_code(), pipe.violation_in_inflate()));
        return;
    }
  }
}

void Tunnel::OnWritable(Side to) {
  Endpoint& e = socket(to);
  if (!e.open()) return;
  if (e.flushing_to_close()) {
    switch (e.ContinueEnding()) {
      case Endpoint::FlushStep::kWaiting:
        return;
      case Endpoint::FlushStep::kHalfClosed:
        peer(to).throttled = false;  // reading again, until the peer's EOF
        return;
      case Endpoint::FlushStep::kClosed:
        CloseSocket(to);
        EndIfBothClosed();
        return;
    }
  }
  Side from = Other(to);
  Peer& source = peer(from);
  if (source.backpressured && source.socket->open() && e.output_length() < high_watermark()) {
    source.backpressured = false;
    if (!source.throttled) source.socket->SetReading(true);
    Pump(from);
  }
}

void Tunnel::OnThrottleTimer() {
  Peer& client = client_;
  if (!client.socket->open() || !client.throttled) return;
  client.throttled = false;
  if (!client.backpressured) client.socket->SetReading(true);
  Pump(Side::kClient);
}

// ---------------------------------------------------------------------------------------------
// Closing.

void Tunnel::OnViolation(Side from, uint16_t code, const char* what) {
  Peer& source = peer(from);
  Side to = Other(from);
  Peer& sink = peer(to);
  evbuffer* input = source.socket->input();
  if (sink.close_sent() || !sink.socket->open()) {
    // Already closing towards the peer; just stop listening to this side.
    source.in = Inbound::kDiscarding;
    evbuffer_drain(input, evbuffer_get_length(input));
    CloseIfDone(from);
    return;
  }
  close_.Decide(code, ClosedBy::kProxy,
                std::string(from == Side::kClient ? "client " : "backend ") + what);
  LOG_INFO("session client=" + owner_.ClientText() + " " + close_.reason + ", close " +
           std::to_string(code));
  // The offender gets the code; the peer is told the proxy gave up on the other side. Its
  // stream can no longer be trusted to carry a close.
  source.in = Inbound::kDiscarding;
  evbuffer_drain(input, evbuffer_get_length(input));
  if (pipe_from(from).frame_started()) {
    // Only compression inspection stops inside a frame: part of it already reached the peer, so
    // no close frame can follow it. The peer's connection ends without one (it sees 1006) and
    // never receives the rest of the message, but what was queued for it before the cut frame
    // (whole messages wsgate accepted) is still delivered first, and so is what it sends the
    // other way until then.
    CloseAfterFlush(to);
    if (ended_) return;
    if (!source.socket->open()) {
      if (!sink.socket->open()) End(close_.by);
      return;
    }
  } else {
    InsertClose(to, from == Side::kClient ? ws::kGoingAway : ws::kInternalError,
                from == Side::kClient ? "client protocol error" : "backend protocol error");
  }
  if (ended_) return;
  InsertClose(from, code, what);
  if (ended_) return;
  CloseIfDone(from);
}

void Tunnel::CloseBoth(uint16_t code, const std::string& reason,
                       const std::string& backend_reason) {
  InsertClose(Side::kClient, code, reason);
  if (!ended_) InsertClose(Side::kBackend, ws::kGoingAway, backend_reason);
}

// Keepalive: find dead clients (a phone that lost its network) without waiting for TCP.
void Tunnel::OnPingTimer() {
  if (closing_) return;
  auto now = std::chrono::steady_clock::now();
  const config::TimeoutsConfig& timeouts = config_.timeouts;
  if (ping_outstanding_) {
    close_.Decide(ws::kGoingAway, ClosedBy::kProxy, "no pong from the client within ping_timeout");
    CloseBoth(ws::kGoingAway, "ping timeout", "client ping timeout");
    return;
  }
  auto quiet = std::chrono::duration_cast<config::Duration>(now - last_client_data_);
  config::Duration next = timeouts.ping_interval - quiet;
  if (quiet >= timeouts.ping_interval) {
    // Only at a frame boundary towards the client; otherwise a backend frame is in flight and
    // the client is evidently reachable enough to wait for the next round.
    if (client_.socket->open() && !client_.close_sent() && backend_to_client_.at_boundary()) {
      static const char kPing[] = {static_cast<char>(0x80 | ws::kPing), 0};
      client_.socket->Write(kPing, sizeof(kPing));
      ping_outstanding_ = true;
      next = timeouts.ping_timeout;
    } else {
      next = timeouts.ping_interval;
    }
  }
  timeval wait = ToTimeval(next);
  evtimer_add(ping_timer_.get(), &wait);
}

void Tunnel::GoAway(uint16_t code, const std::string& reason) {
  if (ended_ || closing_) return;  // a close handshake is under way and bounded by its timer
  if (move_ && move_->retired) {
    // The old backend is already told to go and the new one is ready: close after the swap.
    move_->deferred_close =
        std::make_unique<CloseDecision>(CloseDecision{code, ClosedBy::kProxy, reason});
    return;
  }
  DropMove();
  close_.Decide(code, ClosedBy::kProxy, reason);
  // Deliver everything already read from either side before the close frames (no message that
  // wsgate accepted is lost); a frame still arriving is finished first (InsertClose waits).
  flush_all_ = true;
  Pump(Side::kClient);
  if (!ended_) Pump(Side::kBackend);
  flush_all_ = false;
  if (ended_) return;
  CloseBoth(code, reason, reason);
}

int Tunnel::Push(evbuffer* payload, bool text) {
  if (closing_ || !client_.socket->open() || client_.out != Outbound::kOpen) return 410;
  // A backend frame being spliced to the client waits in the pipe, not in the client's output.
  size_t queued = client_.socket->output_length() + (backend_.splice ? backend_.splice->held : 0) +
                  pushes_.queued_bytes();
  if (queued >= high_watermark()) return 429;
  if (!pushes_.Add(payload, text)) return 503;
  if (backend_to_client_.at_message_boundary()) {
    FlushPushed();
  } else {
    backend_to_client_.StopAtMessageBoundary();  // Pump() flushes when the message ends
  }
  return 200;
}

int Tunnel::CloseByApi(uint16_t code, const std::string& reason) {
  if (closing_) return 410;
  if (move_ && move_->retired) {
    move_->deferred_close =
        std::make_unique<CloseDecision>(CloseDecision{code, ClosedBy::kApi, reason});
    return 200;
  }
  close_ = CloseDecision{code, ClosedBy::kApi, reason};
  InsertClose(Side::kClient, code, reason);
  if (!ended_) InsertClose(Side::kBackend, code, reason);
  return 200;
}

void Tunnel::FlushPushed() {
  if (pushes_.empty() || !client_.socket->open() || client_.close_sent()) return;
  pushes_.MoveTo(client_.socket->output());
  client_.socket->Flush();
}

void Tunnel::InsertClose(Side to, uint16_t code, const std::string& reason) {
  DropMove();  // closing for another reason
  Peer& p = peer(to);
  if (!p.socket->open() || p.out != Outbound::kOpen) return;
  closing_ = true;
  StartClosingTimer();
  FramePipe& toward = pipe_from(Other(to));
  p.out = Outbound::kCloseQueued;
  p.queued_close = std::make_unique<QueuedClose>(QueuedClose{code, reason});
  toward.StopAtBoundary();
  // A frame held for inflation is finished first too, unless its sender is gone.
  bool held = toward.holding_frame() && socket(Other(to)).open();
  if (toward.at_boundary() && !held) FlushPendingClose(to);
  // Otherwise the pipe finishes the frame in flight and Pump() writes the close then.
}

void Tunnel::FlushPendingClose(Side to) {
  Peer& p = peer(to);
  if (!p.socket->open() || p.out != Outbound::kCloseQueued) return;
  // API messages already answered 200 go out first, unless a backend message is still open.
  if (to == Side::kClient && backend_to_client_.at_message_boundary()) FlushPushed();
  WriteClose(to, p.queued_close->code, p.queued_close->reason);
  p.queued_close.reset();
  CloseIfDone(to);
}

void Tunnel::WriteClose(Side to, uint16_t code, const std::string& reason) {
  Peer& p = peer(to);
  uint8_t mask[4];
  bool masked = to == Side::kBackend;  // RFC 6455 §5.3: frames towards a server are masked
  if (masked && !SecureRandom(mask, sizeof(mask))) std::memset(mask, 0x5a, sizeof(mask));
  std::string frame = ws::BuildCloseFrame(code, reason, masked ? mask : nullptr);
  p.socket->Write(frame.data(), frame.size());
  p.out = Outbound::kCloseSent;
}

void Tunnel::CloseIfDone(Side side) {
  Peer& p = peer(side);
  if (p.socket->open() && p.done()) CloseAfterFlush(side);
}

void Tunnel::CloseSocket(Side side) {
  Peer& p = peer(side);
  p.socket->Close();
  p.splice.reset();
}

void Tunnel::OnPeerGone(Side gone, bool clean) {
  Peer& g = peer(gone);
  if (g.splice) SpliceToOutput(gone);
  if (gone == Side::kClient && move_) {
    // What the client sent before leaving goes to the old backend if it still can take it.
    bool old_usable = backend_.socket->open() && backend_.out == Outbound::kOpen;
    DropMove();
    if (old_usable) Pump(Side::kClient);
    if (ended_) return;
  }
  if (gone == Side::kBackend && !closing_ &&
      (move_ || (!g.close_received() && client_.socket->open() && client_.out == Outbound::kOpen &&
                 backend_to_client_.at_message_boundary() && owner_.OnBackendLost() && move_))) {
    // Lost, or leaving during a move: the session carries on with the new backend.
    CloseSocket(gone);
    move_->retired = move_->old_done = true;
    ScheduleMoveStep();
    return;
  }
  if (clean && g.socket->open() && g.socket->flushing_to_close()) {
    // It half-closed while our last bytes to it (its close reply, relayed in the same loop pass
    // as its deferred EOF) are still queued: they go out, then the socket closes.
    g.socket->SkipLinger();
    g.socket->SetReading(false);
    return;
  }
  if (clean && g.close_received() && !g.close_sent() && g.socket->open()) {
    // A half-close after its close frame (RFC 6455 §7.1.1 lets an endpoint stop sending once
    // it has sent Close): keep the socket to deliver the close reply, bounded by the close timer.
    g.socket->SetReading(false);
    return;
  }
  Side other = Other(gone);
  Peer& o = peer(other);
  bool sent_close_first = g.close_received();
  CloseSocket(gone);
  if (!sent_close_first) {
    close_.Decide(ws::kAbnormal, gone == Side::kClient ? ClosedBy::kClient : ClosedBy::kBackend,
                  clean ? "TCP closed without a close frame" : "connection reset");
  }
  if (o.socket->open() && !o.close_sent()) {
    if (pipe_from(gone).at_boundary()) {
      // RFC 6455 §7.4.1: 1014 tells the client the gateway lost its upstream.
      uint16_t code = gone == Side::kBackend ? ws::kBadGateway : ws::kGoingAway;
      InsertClose(other, code, gone == Side::kBackend ? "backend went away" : "client went away");
    } else {
      // A frame was cut in half: no close frame can follow it, so the TCP connection ends after
      // what is queued (whole messages before the cut frame, and its part) has gone out,
      // bounded by the close timer.
      closing_ = true;
      StartClosingTimer();
      CloseAfterFlush(other);
      if (ended_) return;
    }
  }
  if (ended_) return;
  // Otherwise wait, bounded by the close timer, for the other side's close frame.
  if (o.socket->open()) CloseIfDone(other);
  if (!ended_) EndIfBothClosed();
}

void Tunnel::CloseAfterFlush(Side side) {
  Peer& p = peer(side);
  if (!p.socket->open()) return;
  // A client that broke the protocol (it may still be sending) gets a lingering close: closing
  // with unread input would send a reset that can destroy what is still queued for it.
  p.socket->CloseAfterFlush(side == Side::kClient && p.in == Inbound::kDiscarding);
  if (p.socket->output_length() == 0) OnWritable(side);
}

// ---------------------------------------------------------------------------------------------
// Timers.

void Tunnel::ArmTimer(config::Duration after) {
  if (!timer_) {
    timer_.reset(evtimer_new(base_, &TunnelCallbacks::Timer, this));
    if (!timer_) {
      LOG_WARN("session client=" + owner_.ClientText() + " out of memory for a timer");
      return;  // the connection is then bounded by TCP alone
    }
  }
  timeval tv = ToTimeval(after);
  evtimer_add(timer_.get(), &tv);
}

void Tunnel::StartClosingTimer() {
  if (closing_timer_armed_) return;
  closing_timer_armed_ = true;
  ArmTimer(config_.timeouts.close);
}

void Tunnel::OnTimer() {
  if (closing_timer_armed_) {
    End(ClosedBy::kTimeout);
    return;
  }
  auto idle = config_.timeouts.idle;
  auto quiet = std::chrono::duration_cast<config::Duration>(std::chrono::steady_clock::now() -
                                                            last_activity_);
  if (quiet < idle) {
    ArmTimer(idle - quiet);
    return;
  }
  close_.Decide(ws::kGoingAway, ClosedBy::kProxy, "idle timeout");
  CloseBoth(ws::kGoingAway, "idle timeout", "idle timeout");
}

}  // namespace wsgate
