#include "proxy/ws/frame.h"

namespace wsgate::ws {

HeaderStatus ParseFrameHeader(const uint8_t* data, size_t length, FrameHeader* out) {
  if (length < 2) return HeaderStatus::kNeedMore;
  FrameHeader h;
  h.fin = (data[0] & 0x80) != 0;
  h.rsv = static_cast<uint8_t>((data[0] >> 4) & 0x7);
  h.opcode = data[0] & 0x0F;
  h.masked = (data[1] & 0x80) != 0;
  uint8_t len7 = data[1] & 0x7F;
  size_t pos = 2;
  if (len7 == 126) {
    if (length < 4) return HeaderStatus::kNeedMore;
    h.payload_length = (uint64_t{data[2]} << 8) | data[3];
    pos = 4;
    if (h.payload_length < 126) return HeaderStatus::kInvalid;  // §5.2: minimal encoding
  } else if (len7 == 127) {
    if (length < 10) return HeaderStatus::kNeedMore;
    if ((data[2] & 0x80) != 0) return HeaderStatus::kInvalid;  // §5.2: top bit must be 0
    uint64_t n = 0;
    for (size_t i = 2; i < 10; ++i) n = (n << 8) | data[i];
    h.payload_length = n;
    pos = 10;
    if (h.payload_length <= 0xFFFF) return HeaderStatus::kInvalid;
  } else {
    h.payload_length = len7;
  }
  if (h.masked) {
    if (length < pos + 4) return HeaderStatus::kNeedMore;
    for (size_t i = 0; i < 4; ++i) h.mask[i] = data[pos + i];
    pos += 4;
  }
  h.header_length = pos;
  *out = h;
  return HeaderStatus::kComplete;
}

uint16_t MessageSequencer::Admit(const FrameHeader& h) {
  message_completed_ = false;
  if (uint16_t code = Check(h); code != 0) return code;
  if (h.IsControl()) return 0;
  if (h.opcode != kContinuation) message_bytes_ = 0;
  message_bytes_ += h.payload_length;
  in_message_ = !h.fin;
  message_completed_ = h.fin;
  return 0;
}

uint16_t MessageSequencer::Check(const FrameHeader& h) const {
  // §5.1: a server must not mask, a client must.
  if (h.masked != policy_.expect_masked) return kProtocolError;
  // §5.2: reserved bits need a negotiated extension; permessage-deflate defines RSV1 on the
  // first frame of a data message only (RFC 7692 §6).
  if (h.rsv != 0 && !policy_.allow_all_rsv) {
    bool rsv1_only = h.rsv == 0x4;
    bool first_data_frame = h.opcode == kText || h.opcode == kBinary;
    if (!(rsv1_only && policy_.allow_rsv1 && first_data_frame)) return kProtocolError;
  }
  switch (h.opcode) {
    case kClose:
    case kPing:
    case kPong:
      // §5.5: control frames are short and never fragmented.
      if (!h.fin || h.payload_length > kMaxControlPayload) return kProtocolError;
      return 0;
    case kText:
    case kBinary:
      if (in_message_) return kProtocolError;  // §5.4: a new message inside a fragmented one
      return h.payload_length > policy_.max_message_bytes ? kMessageTooBig : 0;
    case kContinuation:
      if (!in_message_) return kProtocolError;
      return h.payload_length > policy_.max_message_bytes - message_bytes_ ? kMessageTooBig : 0;
    default:
      return kProtocolError;  // reserved opcodes
  }
}

bool IsValidWireCloseCode(uint16_t code) {
  if (code >= 3000 && code <= 4999) return true;
  switch (code) {
    case 1000:
    case 1001:
    case 1002:
    case 1003:
    case 1007:
    case 1008:
    case 1009:
    case 1010:
    case 1011:
    case 1012:
    case 1013:
    case 1014:
      return true;
    default:
      return false;
  }
}

bool IsValidUtf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t extra = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      extra = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= n) return false;
    for (size_t k = 1; k <= extra; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are invalid.
    if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

uint16_t ValidateClosePayload(const uint8_t* payload, size_t length) {
  if (length == 0) return 0;
  if (length == 1) return kProtocolError;
  uint16_t code = static_cast<uint16_t>((payload[0] << 8) | payload[1]);
  if (!IsValidWireCloseCode(code)) return kProtocolError;
  if (!IsValidUtf8(payload + 2, length - 2)) return kInvalidPayload;
  return 0;
}

std::string BuildCloseFrame(uint16_t code, std::string_view reason, const uint8_t* mask) {
  if (reason.size() > kMaxControlPayload - 2) {
    // Cut at a character boundary: the reason must stay valid UTF-8 (§5.5.1).
    size_t n = kMaxControlPayload - 2;
    while (n > 0 && (static_cast<uint8_t>(reason[n]) & 0xC0) == 0x80) --n;
    reason = reason.substr(0, n);
  }
  size_t payload_length = 2 + reason.size();
  std::string frame;
  frame.reserve(2 + 4 + payload_length);
  frame.push_back(static_cast<char>(0x80 | kClose));
  frame.push_back(static_cast<char>((mask != nullptr ? 0x80 : 0x00) | payload_length));
  if (mask != nullptr) frame.append(reinterpret_cast<const char*>(mask), 4);
  size_t payload_start = frame.size();
  frame.push_back(static_cast<char>(code >> 8));
  frame.push_back(static_cast<char>(code & 0xFF));
  frame.append(reason);
  if (mask != nullptr) {
    for (size_t i = payload_start; i < frame.size(); ++i) {
      frame[i] = static_cast<char>(frame[i] ^ mask[(i - payload_start) % 4]);
    }
  }
  return frame;
}

}  // namespace wsgate::ws
