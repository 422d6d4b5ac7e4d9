#include "proxy/frame_splicer.h"

#include <event2/buffer.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/ws/frame.h"
#include "tests/unit/loopback_util.h"

namespace wsgate {
using wsgate::testing::Deflate;

namespace {

using Result = FramePipe::Result;

constexpr size_t kNoLimit = SIZE_MAX;

class Buffer {
 public:
  Buffer() : buf_(evbuffer_new()) {}
  ~Buffer() { evbuffer_free(buf_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  evbuffer* get() const { return buf_; }
  size_t size() const { return evbuffer_get_length(buf_); }
  void Add(std::string_view data) { ASSERT_EQ(evbuffer_add(buf_, data.data(), data.size()), 0); }
  std::string Peek() const {
    std::string out(size(), '\0');
    if (!out.empty()) evbuffer_copyout(buf_, out.data(), out.size());
    return out;
  }
  // Remove everything, as a socket write would.
  std::string Take() {
    std::string out = Peek();
    evbuffer_drain(buf_, out.size());
    return out;
  }

 private:
  evbuffer* buf_;
};

// One frame with the minimal length encoding; masked with |mask| when given.
std::string MakeFrame(uint8_t opcode, bool fin, std::string_view payload,
                      const uint8_t* mask = nullptr, uint8_t rsv = 0) {
  std::string out;
  out.push_back(static_cast<char>((fin ? 0x80 : 0) | (rsv << 4) | opcode));
  uint8_t mask_bit = mask != nullptr ? 0x80 : 0;
  uint64_t n = payload.size();
  if (n < 126) {
    out.push_back(static_cast<char>(mask_bit | n));
  } else if (n <= 0xFFFF) {
    out.push_back(static_cast<char>(mask_bit | 126));
    out.push_back(static_cast<char>(n >> 8));
    out.push_back(static_cast<char>(n & 0xFF));
  } else {
    out.push_back(static_cast<char>(mask_bit | 127));
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(n >> shift));
  }
  if (mask != nullptr) out.append(reinterpret_cast<const char*>(mask), 4);
  size_t start = out.size();
  out.append(payload);
  if (mask != nullptr) {
    for (size_t i = start; i < out.size(); ++i) {
      out[i] = static_cast<char>(out[i] ^ mask[(i - start) % 4]);
    }
  }
  return out;
}

std::string ClosePayload(uint16_t code, std::string_view reason = {}) {
  std::string p;
  p.push_back(static_cast<char>(code >> 8));
  p.push_back(static_cast<char>(code & 0xFF));
  p.append(reason);
  return p;
}

ws::DirectionPolicy FromClient() {
  ws::DirectionPolicy p;
  p.expect_masked = true;
  return p;
}
ws::DirectionPolicy FromBackend() { return ws::DirectionPolicy{}; }

struct Stream {
  std::string bytes;
  uint64_t frames = 0;
  uint64_t messages = 0;
};

// Many messages of mixed size and fragmentation with control frames between fragments.
Stream RandomStream(uint32_t seed, bool masked) {
  std::mt19937 rng(seed);
  auto uniform = [&](uint32_t lo, uint32_t hi) {
    return std::uniform_int_distribution<uint32_t>(lo, hi)(rng);
  };
  auto payload = [&](size_t n) {
    std::string p(n, '\0');
    for (char& c : p) c = static_cast<char>(uniform(0, 255));
    return p;
  };
  auto random_length = [&]() -> size_t {
    switch (uniform(0, 19)) {
      case 0:
        return 0;
      case 1:
        return 125;
      case 2:
        return 126;
      case 3:
        return uniform(126, 3000);
      case 4:
        return uniform(0xFFFF, 0x10000 + 500);  // 16-bit maximum and 64-bit lengths
      case 5:
      case 6:
        return uniform(126, 3000);
      default:
        return uniform(1, 125);
    }
  };
  Stream s;
  for (int m = 0; m < 60; ++m) {
    uint32_t fragments = uniform(1, 4);
    for (uint32_t f = 0; f < fragments; ++f) {
      uint8_t mask[4] = {
          static_cast<uint8_t>(uniform(0, 255)), static_cast<uint8_t>(uniform(0, 255)),
          static_cast<uint8_t>(uniform(0, 255)), static_cast<uint8_t>(uniform(0, 255))};
      uint8_t opcode = f == 0 ? (uniform(0, 1) ? ws::kText : ws::kBinary) : ws::kContinuation;
      bool fin = f + 1 == fragments;
      s.bytes += MakeFrame(opcode, fin, payload(random_length()), masked ? mask : nullptr);
      ++s.frames;
      if (fin) ++s.messages;
      if (uniform(0, 3) == 0) {
        uint8_t control = uniform(0, 1) ? ws::kPing : ws::kPong;
        s.bytes += MakeFrame(control, true, payload(uniform(0, 125)), masked ? mask : nullptr);
        ++s.frames;
      }
    }
  }
  return s;
}

struct PumpOutcome {
  std::string output;
  uint64_t frames = 0;
  uint64_t messages = 0;
  uint64_t bytes = 0;
  size_t left_in_source = 0;
  bool at_boundary = false;
  int output_full = 0;
};

// Feed |input| in random-sized chunks; drain the sink after every Pump, or only when it
// reports kOutputFull when |watermark| is finite.
PumpOutcome PumpInChunks(const std::string& input, ws::DirectionPolicy policy, uint32_t seed,
                         size_t max_chunk, size_t watermark = kNoLimit) {
  std::mt19937 rng(seed);
  FramePipe pipe(policy);
  Buffer source;
  Buffer sink;
  PumpOutcome out;
  size_t fed = 0;
  while (fed < input.size()) {
    size_t n = std::uniform_int_distribution<size_t>(1, max_chunk)(rng);
    n = std::min(n, input.size() - fed);
    source.Add(std::string_view(input).substr(fed, n));
    fed += n;
    while (true) {
      Result r = pipe.Pump(source.get(), sink.get(), watermark);
      if (r == Result::kOutputFull) {
        ++out.output_full;
        EXPECT_GE(sink.size(), watermark);
        out.output += sink.Take();
        continue;
      }
      EXPECT_EQ(r, Result::kDrained);
      if (r != Result::kDrained) return out;
      break;
    }
    if (watermark == kNoLimit) out.output += sink.Take();
  }
  out.output += sink.Take();
  out.frames = pipe.frames();
  out.messages = pipe.messages();
  out.bytes = pipe.bytes();
  out.left_in_source = source.size();
  out.at_boundary = pipe.at_boundary();
  return out;
}

TEST(FramePipeTest, RandomChunkingIsTransparent) {
  for (uint32_t seed : {1u, 2u, 3u, 42u, 1234u}) {
    SCOPED_TRACE(seed);
    for (bool masked : {true, false}) {
      SCOPED_TRACE(masked);
      Stream stream = RandomStream(seed, masked);
      ws::DirectionPolicy policy = masked ? FromClient() : FromBackend();
      // All at once.
      PumpOutcome whole = PumpInChunks(stream.bytes, policy, seed, stream.bytes.size());
      EXPECT_TRUE(whole.output == stream.bytes);
      EXPECT_EQ(whole.frames, stream.frames);
      EXPECT_EQ(whole.messages, stream.messages);
      EXPECT_EQ(whole.bytes, stream.bytes.size());
      EXPECT_EQ(whole.left_in_source, 0u);
      EXPECT_TRUE(whole.at_boundary);
      // Tiny, small and large random cuts.
      for (size_t max_chunk : {size_t{1} + seed % 3, size_t{16}, size_t{300}, size_t{20000}}) {
        SCOPED_TRACE(max_chunk);
        PumpOutcome cut = PumpInChunks(stream.bytes, policy, seed * 7919u + 1, max_chunk);
        EXPECT_EQ(cut.output.size(), stream.bytes.size());
        EXPECT_TRUE(cut.output == stream.bytes);
        EXPECT_EQ(cut.frames, stream.frames);
        EXPECT_EQ(cut.messages, stream.messages);
        EXPECT_EQ(cut.bytes, stream.bytes.size());
        EXPECT_EQ(cut.left_in_source, 0u);
        EXPECT_TRUE(cut.at_boundary);
      }
    }
  }
}

TEST(FramePipeTest, RandomChunkingWithCloseAtTheEnd) {
  const uint8_t mask[4] = {0x5A, 0xA5, 0x0F, 0xF0};
  for (uint32_t seed : {11u, 12u, 13u}) {
    SCOPED_TRACE(seed);
    Stream stream = RandomStream(seed, true);
    std::string close = MakeFrame(ws::kClose, true, ClosePayload(4000, "done \xe2\x9c\x93"), mask);
    std::string trailing = MakeFrame(ws::kText, true, "after close", mask) + "\xff\xff garbage";
    std::string input = stream.bytes + close + trailing;
    std::mt19937 rng(seed);
    FramePipe pipe(FromClient());
    Buffer source;
    Buffer sink;
    std::string output;
    int closes = 0;
    size_t fed = 0;
    while (fed < input.size()) {
      size_t n = std::min(std::uniform_int_distribution<size_t>(1, 700)(rng), input.size() - fed);
      source.Add(std::string_view(input).substr(fed, n));
      fed += n;
      Result r = pipe.Pump(source.get(), sink.get(), kNoLimit);
      if (r == Result::kCloseRelayed) {
        ++closes;
        r = pipe.Pump(source.get(), sink.get(), kNoLimit);  // drops what follows
      }
      ASSERT_EQ(r, Result::kDrained);
      output += sink.Take();
    }
    EXPECT_EQ(closes, 1);
    EXPECT_TRUE(output == stream.bytes + close);
    EXPECT_EQ(source.size(), 0u);
    EXPECT_EQ(pipe.frames(), stream.frames + 1);
    EXPECT_EQ(pipe.messages(), stream.messages);
    EXPECT_EQ(pipe.bytes(), stream.bytes.size() + close.size());
    EXPECT_EQ(pipe.close_code(), 4000);
    EXPECT_EQ(pipe.close_reason(), "done \xe2\x9c\x93");
  }
}

TEST(FramePipeTest, BackpressureResumesWithoutLoss) {
  for (uint32_t seed : {5u, 6u, 7u}) {
    SCOPED_TRACE(seed);
    Stream stream = RandomStream(seed, true);
    for (size_t watermark : {size_t{1}, size_t{100}, size_t{4096}}) {
      SCOPED_TRACE(watermark);
      PumpOutcome out = PumpInChunks(stream.bytes, FromClient(), seed, 5000, watermark);
      EXPECT_TRUE(out.output == stream.bytes);
      EXPECT_EQ(out.frames, stream.frames);
      EXPECT_EQ(out.messages, stream.messages);
      EXPECT_GT(out.output_full, 0);
    }
  }
}

TEST(FramePipeTest, MaskedPayloadIsNotModified) {
  const uint8_t mask[4] = {0x11, 0x22, 0x33, 0x44};
  std::string frame = MakeFrame(ws::kText, true, "Hello, masked world", mask);
  FramePipe pipe(FromClient());
  Buffer source;
  Buffer sink;
  source.Add(frame);
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
  EXPECT_EQ(sink.Peek(), frame);
  EXPECT_EQ(source.size(), 0u);
  EXPECT_EQ(pipe.frames(), 1u);
  EXPECT_EQ(pipe.messages(), 1u);
  EXPECT_EQ(pipe.bytes(), frame.size());
}

TEST(FramePipeTest, OutputFullAtBoundaryAndMidFrame) {
  std::string big = MakeFrame(ws::kBinary, true, std::string(150, 'A'));  // 4 + 150 bytes
  std::string small = MakeFrame(ws::kText, true, "0123456789");           // 2 + 10 bytes
  ASSERT_EQ(big.size(), 154u);
  FramePipe pipe(FromBackend());
  Buffer source;
  Buffer sink;

  // The header and the first 50 payload bytes arrive: moving them passes the watermark of 40.
  source.Add(std::string_view(big).substr(0, 54));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), 40), Result::kOutputFull);
  EXPECT_EQ(sink.size(), 54u);
  EXPECT_EQ(source.size(), 0u);
  EXPECT_FALSE(pipe.at_boundary());
  std::string out = sink.Take();

  // The rest of the frame and a second frame arrive.
  source.Add(std::string_view(big).substr(54));
  source.Add(small);
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), 40), Result::kOutputFull);
  EXPECT_EQ(sink.size(), 100u);
  EXPECT_TRUE(pipe.at_boundary());
  EXPECT_EQ(source.size(), small.size());
  // Still full: nothing moves.
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), 40), Result::kOutputFull);
  EXPECT_EQ(sink.size(), 100u);
  EXPECT_EQ(source.size(), small.size());
  out += sink.Take();

  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), 40), Result::kDrained);
  out += sink.Take();
  EXPECT_EQ(out, big + small);
  EXPECT_EQ(pipe.frames(), 2u);
  EXPECT_EQ(pipe.messages(), 2u);
  EXPECT_EQ(pipe.bytes(), big.size() + small.size());
}

TEST(FramePipeTest, OutputFullBeforeAnythingMoves) {
  FramePipe pipe(FromBackend());
  Buffer source;
  Buffer sink;
  sink.Add(std::string(100, 'x'));
  std::string frame = MakeFrame(ws::kText, true, "hi");
  source.Add(frame);
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), 100), Result::kOutputFull);
  EXPECT_EQ(source.size(), frame.size());
  EXPECT_EQ(sink.size(), 100u);
  EXPECT_EQ(pipe.frames(), 0u);
  // Below the watermark it relays the whole frame, then reports the sink full again.
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), 101), Result::kOutputFull);
  EXPECT_EQ(sink.size(), 100u + frame.size());
  EXPECT_EQ(source.size(), 0u);
  EXPECT_EQ(pipe.frames(), 1u);
}

TEST(FramePipeTest, CloseFrameIsRelayedAndLaterInputDropped) {
  const uint8_t mask[4] = {9, 8, 7, 6};
  std::string text = MakeFrame(ws::kText, true, "hi", mask);
  std::string close = MakeFrame(ws::kClose, true, ClosePayload(1000, "bye"), mask);
  std::string after = MakeFrame(ws::kText, true, "too late", mask);
  FramePipe pipe(FromClient());
  Buffer source;
  Buffer sink;
  source.Add(text + close + after);
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kCloseRelayed);
  EXPECT_EQ(sink.Peek(), text + close);  // the close frame stays masked
  EXPECT_TRUE(pipe.close_relayed());
  EXPECT_EQ(pipe.close_code(), 1000);
  EXPECT_EQ(pipe.close_reason(), "bye");
  EXPECT_EQ(pipe.frames(), 2u);
  EXPECT_EQ(pipe.messages(), 1u);
  EXPECT_EQ(source.size(), after.size());

  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
  EXPECT_EQ(source.size(), 0u);
  EXPECT_EQ(sink.Peek(), text + close);
  source.Add(after + after);
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
  EXPECT_EQ(source.size(), 0u);
  EXPECT_EQ(sink.Peek(), text + close);
  EXPECT_EQ(pipe.frames(), 2u);
  EXPECT_EQ(pipe.bytes(), text.size() + close.size());
}

TEST(FramePipeTest, SwallowedCloseIsNoticedButNeverRelayed) {
  // A backend being left (pools[].migrate): its messages go on, its close reply does not, and
  // after ContinueWithNewPeer the next source's frames flow again.
  std::string text = MakeFrame(ws::kText, true, "last", nullptr);
  std::string close = MakeFrame(ws::kClose, true, ClosePayload(1001, ""), nullptr);
  FramePipe pipe(FromBackend());
  Buffer source;
  Buffer sink;
  pipe.SwallowClose();
  source.Add(text + close);
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kCloseRelayed);
  EXPECT_EQ(sink.Peek(), text);
  EXPECT_EQ(pipe.close_code(), 1001);
  EXPECT_EQ(source.size(), 0u);
  EXPECT_EQ(pipe.frames(), 1u);
  pipe.ContinueWithNewPeer();
  EXPECT_FALSE(pipe.close_relayed());
  EXPECT_EQ(pipe.close_code(), 0);
  std::string next = MakeFrame(ws::kText, true, "from the new backend", nullptr);
  source.Add(next);
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
  EXPECT_EQ(sink.Peek(), text + next);
  EXPECT_EQ(pipe.messages(), 2u);
}

TEST(FramePipeTest, MessageBoundaryStopAlsoWithoutASink) {
  // A session moving off a lost backend drops the rest of the message that was going to it,
  // then holds the next one.
  const uint8_t mask[4] = {1, 2, 3, 4};
  std::string rest = MakeFrame(ws::kContinuation, true, "rest", mask);
  std::string next = MakeFrame(ws::kText, true, "next", mask);
  FramePipe pipe(FromClient());
  Buffer source;
  Buffer sink;
  source.Add(MakeFrame(ws::kText, false, "start", mask));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
  pipe.StopAtMessageBoundary();
  source.Add(rest + next);
  EXPECT_EQ(pipe.Pump(source.get(), nullptr, kNoLimit), Result::kMessageBoundary);
  EXPECT_EQ(source.size(), next.size());
  EXPECT_TRUE(pipe.at_message_boundary());
}

TEST(FramePipeTest, CloseFrameArrivingByteByByte) {
  std::string ping = MakeFrame(ws::kPing, true, "p");
  std::string close = MakeFrame(ws::kClose, true, ClosePayload(4001, "caf\xc3\xa9"));
  std::string input = ping + close;
  FramePipe pipe(FromBackend());
  Buffer source;
  Buffer sink;
  for (size_t i = 0; i + 1 < input.size(); ++i) {
    source.Add(input.substr(i, 1));
    EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained) << i;
  }
  // Nothing of the close frame is relayed before all of it is there.
  EXPECT_EQ(sink.Peek(), ping);
  EXPECT_EQ(pipe.close_code(), 0);
  source.Add(input.substr(input.size() - 1));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kCloseRelayed);
  EXPECT_EQ(sink.Peek(), input);
  EXPECT_EQ(pipe.close_code(), 4001);
  EXPECT_EQ(pipe.close_reason(), "caf\xc3\xa9");
  EXPECT_EQ(pipe.frames(), 2u);
  EXPECT_EQ(pipe.messages(), 0u);
}

TEST(FramePipeTest, CloseWithoutCodeOrReason) {
  {
    FramePipe pipe(FromBackend());
    Buffer source;
    Buffer sink;
    source.Add(MakeFrame(ws::kClose, true, ""));
    EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kCloseRelayed);
    EXPECT_EQ(pipe.close_code(), ws::kNoStatus);
    EXPECT_EQ(pipe.close_reason(), "");
    EXPECT_EQ(sink.Peek(), std::string("\x88\x00", 2));
  }
  {
    FramePipe pipe(FromBackend());
    Buffer source;
    Buffer sink;
    source.Add(MakeFrame(ws::kClose, true, ClosePayload(1001)));
    EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kCloseRelayed);
    EXPECT_EQ(pipe.close_code(), 1001);
    EXPECT_EQ(pipe.close_reason(), "");
  }
  {
    // A close frame in the middle of a fragmented message is still a close.
    FramePipe pipe(FromBackend());
    Buffer source;
    Buffer sink;
    std::string input =
        MakeFrame(ws::kText, false, "part") + MakeFrame(ws::kClose, true, ClosePayload(1000));
    source.Add(input);
    EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kCloseRelayed);
    EXPECT_EQ(sink.Peek(), input);
    EXPECT_EQ(pipe.messages(), 0u);
  }
}

TEST(FramePipeTest, StopAtBoundaryFinishesTheCurrentFrame) {
  const uint8_t mask[4] = {1, 2, 3, 4};
  std::string first = MakeFrame(ws::kBinary, true, std::string(300, 'a'), mask);
  std::string second = MakeFrame(ws::kText, true, "next", mask);
  FramePipe pipe(FromClient());
  Buffer source;
  Buffer sink;
  source.Add(std::string_view(first).substr(0, 100));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
  EXPECT_FALSE(pipe.at_boundary());
  pipe.StopAtBoundary();

  // Part of the rest arrives: it is relayed, the frame is not finished yet.
  source.Add(std::string_view(first).substr(100, 100));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
  EXPECT_EQ(sink.size(), 200u);
  EXPECT_FALSE(pipe.at_boundary());

  source.Add(std::string_view(first).substr(200));
  source.Add(second);
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kStopped);
  EXPECT_EQ(sink.Peek(), first);
  EXPECT_EQ(source.Peek(), second);
  EXPECT_TRUE(pipe.at_boundary());
  EXPECT_EQ(pipe.frames(), 1u);
  // It stays stopped and leaves the input alone.
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kStopped);
  EXPECT_EQ(source.Peek(), second);
  EXPECT_EQ(sink.Peek(), first);
}

TEST(FramePipeTest, StopAtBoundaryWhenAlreadyAtBoundary) {
  std::string frame = MakeFrame(ws::kText, true, "x");
  FramePipe pipe(FromBackend());
  Buffer source;
  Buffer sink;
  pipe.StopAtBoundary();
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kStopped);
  source.Add(std::string_view(frame).substr(0, 1));  // a partial header
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kStopped);
  source.Add(std::string_view(frame).substr(1));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kStopped);
  EXPECT_EQ(source.Peek(), frame);
  EXPECT_EQ(sink.size(), 0u);
  EXPECT_EQ(pipe.frames(), 0u);
}

TEST(FramePipeTest, NullSinkDiscardsButNoticesClose) {
  std::string input = MakeFrame(ws::kText, false, std::string(200, 't')) +
                      MakeFrame(ws::kPing, true, "") + MakeFrame(ws::kContinuation, true, "end");
  std::string close = MakeFrame(ws::kClose, true, ClosePayload(1001, "going"));
  FramePipe pipe(FromBackend());
  Buffer source;
  source.Add(input);
  EXPECT_EQ(pipe.Pump(source.get(), nullptr, 0), Result::kDrained);
  EXPECT_EQ(source.size(), 0u);
  // The counters report what was relayed; dropped frames are not counted.
  EXPECT_EQ(pipe.frames(), 0u);
  EXPECT_EQ(pipe.messages(), 0u);
  EXPECT_EQ(pipe.bytes(), 0u);
  // A stop request does not hold up discarding.
  pipe.StopAtBoundary();
  source.Add(close + "garbage after close");
  EXPECT_EQ(pipe.Pump(source.get(), nullptr, 0), Result::kCloseRelayed);
  EXPECT_TRUE(pipe.close_relayed());
  EXPECT_EQ(pipe.close_code(), 1001);
  EXPECT_EQ(pipe.close_reason(), "going");
  EXPECT_EQ(pipe.frames(), 0u);
  EXPECT_EQ(pipe.bytes(), 0u);
  EXPECT_EQ(pipe.Pump(source.get(), nullptr, 0), Result::kDrained);
  EXPECT_EQ(source.size(), 0u);
}

TEST(FramePipeTest, NullSinkStillDetectsViolations) {
  FramePipe pipe(FromClient());
  Buffer source;
  source.Add(MakeFrame(ws::kText, true, "unmasked"));
  EXPECT_EQ(pipe.Pump(source.get(), nullptr, 0), Result::kViolation);
  EXPECT_EQ(pipe.violation_code(), ws::kProtocolError);
}

struct ViolationCase {
  std::string name;
  ws::DirectionPolicy policy;
  std::string bad;
  uint16_t code;
};

TEST(FramePipeTest, ViolationsStopBeforeTheBadFrame) {
  const uint8_t mask[4] = {0xDE, 0xAD, 0xBE, 0xEF};
  ws::DirectionPolicy small = FromBackend();
  small.max_message_bytes = 100;
  const std::vector<ViolationCase> cases = {
      {"unmasked from client", FromClient(), MakeFrame(ws::kText, true, "x"), ws::kProtocolError},
      {"masked from backend", FromBackend(), MakeFrame(ws::kText, true, "x", mask),
       ws::kProtocolError},
      {"reserved opcode", FromBackend(), MakeFrame(0x3, true, "x"), ws::kProtocolError},
      {"control opcode 0xB", FromBackend(), MakeFrame(0xB, true, ""), ws::kProtocolError},
      {"rsv1 without extension", FromBackend(), MakeFrame(ws::kText, true, "x", nullptr, 0x4),
       ws::kProtocolError},
      {"continuation without start", FromBackend(), MakeFrame(ws::kContinuation, true, "x"),
       ws::kProtocolError},
      {"fragmented ping", FromBackend(), MakeFrame(ws::kPing, false, "x"), ws::kProtocolError},
      {"ping over 125", FromBackend(), MakeFrame(ws::kPing, true, std::string(126, 'p')),
       ws::kProtocolError},
      {"non-minimal 16-bit length", FromBackend(), std::string("\x82\x7e\x00\x05hello", 9),
       ws::kProtocolError},
      {"64-bit length top bit", FromBackend(),
       std::string("\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00", 10), ws::kProtocolError},
      {"too big", small, MakeFrame(ws::kBinary, true, std::string(101, 'b')), ws::kMessageTooBig},
      {"close with 1-byte payload", FromBackend(), MakeFrame(ws::kClose, true, "\x03"),
       ws::kProtocolError},
      {"close with code 1005", FromBackend(), MakeFrame(ws::kClose, true, ClosePayload(1005)),
       ws::kProtocolError},
      {"close with code 999", FromClient(), MakeFrame(ws::kClose, true, ClosePayload(999), mask),
       ws::kProtocolError},
      {"close with bad UTF-8", FromClient(),
       MakeFrame(ws::kClose, true, ClosePayload(1000, "\xc0\xaf"), mask), ws::kInvalidPayload},
  };
  for (const ViolationCase& c : cases) {
    SCOPED_TRACE(c.name);
    const uint8_t* m = c.policy.expect_masked ? mask : nullptr;
    std::string good = MakeFrame(ws::kText, true, "ok", m) + MakeFrame(ws::kPing, true, "", m);
    FramePipe pipe(c.policy);
    Buffer source;
    Buffer sink;
    source.Add(good + c.bad + MakeFrame(ws::kText, true, "never", m));
    EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kViolation);
    EXPECT_EQ(pipe.violation_code(), c.code);
    EXPECT_EQ(sink.Peek(), good);  // nothing of the bad frame
    EXPECT_EQ(pipe.frames(), 2u);
    EXPECT_EQ(pipe.messages(), 1u);
    EXPECT_EQ(pipe.bytes(), good.size());
    EXPECT_FALSE(pipe.close_relayed());
    EXPECT_EQ(pipe.close_code(), 0);
  }
}

TEST(FramePipeTest, TooBigAcrossFragmentsRelaysTheFragmentsThatFit) {
  ws::DirectionPolicy policy = FromBackend();
  policy.max_message_bytes = 100;
  std::string first = MakeFrame(ws::kText, false, std::string(60, 'a'));
  std::string second = MakeFrame(ws::kContinuation, false, std::string(40, 'b'));  // exactly 100
  std::string third = MakeFrame(ws::kContinuation, true, "c");
  FramePipe pipe(policy);
  Buffer source;
  Buffer sink;
  source.Add(first + second);
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
  EXPECT_EQ(sink.Peek(), first + second);
  // Only the header of the offending frame is needed to refuse it.
  source.Add(std::string_view(third).substr(0, 2));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kViolation);
  EXPECT_EQ(pipe.violation_code(), ws::kMessageTooBig);
  EXPECT_EQ(sink.Peek(), first + second);
  EXPECT_EQ(pipe.frames(), 2u);
  EXPECT_EQ(pipe.messages(), 0u);
}

TEST(FramePipeTest, ViolationDetectedFromHeaderAlone) {
  // A 64 KiB frame refused for size before any of its payload arrives.
  ws::DirectionPolicy policy = FromBackend();
  policy.max_message_bytes = 1000;
  std::string frame = MakeFrame(ws::kBinary, true, std::string(70000, 'z'));
  FramePipe pipe(policy);
  Buffer source;
  Buffer sink;
  source.Add(std::string_view(frame).substr(0, 9));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
  source.Add(std::string_view(frame).substr(9, 1));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kViolation);
  EXPECT_EQ(pipe.violation_code(), ws::kMessageTooBig);
  EXPECT_EQ(sink.size(), 0u);
}

TEST(FramePipeTest, PermessageDeflateRsv1OnFirstFrameOnly) {
  ws::DirectionPolicy policy = FromBackend();
  policy.allow_rsv1 = true;
  std::string ok = MakeFrame(ws::kText, true, "compressed", nullptr, 0x4) +
                   MakeFrame(ws::kBinary, false, "first", nullptr, 0x4) +
                   MakeFrame(ws::kContinuation, false, "second");
  FramePipe pipe(policy);
  Buffer source;
  Buffer sink;
  source.Add(ok + MakeFrame(ws::kContinuation, true, "last", nullptr, 0x4));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kViolation);
  EXPECT_EQ(pipe.violation_code(), ws::kProtocolError);
  EXPECT_EQ(sink.Peek(), ok);
  EXPECT_EQ(pipe.frames(), 3u);
  EXPECT_EQ(pipe.messages(), 1u);
}

}  // namespace
}  // namespace wsgate

namespace wsgate {
namespace {

TEST(FramePipeRateTest, MessagesBeyondTheBucketAreLeftInTheSource) {
  ws::DirectionPolicy policy;
  policy.expect_masked = false;
  FramePipe pipe(policy);
  pipe.set_message_rate(3);
  evbuffer* source = evbuffer_new();
  evbuffer* sink = evbuffer_new();
  // Five one-frame text messages and a ping between them (control frames spend no token).
  const std::string text = std::string("\x81\x01") + "a";
  const std::string ping = std::string("\x89\x00", 2);
  std::string stream = text + text + ping + text + text + text;
  evbuffer_add(source, stream.data(), stream.size());
  EXPECT_EQ(pipe.Pump(source, sink, 1 << 20), FramePipe::Result::kRateLimited);
  EXPECT_EQ(pipe.messages(), 3u);
  EXPECT_EQ(evbuffer_get_length(sink), 3 * text.size() + ping.size());
  EXPECT_EQ(evbuffer_get_length(source), 2 * text.size());  // untouched, parsed again later
  EXPECT_GT(pipe.SecondsUntilToken(), 0.0);
  EXPECT_LE(pipe.SecondsUntilToken(), 1.0 / 3 + 1e-9);
  // Still limited a moment later, and nothing is lost meanwhile.
  EXPECT_EQ(pipe.Pump(source, sink, 1 << 20), FramePipe::Result::kRateLimited);
  EXPECT_EQ(evbuffer_get_length(source), 2 * text.size());
  evbuffer_free(source);
  evbuffer_free(sink);
}

TEST(FramePipeTest, StopsAtMessageBoundaryNotInsideAFragmentedMessage) {
  // first fragment, a ping inside the message, the last fragment, then a whole message
  std::string first = MakeFrame(ws::kText, false, "frag-1");
  std::string ping = MakeFrame(ws::kPing, true, "p");
  std::string last = MakeFrame(ws::kContinuation, true, "frag-2");
  std::string next = MakeFrame(ws::kText, true, "next");
  FramePipe pipe(FromBackend());
  Buffer source;
  Buffer sink;
  EXPECT_TRUE(pipe.at_message_boundary());
  source.Add(first);
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
  EXPECT_FALSE(pipe.at_message_boundary());
  EXPECT_TRUE(pipe.at_boundary());
  // Asked inside the message: the ping and the last fragment pass, then it stops.
  pipe.StopAtMessageBoundary();
  source.Add(ping + last + next);
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kMessageBoundary);
  EXPECT_EQ(sink.Take(), first + ping + last);
  EXPECT_TRUE(pipe.at_message_boundary());
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);  // once only
  EXPECT_EQ(sink.Take(), next);
}

TEST(FramePipeTest, MessageBoundaryRequestAtAnIdleBoundaryStopsAtOnce) {
  FramePipe pipe(FromBackend());
  Buffer source;
  Buffer sink;
  pipe.StopAtMessageBoundary();
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kMessageBoundary);
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
}

}  // namespace
}  // namespace wsgate

namespace wsgate {
namespace {

const uint8_t kMask[4] = {0x11, 0x22, 0x33, 0x44};

FramePipe InspectingPipe(uint64_t limit, size_t hold) {
  ws::DirectionPolicy policy = FromClient();
  policy.allow_rsv1 = true;
  policy.max_message_bytes = limit;
  FramePipe pipe(policy);
  pipe.set_inflate(15, true, hold);
  return pipe;
}

TEST(FramePipeInflateTest, CountsMaskedFragmentsFedByteByByte) {
  FramePipe pipe = InspectingPipe(10000, 0);
  std::string text(10000, 'q');
  std::string payload = Deflate(text);
  std::string first = MakeFrame(ws::kText, false, payload.substr(0, 5), kMask, 0x4);
  std::string ping = MakeFrame(ws::kPing, true, "p", kMask);
  std::string compressed =
      first + ping + MakeFrame(ws::kContinuation, true, payload.substr(5), kMask);
  std::string stream = compressed + MakeFrame(ws::kText, true, "plain", kMask);
  Buffer source;
  Buffer sink;
  for (size_t i = 0; i < stream.size(); ++i) {
    source.Add(std::string_view(&stream[i], 1));
    ASSERT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
    // The compressed frames never go by splice(2): their bytes must be seen.
    bool in_ping = i >= first.size() && i < first.size() + ping.size();
    if (i < compressed.size() && !in_ping) {
      EXPECT_EQ(pipe.spliceable_bytes(), 0u) << i;
    }
  }
  EXPECT_EQ(sink.Peek(), stream);  // relayed unchanged
  ASSERT_NE(pipe.inflate_counter(), nullptr);
  EXPECT_EQ(pipe.inflate_counter()->message_bytes(), text.size());
  EXPECT_EQ(pipe.messages(), 2u);
}

TEST(FramePipeInflateTest, UncompressedMessagesAreNotInflated) {
  FramePipe pipe = InspectingPipe(100, 0);
  Buffer source;
  Buffer sink;
  std::string big(50000, 'u');
  std::string frame = MakeFrame(ws::kBinary, true, big.substr(0, 90), kMask);
  source.Add(frame + MakeFrame(ws::kBinary, true, big.substr(0, 100), kMask).substr(0, 20));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
  EXPECT_EQ(pipe.inflate_counter(), nullptr);  // no zlib state without a compressed message
  EXPECT_EQ(pipe.spliceable_bytes(), 100u + 6 - 20);
}

TEST(FramePipeInflateTest, SmallFrameOverTheLimitNeverStarts) {
  FramePipe pipe = InspectingPipe(4096, 64 * 1024);
  std::string ok = MakeFrame(ws::kText, true, Deflate(std::string(4096, 'a')), kMask, 0x4);
  std::string bomb = MakeFrame(ws::kText, true, Deflate(std::string(300000, 'a')), kMask, 0x4);
  ASSERT_LT(bomb.size(), 4096u);  // its compressed size alone passes the limit
  Buffer source;
  Buffer sink;
  source.Add(ok + bomb.substr(0, bomb.size() - 1));
  // A small compressed frame is held until whole: nothing of it moves yet.
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
  EXPECT_EQ(sink.Peek(), ok);
  EXPECT_EQ(source.size(), bomb.size() - 1);
  source.Add(bomb.substr(bomb.size() - 1));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kViolation);
  EXPECT_EQ(pipe.violation_code(), ws::kMessageTooBig);
  EXPECT_TRUE(pipe.violation_in_inflate());
  EXPECT_EQ(sink.Peek(), ok);
  EXPECT_FALSE(pipe.frame_started());
  EXPECT_TRUE(pipe.at_boundary());  // a close frame can still be inserted towards the sink
}

TEST(FramePipeInflateTest, LargeFrameCrossingTheLimitIsCut) {
  FramePipe pipe = InspectingPipe(100000, 1024);
  std::mt19937 rng(5);
  std::string noise(20000, '\0');
  for (char& c : noise) c = static_cast<char>(rng());
  std::string frame =
      MakeFrame(ws::kBinary, true, Deflate(noise + std::string(1000000, '\0')), kMask, 0x4);
  Buffer source;
  Buffer sink;
  source.Add(frame.substr(0, 10000));  // incompressible: inflates to about as much, under 100000
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kDrained);
  EXPECT_EQ(sink.Peek(), frame.substr(0, 10000));
  source.Add(frame.substr(10000));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kViolation);
  EXPECT_EQ(pipe.violation_code(), ws::kMessageTooBig);
  EXPECT_TRUE(pipe.frame_started());  // its start went: no close frame can follow it
  EXPECT_FALSE(pipe.at_boundary());
  EXPECT_LT(sink.size(), frame.size());
}

TEST(FramePipeInflateTest, InvalidDataIs1007) {
  FramePipe pipe = InspectingPipe(100000, 1024);
  Buffer source;
  Buffer sink;
  source.Add(MakeFrame(ws::kText, true, "\xff\xff\xff\xff", kMask, 0x4));
  EXPECT_EQ(pipe.Pump(source.get(), sink.get(), kNoLimit), Result::kViolation);
  EXPECT_EQ(pipe.violation_code(), ws::kInvalidPayload);
  EXPECT_TRUE(pipe.violation_in_inflate());
  EXPECT_EQ(sink.size(), 0u);
}

}  // namespace
}  // namespace wsgate
