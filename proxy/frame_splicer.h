// Stage 4 of 4: one direction of a spliced WebSocket connection.
//
// FramePipe moves frames from a source evbuffer to a sink evbuffer as they arrive, without
// reassembling messages and without unmasking payloads: only the ≤14 header bytes (and a close
// frame's ≤125-byte payload) are copied out to inspect. It always knows where the next frame
// starts, so the session can insert a close frame at a boundary, never inside a relayed frame.
#pragma once

#include <event2/buffer.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "metrics/metrics.h"
#include "proxy/ws/frame.h"
#include "proxy/ws/inflate_counter.h"

namespace wsgate {

class FramePipe {
 public:
  explicit FramePipe(ws::DirectionPolicy policy) : sequencer_(policy) {}

  enum class Result {
    kDrained,          // all input consumed (a partial header may wait for more bytes)
    kOutputFull,       // the sink reached the high watermark; call again when it drains
    kCloseRelayed,     // a close frame went through; later input from this source is dropped
    kStopped,          // StopAtBoundary() took effect; the source's input is left untouched
    kViolation,        // protocol violation; violation_code() says which close code to send
    kRateLimited,      // the next frame starts a message over the rate; it is left in the source
    kMessageBoundary,  // StopAtMessageBoundary() took effect: no message is open now
  };

  // Forward from |source| to |sink| until one of the results above. When |sink| is null the
  // frames are parsed and dropped (the other side is gone or closing), so a close frame from
  // the source is still noticed.
  Result Pump(evbuffer* source, evbuffer* sink, size_t high_watermark);

  // Count frames, messages and bytes live into |pool| as |direction| (null: don't).
  void set_metrics(metrics::PoolMetrics* pool, metrics::Direction direction) {
    metrics_ = pool;
    direction_ = direction;
  }

  // Allow at most |per_second| new messages per second (a token bucket holding one second's
  // worth); 0 = unlimited. |now| is read once per new message.
  void set_message_rate(uint64_t per_second) {
    rate_ = static_cast<double>(per_second);
    tokens_ = rate_;
  }
  // limits.compression: inspect. Messages with RSV1 (permessage-deflate) are inflated as they
  // pass, only to count them against max_message_bytes: over it kViolation with 1009, bad data
  // 1007. |window_bits| and |context_takeover| are what the sender agreed to. A compressed frame
  // of at most |hold_bytes| is held until it is whole, so one that is too big never starts
  // towards the sink; a longer one is inflated chunk by chunk before each chunk is forwarded.
  void set_inflate(uint8_t window_bits, bool context_takeover, size_t hold_bytes) {
    inflate_window_bits_ = window_bits;
    inflate_context_takeover_ = context_takeover;
    inflate_hold_bytes_ = static_cast<uint32_t>(std::min<size_t>(hold_bytes, UINT32_MAX));
  }
  // Part of the current frame has reached the sink, so a close frame cannot be inserted until
  // it ends (after a kViolation inside a frame it never will).
  bool frame_started() const { return remaining_ > 0 && frame_forwarded_; }
  const ws::InflateCounter* inflate_counter() const {
    return inflation_ ? &inflation_->counter : nullptr;
  }

  // Seconds until the next message may start (after kRateLimited).
  double SecondsUntilToken() const { return rate_ > 0 ? (1.0 - tokens_) / rate_ : 0; }

  // Finish the frame being relayed, then stop (Pump returns kStopped).
  void StopAtBoundary() { stop_requested_ = true; }
  bool at_boundary() const { return remaining_ == 0; }
  // A compressed frame is arriving and held back to be inflated whole (limits.compression:
  // inspect): none of it reached the sink, but a close inserted now would drop it, so a
  // graceful close waits for it like for a frame in flight.
  bool holding_frame() const { return holding_; }
  // Stop once no message is open (Pump returns kMessageBoundary, once), so the session can
  // insert whole messages of its own between the source's, never inside a fragmented one.
  void StopAtMessageBoundary() { stop_at_message_ = true; }
  bool at_message_boundary() const { return remaining_ == 0 && !sequencer_.in_message(); }
  bool close_relayed() const { return close_relayed_; }

  // Moving a session to another backend (issue 19). Swallow the source's close frame: it is
  // parsed and reported (kCloseRelayed) but never reaches the sink, so the client never sees
  // the old backend's close reply.
  void SwallowClose() { swallow_close_ = true; }
  // The source or the sink is now another socket: forget the close that passed and any stop
  // requested, keeping the counters and the message sequencing (the caller is at a message
  // boundary, where the new peer starts).
  void ContinueWithNewPeer() {
    close_relayed_ = swallow_close_ = stop_requested_ = stop_at_message_ = false;
    close_code_ = 0;
    close_reason_.clear();
  }

  // Kernel splicing of a data frame's payload tail, past both evbuffers. Bytes of the current
  // frame not yet moved by Pump(); 0 between frames and for close frames, which are parsed.
  // A frame being inflated is never spliced: its bytes must be seen.
  uint64_t spliceable_bytes() const {
    return current_is_close_ || inflating_frame_ ? 0 : remaining_;
  }
  // |n| of those bytes reached the sink socket (counted like relayed bytes) or were dropped.
  // Until they do, at_boundary() stays false, so nothing can be inserted before them.
  void SplicedToSink(size_t n);
  void SplicedAndDropped(size_t n) { remaining_ -= n; }

  uint16_t violation_code() const { return violation_code_; }
  // The violation was found by inflating a compressed message (too big, or not DEFLATE).
  bool violation_in_inflate() const { return violation_in_inflate_; }
  // Close code of the close frame that passed (1005 if it had none); 0 if none passed.
  uint16_t close_code() const { return close_code_; }
  const std::string& close_reason() const { return close_reason_; }

  // What reached the sink (frames parsed and dropped in discard mode are not counted).
  uint64_t bytes() const { return bytes_; }
  uint64_t frames() const { return frames_; }
  uint64_t messages() const { return messages_; }

 private:
  Result Violation(uint16_t code);
  // Move up to |available| bytes of the current frame; true once a whole close frame went.
  bool MoveFrameBytes(evbuffer* source, evbuffer* sink, size_t available);
  // Inflate the payload among the next |n| bytes of the current frame (before they move);
  // returns 0 or the close code for the sender.
  uint16_t InspectFrameBytes(evbuffer* source, size_t n);

  ws::MessageSequencer sequencer_;
  uint64_t remaining_ = 0;  // bytes of the current frame (header and payload) still to move
  bool current_is_close_ = false;
  bool frame_forwarded_ = false;  // some of the current frame went to the sink
  bool holding_ = false;          // a compressed frame waits in the source to arrive whole
  bool violation_in_inflate_ = false;
  bool inflating_frame_ = false;     // the current frame's payload is inflated (set_inflate)
  uint8_t inflate_window_bits_ = 0;  // 0: no inspection
  bool inflate_context_takeover_ = true;
  bool stop_requested_ = false;
  bool stop_at_message_ = false;
  bool close_relayed_ = false;
  bool swallow_close_ = false;
  uint16_t violation_code_ = 0;
  uint16_t close_code_ = 0;
  std::string close_reason_;
  uint64_t bytes_ = 0;
  uint64_t frames_ = 0;
  uint64_t messages_ = 0;
  bool TakeToken();

  double rate_ = 0;  // messages per second; 0 = unlimited
  double tokens_ = 0;
  std::chrono::steady_clock::time_point refilled_at_{};
  metrics::PoolMetrics* metrics_ = nullptr;
  metrics::Direction direction_ = metrics::kClientToBackend;
  uint32_t inflate_hold_bytes_ = 0;  // fills the padding after direction_

  // permessage-deflate inspection (set_inflate). Made on the first compressed message, so a
  // connection that never compresses holds none of it (and every pipe stays small).
  struct Inflation {
    Inflation(uint8_t window_bits, bool context_takeover)
        : counter(window_bits, context_takeover) {}
    ws::InflateCounter counter;
    uint8_t mask[4] = {0, 0, 0, 0};  // the current frame's
    uint8_t header_left = 0;         // header bytes of the current frame not yet inspected
    uint8_t mask_phase = 0;          // payload bytes of the current frame inspected, mod 4
    bool masked = false;
    bool ends_message = false;  // the current frame has FIN
    bool in_message = false;    // the open message is compressed
  };
  std::unique_ptr<Inflation> inflation_;
};

}  // namespace wsgate
