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
  // A frame stopped by inspection before any of it moved is dropped whole: the sink is at a
  // boundary again and can still get a close frame.
  if (!frame_forwarded_) remaining_ = 0;
  return Result::kViolation;
}

uint16_t FramePipe::InspectFrameBytes(evbuffer* source, size_t n) {
  Inflation& in = *inflation_;
  bool frame_done = n == remaining_;
  uint64_t inflated_before = in.counter.message_bytes();
  size_t skip = std::min<size_t>(in.header_left, n);
  in.header_left = static_cast<uint8_t>(in.header_left - skip);
  size_t left = n - skip;
  ws::InflateCounter::Status status = ws::InflateCounter::Status::kOk;
  evbuffer_ptr at;
  if (left > 0 && evbuffer_ptr_set(source, &at, skip, EVBUFFER_PTR_SET) != 0) {
    return ws::kInternalError;
  }
  while (left > 0 && status == ws::InflateCounter::Status::kOk) {
    // Read the payload where it lies in the evbuffer's chains; only a masked chunk is copied,
    // to unmask it, into a small buffer that is reused.
    evbuffer_iovec vectors[4];
    int count = evbuffer_peek(source, static_cast<ev_ssize_t>(left), &at, vectors, 4);
    if (count <= 0) return ws::kInternalError;
    size_t advanced = 0;
    for (int i = 0; i < std::min(count, 4) && left > 0 && status == ws::InflateCounter::Status::kOk;
         ++i) {
      const auto* data = static_cast<const uint8_t*>(vectors[i].iov_base);
      size_t length = std::min(vectors[i].iov_len, left);
      if (!in.masked) {
        status = in.counter.Feed(data, length);
      } else {
        uint8_t unmasked[4096];
        for (size_t done = 0; done < length && status == ws::InflateCounter::Status::kOk;) {
          size_t chunk = std::min(length - done, sizeof(unmasked));
          for (size_t k = 0; k < chunk; ++k) {
            unmasked[k] = data[done + k] ^ in.mask[(in.mask_phase + k) & 3];
          }
          in.mask_phase = static_cast<uint8_t>((in.mask_phase + chunk) & 3);
          status = in.counter.Feed(unmasked, chunk);
          done += chunk;
        }
      }
      left -= length;
      advanced += length;
    }
    if (left > 0 && evbuffer_ptr_set(source, &at, advanced, EVBUFFER_PTR_ADD) != 0) {
      return ws::kInternalError;
    }
  }
  if (status == ws::InflateCounter::Status::kOk && frame_done && in.ends_message) {
    status = in.counter.EndMessage();
  }
  if (metrics_ != nullptr) {
    metrics_->inflated_bytes[direction_].Add(in.counter.message_bytes() - inflated_before);
  }
  switch (status) {
    case ws::InflateCounter::Status::kOk:
      return 0;
    case ws::InflateCounter::Status::kTooBig:
      return ws::kMessageTooBig;
    case ws::InflateCounter::Status::kInvalid:
      return ws::kInvalidPayload;
    case ws::InflateCounter::Status::kNoMemory:
      break;
  }
  return ws::kInternalError;
}

FramePipe::Result FramePipe::Pump(evbuffer* source, evbuffer* sink, size_t high_watermark) {
  while (true) {
    size_t available = evbuffer_get_length(source);
    if (remaining_ > 0) {
      if (available == 0) return Result::kDrained;
      if (inflating_frame_ && sink != nullptr) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(available, remaining_));
        if (uint16_t code = InspectFrameBytes(source, n); code != 0) {
          violation_in_inflate_ = true;
          return Violation(code);
        }
      }
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
    if (stop_requested_ && !holding_ && sink != nullptr) return Result::kStopped;
    // Also without a sink: a session moving off a lost backend drops the rest of the message
    // that was going to it, then holds the next one for the new backend.
    if (stop_at_message_ && !sequencer_.in_message()) {
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
    // limits.compression: inspect. Decided before Admit() so a held frame is parsed again later.
    bool compressed_frame = false;
    if (inflate_window_bits_ != 0 && sink != nullptr && !header.IsControl()) {
      compressed_frame = header.opcode == ws::kContinuation
                             ? inflation_ != nullptr && inflation_->in_message
                             : (header.rsv & 0x4) != 0;
      uint64_t total = header.header_length + header.payload_length;
      // A frame that breaks the protocol is not waited for: it fails at once, as without
      // inspection.
      if (compressed_frame && total <= inflate_hold_bytes_ && available < total &&
          sequencer_.Check(header) == 0) {
        holding_ = true;
        return Result::kDrained;  // inflate it whole, before any of it moves
      }
    }
    holding_ = false;
    // The rate counts messages, so only a frame that starts one spends a token; it is checked
    // before Admit() so a throttled frame is simply parsed again later.
    if (rate_ > 0 && sink != nullptr &&
        (header.opcode == ws::kText || header.opcode == ws::kBinary) && !TakeToken()) {
      return Result::kRateLimited;
    }
    if (uint16_t code = sequencer_.Admit(header); code != 0) return Violation(code);
    frame_forwarded_ = false;
    inflating_frame_ = compressed_frame;  // never a control frame between fragments
    if (compressed_frame) {
      if (!inflation_) {
        inflation_ = std::make_unique<Inflation>(inflate_window_bits_, inflate_context_takeover_);
      }
      Inflation& in = *inflation_;
      if (header.opcode != ws::kContinuation) {
        in.counter.BeginMessage(sequencer_.policy().max_message_bytes);
      }
      in.in_message = !header.fin;
      in.ends_message = header.fin;
      in.header_left = static_cast<uint8_t>(header.header_length);
      in.masked = header.masked;
      std::copy(header.mask, header.mask + 4, in.mask);
      in.mask_phase = 0;
    } else if (inflation_ && !header.IsControl()) {
      inflation_->in_message = false;  // an uncompressed message, or one not inspected
    }

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
      if (swallow_close_) {
        evbuffer_drain(source, total);
        close_relayed_ = true;
        return Result::kCloseRelayed;
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
    if (inflating_frame_) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(available, remaining_));
      if (uint16_t code = InspectFrameBytes(source, n); code != 0) {
        violation_in_inflate_ = true;
        return Violation(code);
      }
    }
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
    if (n > 0) frame_forwarded_ = true;
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
