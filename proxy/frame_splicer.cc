#include "proxy/frame_splicer.h"

#include <algorithm>

namespace wsgate {
namespace {

metrics::FrameKind KindOf(uint8_t opcode) {
  switch (opcode) {
    case ws::kText:
      return metrics::kText;
    case ws::kBinary:
      return metrics::kBinary;
    case ws::kPing:
      return metrics::kPing;
    case ws::kPong:
      return metrics::kPong;
    case ws::kClose:
      return metrics::kClose;
    default:
      return metrics::kContinuation;
  }
}

}  // namespace

bool FramePipe::TakeToken() {
  auto now = std::chrono::steady_clock::now();
  if (refilled_at_ != std::chrono::steady_clock::time_point{}) {
    double elapsed = std::chrono::duration<double>(now - refilled_at_).count();
    tokens_ = std::min(rate_, tokens_ + elapsed * rate_);
  }
  refilled_at_ = now;
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

FramePipe::Result FramePipe::Violation(uint16_t code) {
  violation_code_ = code;
  return Result::kViolation;
}

FramePipe::Result FramePipe::Pump(evbuffer* source, evbuffer* sink, size_t high_watermark) {
  while (true) {
    size_t available = evbuffer_get_length(source);
    if (remaining_ > 0) {
      if (available == 0) return Result::kDrained;
      if (MoveFrameBytes(source, sink, available)) return Result::kCloseRelayed;
      if (sink != nullptr && evbuffer_get_length(sink) >= high_watermark) {
        return Result::kOutputFull;
      }
      continue;
    }
    if (close_relayed_) {
      // RFC 6455 §5.5.1: nothing may follow a close frame; drop whatever does.
      evbuffer_drain(source, available);
      return Result::kDrained;
    }
    if (stop_requested_ && sink != nullptr) return Result::kStopped;
    if (stop_at_message_ && sink != nullptr && !sequencer_.in_message()) {
      stop_at_message_ = false;
      return Result::kMessageBoundary;
    }
    if (available == 0) return Result::kDrained;
    if (sink != nullptr && evbuffer_get_length(sink) >= high_watermark) {
      return Result::kOutputFull;
    }

    uint8_t header_bytes[ws::kMaxHeaderBytes];
    ev_ssize_t copied = evbuffer_copyout(source, header_bytes, sizeof(header_bytes));
    if (copied < 0) return Result::kDrained;
    ws::FrameHeader header;
    switch (ws::ParseFrameHeader(header_bytes, static_cast<size_t>(copied), &header)) {
      case ws::HeaderStatus::kNeedMore:
        return Result::kDrained;
      case ws::HeaderStatus::kInvalid:
        return Violation(ws::kProtocolError);
      case ws::HeaderStatus::kComplete:
        break;
    }
    // The rate counts messages, so only a frame that starts one spends a token; it is checked
    // before Admit() so a throttled frame is simply parsed again later.
    if (rate_ > 0 && sink != nullptr && (header.opcode == ws::kText || header.opcode == ws::kBinary) &&
        !TakeToken()) {
      return Result::kRateLimited;
    }
    if (uint16_t code = sequencer_.Admit(header); code != 0) return Violation(code);

    current_is_close_ = header.opcode == ws::kClose;
    if (current_is_close_) {
      // Wait for the whole close frame (≤ 139 bytes) so its code can be checked and logged.
      size_t total = header.header_length + static_cast<size_t>(header.payload_length);
      if (available < total) return Result::kDrained;
      uint8_t frame[ws::kMaxHeaderBytes + ws::kMaxControlPayload];
      evbuffer_copyout(source, frame, total);
      uint8_t* payload = frame + header.header_length;
      size_t payload_length = static_cast<size_t>(header.payload_length);
      if (header.masked) {
        for (size_t i = 0; i < payload_length; ++i) payload[i] ^= header.mask[i % 4];
      }
      if (uint16_t code = ws::ValidateClosePayload(payload, payload_length); code != 0) {
        return Violation(code);
      }
      close_code_ = payload_length >= 2 ? static_cast<uint16_t>((payload[0] << 8) | payload[1])
                                        : static_cast<uint16_t>(ws::kNoStatus);
      if (payload_length > 2) {
        close_reason_.assign(reinterpret_cast<const char*>(payload + 2), payload_length - 2);
      }
    }
    if (sink != nullptr) {
      ++frames_;
      if (sequencer_.message_completed()) ++messages_;
    }
    if (metrics_ != nullptr && sink != nullptr) {
      metrics_->frames[direction_][KindOf(header.opcode)].Add();
      if (sequencer_.message_completed()) metrics_->messages[direction_].Add();
    }
    // Header and payload move together: a small frame that fills its chain moves as that chain.
    remaining_ = header.header_length + header.payload_length;
    if (MoveFrameBytes(source, sink, available)) return Result::kCloseRelayed;
    if (sink != nullptr && evbuffer_get_length(sink) >= high_watermark) {
      return Result::kOutputFull;
    }
  }
}

void FramePipe::SplicedToSink(size_t n) {
  remaining_ -= n;
  bytes_ += n;
  if (metrics_ != nullptr) metrics_->bytes[direction_].Add(n);
}

bool FramePipe::MoveFrameBytes(evbuffer* source, evbuffer* sink, size_t available) {
  size_t n = static_cast<size_t>(std::min<uint64_t>(available, remaining_));
  // evbuffer_remove_buffer hands whole chains over without copying the payload.
  if (sink != nullptr) {
    evbuffer_remove_buffer(source, sink, n);
    bytes_ += n;  // counts what was relayed, not what was dropped
    if (metrics_ != nullptr) metrics_->bytes[direction_].Add(n);
  } else {
    evbuffer_drain(source, n);
  }
  remaining_ -= n;
  if (remaining_ == 0 && current_is_close_) {
    close_relayed_ = true;
    return true;
  }
  return false;
}

}  // namespace wsgate
