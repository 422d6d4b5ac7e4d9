// After the 101: WebSocket frames both ways between a client and a backend.
//
// A Tunnel drives the two endpoints its Session owns: the frame pumps (one FramePipe per
// direction), kernel splicing of large payloads, backpressure, the close handshake, frames it
// inserts itself (pings, pushes from the connections API, close frames at a frame boundary) and
// the message-rate limit. It decides why the connection closed (CloseDecision) and tells its
// owner once both sockets are closed or the close handshake ran out of time.
//
// What each side has seen is one explicit state per direction (Outbound, Inbound) rather than
// independent flags, so an impossible combination cannot be represented. The backend side is a
// pointer with its own Peer state, so a session can move to another backend (pools[].migrate,
// tunnel_move.cc): the client's messages are held from a message boundary on, the old backend
// is closed after the last message meant for it and relayed until its close reply, then the
// backend side points at the new Endpoint with a fresh Peer, and both pipes carry on (counters,
// the client side, pushes and timers are untouched).
#pragma once

#include <event2/buffer.h>
#include <event2/event.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/access_log.h"
#include "proxy/core/libevent_ptr.h"
#include "proxy/direct_socket.h"
#include "proxy/endpoint.h"
#include "proxy/frame_splicer.h"
#include "proxy/http/handshake.h"
#include "proxy/push_queue.h"

namespace wsgate {

// Why and by whom a WebSocket connection was closed. The first decision wins.
struct CloseDecision {
  uint16_t code = 0;
  ClosedBy by = ClosedBy::kUndecided;
  std::string reason;
  bool decided() const { return code != 0; }
  void Decide(uint16_t close_code, ClosedBy closed_by, std::string why) {
    if (code != 0) return;
    code = close_code;
    by = closed_by;
    reason = std::move(why);
  }
};

class TunnelOwner {
 public:
  // The tunnel is over: both sockets are closed, or the close handshake timed out. The owner
  // finishes the connection (and calls Tunnel::Stop) before returning.
  virtual void OnTunnelEnded() = 0;
  // "address:port" of the client, for log lines.
  virtual std::string ClientText() const = 0;
  // A move (Tunnel::BeginMove) is over: the backend side is now the endpoint given to
  // ReplaceBackend; the client's messages were held for |pause|.
  virtual void OnBackendReplaced(std::chrono::steady_clock::duration pause) = 0;
  // The backend closed or reset without a close frame, between two of its messages. Return true
  // after calling BeginMove to move the session instead of closing the client with 1014.
  virtual bool OnBackendLost() = 0;

 protected:
  ~TunnelOwner() = default;
};

class Tunnel {
 public:
  enum class Side : uint8_t { kClient, kBackend };

  // |client| and |backend| are owned by the caller and outlive the Tunnel; |config| too.
  // |negotiated| is the backend's valid 101 (extensions decide which RSV bits are allowed and
  // whether compressed messages are inspected).
  Tunnel(TunnelOwner& owner, event_base* base, const config::ProxyConfig& config, Endpoint& client,
         Endpoint& backend, const http::UpstreamVerdict& negotiated);
  Tunnel(const Tunnel&) = delete;
  Tunnel& operator=(const Tunnel&) = delete;
  ~Tunnel();

  // Take over both endpoints' callbacks (a plain-TCP client moves to a DirectSocket), start the
  // idle and ping timers, send |pushes| queued during the upgrade, then relay what either side
  // sent along with the handshake. Counts into |pool_metrics| unless it is null.
  void Start(metrics::PoolMetrics* pool_metrics, PushQueue pushes);
  // The owner is finishing: no callback does anything from now on. Idempotent.
  void Stop();
  bool ended() const { return ended_; }

  // Close gracefully: flush what was read from either side, then send the client |code| and
  // the backend 1001, each at a frame boundary; the close handshake is bounded by
  // timeouts.close.
  void GoAway(uint16_t code, const std::string& reason);
  // Connections API: queue a message to the client between backend messages. 200, 410 closing,
  // 429 over the write watermark, 503 out of memory.
  int Push(evbuffer* payload, bool text);
  // Connections API: close both sides with |code| and |reason|. 200, or 410 if closing.
  int CloseByApi(uint16_t code, const std::string& reason);

  // --- Moving the backend side (tunnel_move.cc). The owner opens the new backend's connection.
  // Hold the client's messages from the next message boundary on (reading pauses once the input
  // holds the write watermark). False when the tunnel is closing or already moving.
  bool BeginMove();
  // |next| answered its 101 (the owner checked the subprotocol and extensions). Once the client's
  // messages are held, the old backend gets close 1001 after the last message meant for it; its
  // messages until its close reply still reach the client (the reply does not), for at most
  // timeouts.close. Then |next| becomes the backend side, the held messages go to it, and the
  // owner hears OnBackendReplaced. If the old backend cut a message to the client short, the
  // client is closed (1014, or without a close frame inside a frame) and the move ends there.
  void ReplaceBackend(Endpoint& next);
  // The move failed: stop holding. With the old backend still usable, the held messages go to
  // it and the session carries on there (|end_session|: then both sides are closed, the client
  // with 1012, as a GoAway does); without one the client is closed with 1014.
  void CancelMove(bool end_session);
  bool moving() const { return move_ != nullptr; }

  bool closing() const { return closing_; }
  const CloseDecision& close() const { return close_; }
  std::chrono::steady_clock::time_point last_activity() const { return last_activity_; }
  // What reached each side; pushes count towards the client.
  uint64_t bytes_from_client() const { return client_to_backend_.bytes(); }
  uint64_t messages_from_client() const { return client_to_backend_.messages(); }
  uint64_t bytes_to_client() const { return backend_to_client_.bytes() + pushes_.bytes(); }
  uint64_t messages_to_client() const { return backend_to_client_.messages() + pushes_.messages(); }
  const PushQueue& pushes() const { return pushes_; }
  // Its figures and how it closed, for the access record and the on_disconnect hook. Pushes
  // reach the client like backend messages do, so they count in the *_out figures too.
  void Describe(AccessRecord& record) const;

 private:
  friend struct TunnelCallbacks;

  // What has been sent towards a side.
  enum class Outbound : uint8_t {
    kOpen,
    kCloseQueued,  // a close frame waits for the frame in flight towards it to end
    kCloseSent,    // a close frame to it was written (ours or the other side's, relayed)
  };
  // What has been read from a side.
  enum class Inbound : uint8_t {
    kOpen,
    kCloseReceived,  // its close frame was read: nothing after it is relayed
    kDiscarding,     // it broke the protocol or a limit: its bytes are dropped unread
  };
  struct QueuedClose {
    uint16_t code;
    std::string reason;
  };
  struct Peer {
    explicit Peer(Endpoint& endpoint) : socket(&endpoint) {}
    Endpoint* socket;
    Outbound out = Outbound::kOpen;
    Inbound in = Inbound::kOpen;
    bool backpressured = false;  // reading paused: the other side's output is full
    bool throttled = false;      // reading paused by the message-rate limit
    // With Outbound::kCloseQueued (allocated then: an open connection carries none of it).
    std::unique_ptr<QueuedClose> queued_close;
    SplicePipePtr splice;  // while part of a frame from it goes by splice(2)

    bool close_sent() const { return out == Outbound::kCloseSent; }
    bool close_received() const { return in != Inbound::kOpen; }
    bool done() const { return close_sent() && close_received(); }
  };

  Peer& peer(Side side) { return side == Side::kClient ? client_ : backend_; }
  Endpoint& socket(Side side) { return *peer(side).socket; }
  FramePipe& pipe_from(Side side) {
    return side == Side::kClient ? client_to_backend_ : backend_to_client_;
  }
  static Side Other(Side side) { return side == Side::kClient ? Side::kBackend : Side::kClient; }
  size_t high_watermark() const { return config_.limits.write_buffer_high_watermark; }

  void OnRead(Side from);
  void OnEvent(Side side, short what);
  void OnWritable(Side to);
  void Pump(Side from);
  void OnPeerGone(Side gone, bool clean);
  // |from| broke the protocol or a limit: it gets |code|, its peer 1001 (backend) or 1011.
  void OnViolation(Side from, uint16_t code, const char* what);
  void InsertClose(Side to, uint16_t code, const std::string& reason);
  void FlushPendingClose(Side to);
  void FlushPushed();  // the queued API messages to the client (at a message boundary)
  void CloseIfDone(Side side);
  void CloseAfterFlush(Side side);
  void CloseSocket(Side side);
  void EndIfBothClosed();
  // Both sides are done: tell the owner. |fallback| is who closed if nothing decided it yet.
  void End(ClosedBy fallback);
  // The close reason when the proxy itself closes both sides (idle, ping timeout, drain).
  void CloseBoth(uint16_t code, const std::string& reason, const std::string& backend_reason);

  // Kernel splicing of large frame payloads between two direct sockets (see tunnel.cc).
  void MaybeStartSplice(Side from);
  // Move the pipe's bytes to the sink; false if it cannot take them all yet (reading from
  // |from| is then paused until it can).
  bool DrainSplice(Side from);
  // The source is gone: its bytes still in the pipe go to the sink's output, as read bytes do.
  void SpliceToOutput(Side from);
  void EndSplice(Side from);
  // Let |from| splice up to the rest of its frame (|frame_left| bytes), as the pipe holds.
  void SpliceMore(Side from, uint64_t frame_left);

  // Moving (tunnel_move.cc). Every step runs from the move's own event, never inside a pump.
  void Attach(Side side);  // take over |side|'s socket callbacks and watermarks
  void WriteClose(Side to, uint16_t code, const std::string& reason);
  void ScheduleMoveStep();
  void ArmMoveStep(std::chrono::steady_clock::duration after);
  void OnMoveStep();
  void OnClientHeld();
  void RetireOldBackend();
  void SwapBackend();
  void EndFailedMove(bool end_session);
  // The tunnel closes for another reason while moving: the move is dropped (the owner notices).
  void DropMove();

  void ArmTimer(config::Duration after);
  void StartClosingTimer();
  void OnTimer();
  void OnPingTimer();
  void OnThrottleTimer();
  void NoteClientAlive(std::chrono::steady_clock::time_point now);

  TunnelOwner& owner_;
  event_base* base_;
  const config::ProxyConfig& config_;
  Peer client_;
  Peer backend_;
  FramePipe client_to_backend_;
  FramePipe backend_to_client_;
  PushQueue pushes_;
  CloseDecision close_;
  struct Move {
    Endpoint* next = nullptr;  // the new backend, upgraded
    bool held = false;         // the client's messages are held at a message boundary
    bool retired = false;      // the old backend was sent its close (or was gone)
    bool old_done = false;     // its close reply came, it is gone, or its time ran out
    bool cancelled = false;
    bool end_session = false;  // with cancelled
    std::chrono::steady_clock::time_point held_since{};
    // Until the held boundary, then until the old backend's close reply (timeouts.close each).
    std::chrono::steady_clock::time_point retire_deadline{};
    EventPtr step;  // runs OnMoveStep: at once when scheduled, or at retire_deadline
    // GoAway or CloseByApi arrived once the old backend was retired: done after the swap.
    std::unique_ptr<CloseDecision> deferred_close;
  };
  std::unique_ptr<Move> move_;  // while moving; an unmoved tunnel carries none of it
  EventPtr timer_;              // idle timeout, then the close handshake's deadline
  EventPtr ping_timer_;         // keepalive (timeouts.ping_interval); made only when enabled
  EventPtr throttle_timer_;     // resumes a client paused by rate_action: throttle (first use)
  std::chrono::steady_clock::time_point last_activity_;
  std::chrono::steady_clock::time_point last_client_data_;
  bool ping_outstanding_ = false;
  bool closing_ = false;  // a close handshake or teardown is under way
  bool closing_timer_armed_ = false;
  bool flush_all_ = false;  // ignore the watermark while flushing before a close
  bool ended_ = false;
};

}  // namespace wsgate
