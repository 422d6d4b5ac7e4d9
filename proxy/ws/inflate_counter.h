// permessage-deflate (RFC 7692) inspection for one direction: inflate each compressed message
// as it streams by, only to learn its size. The output goes to a small scratch buffer and is
// thrown away; the payload itself is relayed compressed and untouched.
//
// Lives in proxy/ws/ beside the frame codec because it is the same kind of thing: pure (zlib
// only, no libevent), fed byte spans by the splicer, unit-tested and fuzzed on its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace wsgate::ws {

class InflateCounter {
 public:
  // |window_bits| (8..15) is the sender's negotiated max window; |context_takeover| false means
  // every message starts afresh, so the zlib state is released between messages.
  InflateCounter(uint8_t window_bits, bool context_takeover);
  ~InflateCounter();
  InflateCounter(const InflateCounter&) = delete;
  InflateCounter& operator=(const InflateCounter&) = delete;

  enum class Status {
    kOk,
    kTooBig,    // the message inflated past the limit (stopped there)
    kInvalid,   // not valid DEFLATE data
    kNoMemory,  // zlib could not allocate its state
  };

  // A compressed message starts; it may inflate to at most |limit| bytes.
  void BeginMessage(uint64_t limit);
  // The next |length| payload bytes of the message (unmasked), in order, split anywhere.
  Status Feed(const uint8_t* data, size_t length);
  // The message's last payload byte went by: inflate the 0x00 0x00 0xff 0xff tail the sender
  // removed (RFC 7692 §7.2.2), and release the state if there is no context takeover.
  Status EndMessage();

  // Inflated bytes of the current (or last) message.
  uint64_t message_bytes() const { return message_bytes_; }
  // True while zlib state is allocated (lazily, on the first compressed message).
  bool holds_state() const { return stream_ != nullptr; }

 private:
  Status Inflate(const uint8_t* data, size_t length);
  void Release();

  struct Stream;
  std::unique_ptr<Stream> stream_;
  uint64_t message_bytes_ = 0;
  uint64_t limit_ = 0;
  uint8_t window_bits_;
  bool context_takeover_;
  bool stream_ended_ = false;  // the message ended its DEFLATE stream (a BFINAL block)
};

}  // namespace wsgate::ws
