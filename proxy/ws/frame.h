// RFC 6455 §5 frame codec: header parsing, per-direction sequencing rules, close frames.
//
// Pure and allocation-free: it reads at most 14 header bytes (or a ≤125-byte close payload) and
// never touches data-frame payloads, which the splicer moves through evbuffers untouched.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace wsgate::ws {

enum Opcode : uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

// Close codes wsgate sends or checks (RFC 6455 §7.4.1).
enum CloseCode : uint16_t {
  kNormal = 1000,
  kGoingAway = 1001,
  kProtocolError = 1002,
  kNoStatus = 1005,  // never on the wire: the close frame had no code
  kAbnormal = 1006,  // never on the wire: TCP closed without a close frame
  kInvalidPayload = 1007,
  kPolicyViolation = 1008,
  kMessageTooBig = 1009,
  kInternalError = 1011,
  kServiceRestart = 1012,
  kBadGateway = 1014,
};

constexpr size_t kMaxHeaderBytes = 14;
constexpr size_t kMaxControlPayload = 125;

struct FrameHeader {
  bool fin = false;
  uint8_t rsv = 0;  // RSV1..3 as bits 0x4, 0x2, 0x1
  uint8_t opcode = 0;
  bool masked = false;
  uint8_t mask[4] = {0, 0, 0, 0};
  uint64_t payload_length = 0;
  size_t header_length = 0;

  bool IsControl() const { return (opcode & 0x8) != 0; }
};

enum class HeaderStatus { kNeedMore, kComplete, kInvalid };

// Parse the header at the start of |data|. kInvalid covers what no policy can allow: a 64-bit
// length with the top bit set, and non-minimal length encodings.
HeaderStatus ParseFrameHeader(const uint8_t* data, size_t length, FrameHeader* out);

// What one direction of a connection permits.
struct DirectionPolicy {
  bool expect_masked = false;  // true for client → backend
  bool allow_rsv1 = false;     // permessage-deflate negotiated
  bool allow_all_rsv = false;  // an extension wsgate does not know was negotiated
  uint64_t max_message_bytes = 16 * 1024 * 1024;
};

// Sequencing state for one direction: which message is open and how large it has grown.
class MessageSequencer {
 public:
  explicit MessageSequencer(DirectionPolicy policy) : policy_(policy) {}

  // Check |header| against RFC 6455 and the policy, and advance the state. Return 0 if the frame
  // may pass, or the close code to send the sender (1002 protocol error, 1009 too big).
  uint16_t Admit(const FrameHeader& header);
  // What Admit() would return for |header|, without advancing the state.
  uint16_t Check(const FrameHeader& header) const;

  // True after a data frame with FIN completed a message in the last Admit().
  bool message_completed() const { return message_completed_; }
  // True while a fragmented message has begun and its final frame has not arrived.
  bool in_message() const { return in_message_; }
  const DirectionPolicy& policy() const { return policy_; }

 private:
  DirectionPolicy policy_;
  bool in_message_ = false;
  uint64_t message_bytes_ = 0;
  bool message_completed_ = false;
};

// Check a close payload (already unmasked): empty, or a code valid on the wire plus UTF-8 reason.
// Return 0 if valid, else the close code to answer with (1002, or 1007 for a bad reason).
uint16_t ValidateClosePayload(const uint8_t* payload, size_t length);

// True if |code| may appear in a close frame (RFC 6455 §7.4).
bool IsValidWireCloseCode(uint16_t code);

bool IsValidUtf8(const uint8_t* data, size_t length);

// Serialize a close frame with |code| and |reason| (truncated to fit 125 bytes). When |mask| is
// non-null the frame is masked with it (frames sent to a backend must be). Returns the frame.
std::string BuildCloseFrame(uint16_t code, std::string_view reason, const uint8_t* mask);

}  // namespace wsgate::ws
