// Fuzz target: the RFC 6455 frame codec (proxy/ws/frame.h).
//
// Input layout: byte 0 is a selector, the rest is a byte stream from one peer.
//   bit 0     expect_masked (client -> backend direction)
//   bit 1     allow_rsv1 (permessage-deflate negotiated)
//   bit 2     allow_all_rsv (unknown extension negotiated)
//   bits 3-5  max_message_bytes profile
//   bit 6     skip data-frame payloads while walking the stream (else headers back to back)
//   bit 7     mask the close frame built by BuildCloseFrame
//
// Properties checked:
//   * ParseFrameHeader: a complete header is 2..14 bytes and within the input, re-encodes to
//     exactly the input bytes (so the length encoding is minimal), and every shorter prefix
//     needs more; kInvalid only for the two cases the header names;
//   * MessageSequencer agrees frame by frame with a reference model written from RFC 6455;
//   * ValidateClosePayload and IsValidUtf8 agree with reference implementations (the UTF-8
//     one is the Unicode well-formed byte-sequence table, not a decoder);
//   * BuildCloseFrame produces a frame that parses and whose payload validates.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "proxy/ws/frame.h"

namespace {

using namespace wsgate::ws;

// --- Reference UTF-8 validator: Unicode 15, Table 3-7 (well-formed UTF-8 byte sequences). ---
bool RefIsValidUtf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  auto in = [&](size_t k, uint8_t lo, uint8_t hi) { return k < n && s[k] >= lo && s[k] <= hi; };
  while (i < n) {
    const uint8_t b = s[i];
    if (b <= 0x7F) {
      i += 1;
    } else if (b >= 0xC2 && b <= 0xDF) {
      if (!in(i + 1, 0x80, 0xBF)) return false;
      i += 2;
    } else if (b == 0xE0) {
      if (!in(i + 1, 0xA0, 0xBF) || !in(i + 2, 0x80, 0xBF)) return false;
      i += 3;
    } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
      if (!in(i + 1, 0x80, 0xBF) || !in(i + 2, 0x80, 0xBF)) return false;
      i += 3;
    } else if (b == 0xED) {
      if (!in(i + 1, 0x80, 0x9F) || !in(i + 2, 0x80, 0xBF)) return false;
      i += 3;
    } else if (b == 0xF0) {
      if (!in(i + 1, 0x90, 0xBF) || !in(i + 2, 0x80, 0xBF) || !in(i + 3, 0x80, 0xBF)) return false;
      i += 4;
    } else if (b >= 0xF1 && b <= 0xF3) {
      if (!in(i + 1, 0x80, 0xBF) || !in(i + 2, 0x80, 0xBF) || !in(i + 3, 0x80, 0xBF)) return false;
      i += 4;
    } else if (b == 0xF4) {
      if (!in(i + 1, 0x80, 0x8F) || !in(i + 2, 0x80, 0xBF) || !in(i + 3, 0x80, 0xBF)) return false;
      i += 4;
    } else {
      return false;  // 80..C1, F5..FF never start a sequence
    }
  }
  return true;
}

// --- Reference close-code rules: RFC 6455 §7.4.1 / §7.4.2 and the IANA registry. ---
bool RefWireCloseCode(unsigned code) {
  if (code < 1000) return false;
  if (code <= 1014) {
    // 1004 reserved, 1005/1006 never on the wire; 1015 (TLS failure) too.
    return code != 1004 && code != 1005 && code != 1006;
  }
  return code >= 3000 && code <= 4999;
}

uint16_t RefValidateClose(const uint8_t* p, size_t n) {
  if (n == 0) return 0;
  if (n == 1) return 1002;
  if (!RefWireCloseCode((unsigned{p[0]} << 8) | p[1])) return 1002;
  return RefIsValidUtf8(p + 2, n - 2) ? 0 : 1007;
}

// --- Reference sequencing model (RFC 6455 §5.1-§5.5, RFC 7692 §6). ---
struct RefSequencer {
  DirectionPolicy policy;
  bool in_message = false;
  uint64_t message_bytes = 0;

  uint16_t Admit(const FrameHeader& h, bool* completed) {
    *completed = false;
    if (h.masked != policy.expect_masked) return 1002;
    const bool control = h.opcode >= 0x8;
    if (h.rsv != 0 && !policy.allow_all_rsv) {
      const bool ok = h.rsv == 0x4 && policy.allow_rsv1 && (h.opcode == 0x1 || h.opcode == 0x2);
      if (!ok) return 1002;
    }
    if (control) {
      if (h.opcode != 0x8 && h.opcode != 0x9 && h.opcode != 0xA) return 1002;
      if (!h.fin || h.payload_length > 125) return 1002;
      return 0;
    }
    if (h.opcode == 0x1 || h.opcode == 0x2) {
      if (in_message) return 1002;
      message_bytes = 0;
    } else if (h.opcode == 0x0) {
      if (!in_message) return 1002;
    } else {
      return 1002;
    }
    // The total so far plus this frame, with the carry out of 64 bits kept.
    const uint64_t total = message_bytes + h.payload_length;
    const bool carry = total < message_bytes;
    if (carry || total > policy.max_message_bytes) return 1009;
    message_bytes = total;
    in_message = !h.fin;
    *completed = h.fin;
    return 0;
  }
};

uint64_t PickMaxMessage(unsigned profile) {
  static constexpr uint64_t kProfiles[8] = {
      0, 1, 125, 126, 65536, 16 * 1024 * 1024, (uint64_t{1} << 63) - 1, ~uint64_t{0}};
  return kProfiles[profile & 7];
}

// Serialize |h| the way RFC 6455 §5.2 lays it out, with the minimal length encoding.
std::string Encode(const FrameHeader& h) {
  std::string out;
  out.push_back(static_cast<char>((h.fin ? 0x80 : 0) | (h.rsv << 4) | h.opcode));
  const uint8_t mask_bit = h.masked ? 0x80 : 0;
  if (h.payload_length <= 125) {
    out.push_back(static_cast<char>(mask_bit | h.payload_length));
  } else if (h.payload_length <= 0xFFFF) {
    out.push_back(static_cast<char>(mask_bit | 126));
    out.push_back(static_cast<char>(h.payload_length >> 8));
    out.push_back(static_cast<char>(h.payload_length & 0xFF));
  } else {
    out.push_back(static_cast<char>(mask_bit | 127));
    for (int shift = 56; shift >= 0; shift -= 8) {
      out.push_back(static_cast<char>((h.payload_length >> shift) & 0xFF));
    }
  }
  if (h.masked) out.append(reinterpret_cast<const char*>(h.mask), 4);
  return out;
}

void CheckHeader(const uint8_t* data, size_t size) {
  FrameHeader h;
  const HeaderStatus status = ParseFrameHeader(data, size, &h);
  if (size < 2) {
    FUZZ_CHECK(status == HeaderStatus::kNeedMore);
    return;
  }
  const uint8_t len7 = data[1] & 0x7F;
  const size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
  const size_t needed = 2 + ext + ((data[1] & 0x80) ? 4 : 0);
  if (status == HeaderStatus::kInvalid) {
    // Only the two encodings no policy can allow.
    FUZZ_CHECK(size >= 2 + ext && ext != 0);
    if (ext == 2) {
      FUZZ_CHECK(((unsigned{data[2]} << 8) | data[3]) < 126);
    } else {
      uint64_t n = 0;
      for (size_t i = 2; i < 10; ++i) n = (n << 8) | data[i];
      FUZZ_CHECK((data[2] & 0x80) != 0 || n <= 0xFFFF);
    }
    return;
  }
  if (status == HeaderStatus::kNeedMore) {
    FUZZ_CHECK_MSG(size < needed, "need-more with %zu of %zu header bytes", size, needed);
    return;
  }
  FUZZ_CHECK(h.header_length == needed);
  FUZZ_CHECK(h.header_length >= 2 && h.header_length <= kMaxHeaderBytes);
  FUZZ_CHECK(h.header_length <= size);
  FUZZ_CHECK(h.rsv <= 7 && h.opcode <= 15);
  FUZZ_CHECK(h.payload_length <= (uint64_t{1} << 63) - 1);
  FUZZ_CHECK(h.IsControl() == (h.opcode >= 8));
  // Re-encoding gives back exactly the bytes parsed: fields decoded right, encoding minimal.
  const std::string again = Encode(h);
  FUZZ_CHECK(again.size() == h.header_length);
  FUZZ_CHECK(again == std::string_view(reinterpret_cast<const char*>(data), h.header_length));
  // Every shorter prefix needs more (and never writes the output).
  for (size_t k = 0; k < h.header_length; ++k) {
    FrameHeader untouched;
    untouched.payload_length = 12345;
    const HeaderStatus s = ParseFrameHeader(data, k, &untouched);
    FUZZ_CHECK_MSG(s == HeaderStatus::kNeedMore, "prefix %zu of a %zu-byte header gave %d", k,
                   h.header_length, static_cast<int>(s));
    FUZZ_CHECK(untouched.payload_length == 12345);
  }
}

void CheckSequence(const uint8_t* data, size_t size, const DirectionPolicy& policy,
                   bool skip_payloads) {
  MessageSequencer sequencer(policy);
  RefSequencer model{policy};
  size_t pos = 0;
  size_t frames = 0;
  while (pos < size && frames < 4096) {
    FrameHeader h;
    if (ParseFrameHeader(data + pos, size - pos, &h) != HeaderStatus::kComplete) break;
    ++frames;
    pos += h.header_length;
    bool completed = false;
    const uint16_t expected = model.Admit(h, &completed);
    const uint16_t got = sequencer.Admit(h);
    FUZZ_CHECK_MSG(got == expected,
                   "frame %zu (fin=%d rsv=%d op=%d masked=%d len=%llu): Admit=%u, model=%u", frames,
                   h.fin, h.rsv, h.opcode, h.masked,
                   static_cast<unsigned long long>(h.payload_length), got, expected);
    FUZZ_CHECK(got == 0 || got == kProtocolError || got == kMessageTooBig);
    FUZZ_CHECK(sequencer.message_completed() == completed);
    if (got != 0) break;  // the connection is closed after a violation

    const size_t available = size - pos;
    const size_t payload =
        h.payload_length < available ? static_cast<size_t>(h.payload_length) : available;
    if (h.opcode == kClose && payload == h.payload_length) {
      // Unmask and check the close payload the way the splicer does.
      uint8_t buf[kMaxControlPayload];
      for (size_t i = 0; i < payload; ++i) {
        buf[i] = static_cast<uint8_t>(data[pos + i] ^ (h.masked ? h.mask[i % 4] : 0));
      }
      FUZZ_CHECK(ValidateClosePayload(buf, payload) == RefValidateClose(buf, payload));
    }
    if (h.IsControl() || skip_payloads) pos += payload;
  }
}

void CheckUtf8(const uint8_t* data, size_t size) {
  for (size_t shift = 0; shift < 4 && shift <= size; ++shift) {
    const bool got = IsValidUtf8(data + shift, size - shift);
    const bool want = RefIsValidUtf8(data + shift, size - shift);
    FUZZ_CHECK_MSG(got == want, "IsValidUtf8=%d, reference=%d on %zu bytes at offset %zu", got,
                   want, size - shift, shift);
  }
}

void CheckCloseFrame(const uint8_t* data, size_t size, bool masked) {
  if (size < 2) return;
  const uint16_t code = static_cast<uint16_t>((data[0] << 8) | data[1]);
  const std::string_view reason(reinterpret_cast<const char*>(data + 2), size - 2);
  const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
  const std::string frame = BuildCloseFrame(code, reason, masked ? mask : nullptr);
  const auto* bytes = reinterpret_cast<const uint8_t*>(frame.data());
  FrameHeader h;
  FUZZ_CHECK(ParseFrameHeader(bytes, frame.size(), &h) == HeaderStatus::kComplete);
  FUZZ_CHECK(h.fin && h.rsv == 0 && h.opcode == kClose && h.masked == masked);
  FUZZ_CHECK(h.payload_length <= kMaxControlPayload);
  FUZZ_CHECK(h.header_length + h.payload_length == frame.size());
  uint8_t payload[kMaxControlPayload];
  for (size_t i = 0; i < h.payload_length; ++i) {
    payload[i] = static_cast<uint8_t>(bytes[h.header_length + i] ^ (masked ? mask[i % 4] : 0));
  }
  FUZZ_CHECK(((payload[0] << 8) | payload[1]) == code);
  const size_t kept = static_cast<size_t>(h.payload_length) - 2;
  FUZZ_CHECK(reason.substr(0, kept) ==
             std::string_view(reinterpret_cast<const char*>(payload + 2), kept));
  // What the proxy sends must be what it would accept: a valid code with a valid UTF-8 reason
  // stays valid, whatever truncation was needed.
  if (IsValidWireCloseCode(code) && RefIsValidUtf8(data + 2, size - 2)) {
    FUZZ_CHECK_MSG(ValidateClosePayload(payload, static_cast<size_t>(h.payload_length)) == 0,
                   "BuildCloseFrame(%u, <%zu-byte valid UTF-8 reason>) yields an invalid close "
                   "payload (reason cut to %zu bytes)",
                   code, reason.size(), kept);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t selector = data[0];
  // Own copy, so ASan flags any read past the end.
  const std::vector<uint8_t> copy(data + 1, data + size);
  const uint8_t* stream = copy.data();
  const size_t n = copy.size();

  DirectionPolicy policy;
  policy.expect_masked = (selector & 0x01) != 0;
  policy.allow_rsv1 = (selector & 0x02) != 0;
  policy.allow_all_rsv = (selector & 0x04) != 0;
  policy.max_message_bytes = PickMaxMessage((selector >> 3) & 7);

  CheckHeader(stream, n);
  CheckSequence(stream, n, policy, (selector & 0x40) != 0);
  FUZZ_CHECK(ValidateClosePayload(stream, n) == RefValidateClose(stream, n));
  if (n >= 2) {
    const unsigned code = (unsigned{stream[0]} << 8) | stream[1];
    FUZZ_CHECK(IsValidWireCloseCode(static_cast<uint16_t>(code)) == RefWireCloseCode(code));
  }
  CheckUtf8(stream, n);
  CheckCloseFrame(stream, n, (selector & 0x80) != 0);
  return 0;
}
