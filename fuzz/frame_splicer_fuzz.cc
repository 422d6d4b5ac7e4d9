// Fuzz target: FramePipe (proxy/frame_splicer.h), one direction of a spliced connection, over
// real libevent evbuffers.
//
// Input layout: byte 0 is a selector, the rest is the byte stream one peer sent.
//   bit 0     expect_masked (client -> backend)
//   bit 1     allow_rsv1
//   bit 2     allow_all_rsv
//   bits 3-4  max_message_bytes: 1, 16, 126, 65536
//   bits 5-6  sink high watermark: 1, 7, 139, 4096
//   bit 7     chunks are added with evbuffer_add_reference (one chain per chunk) instead of
//             being copied with evbuffer_add
//
// Runs (the sink is drained into a string after every Pump call, as the socket would):
//   A  the whole stream in one evbuffer_add;
//   B  the stream in chunks at cut points derived from the input;
//   C  the whole stream with a null sink (parse and drop);
//   D  chunks as in B, with StopAtBoundary() requested part-way, then a null sink, as the
//      session does when it inserts a close frame;
//   E  chunks as in B, with StopAtMessageBoundary() requested after every chunk, as the session
//      does while a pushed message waits;
//   F  chunks as in B with permessage-deflate inspection on (window, context takeover and hold
//      size derived from the input), as limits.compression: inspect runs it.
// Properties:
//   * A and B forward identical bytes and end in the same state (frames, messages, bytes,
//     close code/reason, violation, close relayed, result);
//   * C and D count the same frames/messages/bytes and see the same close and violation as A;
//   * what reaches the sink is a prefix of the input (the pipe never alters bytes), no longer
//     than bytes(); it is a sequence of whole headers, and frames() counts them; after a stop or
//     a close it ends on a frame boundary;
//   * kDrained never leaves more than a close frame's worth of input waiting;
//   * E forwards the same bytes as A, and every kMessageBoundary comes where the sink ends
//     outside any message (a pushed message inserted there cannot split a fragmented one);
//   * F forwards a prefix of what B does, short of it by at most one held frame unless
//     inflating found a violation (1009, 1007 or 1011), which leaves the sink at a frame
//     boundary exactly when none of the frame went out; other violations are B's.
#include <event2/buffer.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "proxy/frame_splicer.h"
#include "proxy/ws/frame.h"

namespace {

using wsgate::FramePipe;
using wsgate::fuzz::HashBytes;
using wsgate::fuzz::Rng;
namespace ws = wsgate::ws;

struct EvBufferFree {
  void operator()(evbuffer* b) const { evbuffer_free(b); }
};
using EvBuffer = std::unique_ptr<evbuffer, EvBufferFree>;

EvBuffer NewBuffer() {
  EvBuffer b(evbuffer_new());
  FUZZ_CHECK(b != nullptr);
  return b;
}

void DrainInto(evbuffer* sink, std::string* out) {
  const size_t n = evbuffer_get_length(sink);
  if (n == 0) return;
  const size_t old = out->size();
  out->resize(old + n);
  FUZZ_CHECK(evbuffer_remove(sink, out->data() + old, n) == static_cast<int>(n));
}

// What one run observed.
struct Run {
  std::string sink;
  bool violated = false;
  bool stopped = false;
  size_t close_results = 0;           // kCloseRelayed returns
  size_t stop_offset = 0;             // sink size when kStopped came back
  std::vector<size_t> message_stops;  // sink sizes when kMessageBoundary came back
};

struct Feeder {
  FramePipe* pipe;
  evbuffer* source;
  evbuffer* sink;  // null: parse and drop
  size_t watermark;
  Run* run;
  size_t max_waiting = ws::kMaxHeaderBytes + ws::kMaxControlPayload;  // held input allowed
  bool inflating = false;  // a violation may stop inside a frame

  // Pump until the pipe wants more input or has stopped for good. Returns false once no more
  // input should be fed (violation).
  bool PumpAll() {
    for (size_t calls = 0;; ++calls) {
      FUZZ_CHECK(calls < 1000000);
      const size_t before = evbuffer_get_length(source);
      const FramePipe::Result r = pipe->Pump(source, sink, watermark);
      if (sink != nullptr) DrainInto(sink, &run->sink);
      switch (r) {
        case FramePipe::Result::kDrained:
          // Only a partial header or an incomplete close frame may wait.
          FUZZ_CHECK(evbuffer_get_length(source) < max_waiting);
          return true;
        case FramePipe::Result::kRateLimited:
          FUZZ_CHECK(false);  // the fuzz target sets no message rate
          return false;
        case FramePipe::Result::kMessageBoundary:
          FUZZ_CHECK(sink != nullptr && pipe->at_message_boundary());
          run->message_stops.push_back(run->sink.size());
          continue;
        case FramePipe::Result::kOutputFull:
          FUZZ_CHECK(sink != nullptr);
          FUZZ_CHECK(evbuffer_get_length(source) < before);  // it moved something
          continue;
        case FramePipe::Result::kCloseRelayed:
          ++run->close_results;
          FUZZ_CHECK(pipe->close_relayed() && pipe->at_boundary());
          continue;
        case FramePipe::Result::kStopped:
          FUZZ_CHECK(sink != nullptr && pipe->at_boundary());
          if (!run->stopped) {
            run->stopped = true;
            run->stop_offset = run->sink.size();
          }
          // The session writes its close to the sink and drops later frames.
          sink = nullptr;
          continue;
        case FramePipe::Result::kViolation:
          FUZZ_CHECK(pipe->violation_code() == ws::kProtocolError ||
                     pipe->violation_code() == ws::kMessageTooBig ||
                     pipe->violation_code() == ws::kInvalidPayload ||
                     (inflating && pipe->violation_code() == ws::kInternalError));
          FUZZ_CHECK(pipe->at_boundary() || (inflating && pipe->violation_in_inflate()));
          FUZZ_CHECK(pipe->at_boundary() == !pipe->frame_started());
          run->violated = true;
          return false;
      }
      FUZZ_CHECK(false);
    }
  }
};

// |same_counts|: both relayed to a sink throughout, so the relay counters must agree too (a
// pipe without a sink parses and drops, and counts only what it relayed).
void CheckSameState(const FramePipe& a, const FramePipe& b, const char* what, bool same_counts) {
  if (same_counts) {
    FUZZ_CHECK_MSG(a.frames() == b.frames(), "%s: frames %llu vs %llu", what,
                   static_cast<unsigned long long>(a.frames()),
                   static_cast<unsigned long long>(b.frames()));
    FUZZ_CHECK_MSG(a.messages() == b.messages(), "%s: messages", what);
    FUZZ_CHECK_MSG(a.bytes() == b.bytes(), "%s: bytes %llu vs %llu", what,
                   static_cast<unsigned long long>(a.bytes()),
                   static_cast<unsigned long long>(b.bytes()));
  } else {
    FUZZ_CHECK_MSG(b.frames() <= a.frames() && b.bytes() <= a.bytes(), "%s: counts", what);
  }
  FUZZ_CHECK_MSG(a.close_code() == b.close_code(), "%s: close_code %u vs %u", what, a.close_code(),
                 b.close_code());
  FUZZ_CHECK_MSG(a.close_reason() == b.close_reason(), "%s: close_reason", what);
  FUZZ_CHECK_MSG(a.violation_code() == b.violation_code(), "%s: violation %u vs %u", what,
                 a.violation_code(), b.violation_code());
  FUZZ_CHECK_MSG(a.close_relayed() == b.close_relayed(), "%s: close_relayed", what);
}

// Walk the forwarded bytes frame by frame. Returns the number of headers; *boundary is set when
// the bytes end exactly at the end of a frame; *last is the last header seen.
size_t WalkFrames(std::string_view bytes, bool* boundary, ws::FrameHeader* last) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  size_t pos = 0;
  size_t count = 0;
  *boundary = true;
  while (pos < bytes.size()) {
    ws::FrameHeader h;
    const ws::HeaderStatus s = ws::ParseFrameHeader(p + pos, bytes.size() - pos, &h);
    // Headers go to the sink only whole and only after they were accepted.
    FUZZ_CHECK_MSG(s == ws::HeaderStatus::kComplete, "partial or invalid header at sink offset %zu",
                   pos);
    ++count;
    *last = h;
    const uint64_t left = bytes.size() - pos - h.header_length;
    if (h.payload_length > left) {
      *boundary = false;
      break;
    }
    pos += h.header_length + static_cast<size_t>(h.payload_length);
  }
  return count;
}

// True if |bytes| (whole frames) ends outside any fragmented message.
bool EndsOutsideMessage(std::string_view bytes) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  size_t pos = 0;
  bool in_message = false;
  while (pos < bytes.size()) {
    ws::FrameHeader h;
    FUZZ_CHECK(ws::ParseFrameHeader(p + pos, bytes.size() - pos, &h) ==
               ws::HeaderStatus::kComplete);
    if (!h.IsControl()) in_message = !h.fin;
    pos += h.header_length + static_cast<size_t>(h.payload_length);
  }
  FUZZ_CHECK(pos == bytes.size());
  return !in_message;
}

// Cut points for the chunked runs: mostly short steps, sometimes long ones.
std::vector<size_t> MakeCuts(size_t size, uint64_t seed) {
  Rng rng(seed);
  std::vector<size_t> cuts;
  size_t pos = 0;
  while (pos < size) {
    const size_t step = (rng.Next() & 3) == 0 ? rng.Range(1, 512) : rng.Range(1, 9);
    pos = step < size - pos ? pos + step : size;
    cuts.push_back(pos);
  }
  return cuts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t selector = data[0];
  // Owned for the whole run: evbuffer_add_reference chains point into it.
  const std::string stream(reinterpret_cast<const char*>(data + 1), size - 1);

  ws::DirectionPolicy policy;
  policy.expect_masked = (selector & 0x01) != 0;
  policy.allow_rsv1 = (selector & 0x02) != 0;
  policy.allow_all_rsv = (selector & 0x04) != 0;
  static constexpr uint64_t kMaxMessage[4] = {1, 16, 126, 65536};
  policy.max_message_bytes = kMaxMessage[(selector >> 3) & 3];
  static constexpr size_t kWatermarks[4] = {1, 7, 139, 4096};
  const size_t watermark = kWatermarks[(selector >> 5) & 3];
  const bool by_reference = (selector & 0x80) != 0;
  const uint64_t seed = HashBytes(data, size);
  const std::vector<size_t> cuts = MakeCuts(stream.size(), seed);

  auto add = [&](evbuffer* source, size_t from, size_t to) {
    if (to <= from) return;
    const int rc = by_reference ? evbuffer_add_reference(source, stream.data() + from, to - from,
                                                         nullptr, nullptr)
                                : evbuffer_add(source, stream.data() + from, to - from);
    FUZZ_CHECK(rc == 0);
  };

  // A: all at once.
  FramePipe pipe_a(policy);
  Run run_a;
  {
    EvBuffer source = NewBuffer();
    EvBuffer sink = NewBuffer();
    if (!stream.empty()) FUZZ_CHECK(evbuffer_add(source.get(), stream.data(), stream.size()) == 0);
    Feeder{&pipe_a, source.get(), sink.get(), watermark, &run_a}.PumpAll();
  }

  // B: in chunks.
  FramePipe pipe_b(policy);
  Run run_b;
  {
    EvBuffer source = NewBuffer();
    EvBuffer sink = NewBuffer();
    Feeder feeder{&pipe_b, source.get(), sink.get(), watermark, &run_b};
    size_t fed = 0;
    for (size_t cut : cuts) {
      add(source.get(), fed, cut);
      fed = cut;
      if (!feeder.PumpAll()) break;
    }
  }

  // C: nobody to deliver to.
  FramePipe pipe_c(policy);
  Run run_c;
  {
    EvBuffer source = NewBuffer();
    if (!stream.empty()) FUZZ_CHECK(evbuffer_add(source.get(), stream.data(), stream.size()) == 0);
    Feeder{&pipe_c, source.get(), nullptr, watermark, &run_c}.PumpAll();
    FUZZ_CHECK(run_c.sink.empty());
  }

  // D: chunks, with a stop requested after a chunk chosen from the input.
  FramePipe pipe_d(policy);
  Run run_d;
  {
    EvBuffer source = NewBuffer();
    EvBuffer sink = NewBuffer();
    Feeder feeder{&pipe_d, source.get(), sink.get(), watermark, &run_d};
    const size_t stop_after = cuts.empty() ? 0 : static_cast<size_t>(seed % cuts.size());
    size_t fed = 0;
    for (size_t i = 0; i < cuts.size(); ++i) {
      add(source.get(), fed, cuts[i]);
      fed = cuts[i];
      if (i == stop_after) pipe_d.StopAtBoundary();
      if (!feeder.PumpAll()) break;
    }
  }

  // E: chunks, a message-boundary stop asked for after each.
  FramePipe pipe_e(policy);
  Run run_e;
  {
    EvBuffer source = NewBuffer();
    EvBuffer sink = NewBuffer();
    Feeder feeder{&pipe_e, source.get(), sink.get(), watermark, &run_e};
    size_t fed = 0;
    for (size_t cut : cuts) {
      add(source.get(), fed, cut);
      fed = cut;
      pipe_e.StopAtMessageBoundary();
      if (!feeder.PumpAll()) break;
    }
  }
  // F: chunks, inflating compressed messages.
  FramePipe pipe_f(policy);
  Run run_f;
  static constexpr size_t kHolds[4] = {0, 1, 64, 4096};
  const size_t hold = kHolds[(seed >> 8) & 3];
  {
    EvBuffer source = NewBuffer();
    EvBuffer sink = NewBuffer();
    pipe_f.set_inflate(static_cast<uint8_t>(8 + (seed >> 4) % 8), ((seed >> 7) & 1) != 0, hold);
    Feeder feeder{&pipe_f,    source.get(),
                  sink.get(), watermark,
                  &run_f,     std::max(hold + 1, ws::kMaxHeaderBytes + ws::kMaxControlPayload),
                  true};
    size_t fed = 0;
    for (size_t cut : cuts) {
      add(source.get(), fed, cut);
      fed = cut;
      if (!feeder.PumpAll()) break;
    }
  }
  FUZZ_CHECK_MSG(run_b.sink.compare(0, run_f.sink.size(), run_f.sink) == 0 &&
                     run_f.sink.size() <= run_b.sink.size(),
                 "inflating changed the bytes forwarded");
  if (pipe_f.violation_in_inflate()) {
    FUZZ_CHECK(run_f.violated);
  } else {
    FUZZ_CHECK(pipe_f.violation_code() == pipe_b.violation_code());
    FUZZ_CHECK(run_b.sink.size() - run_f.sink.size() <= hold);
  }

  FUZZ_CHECK_MSG(run_a.sink == run_e.sink, "message stops changed the bytes forwarded");
  CheckSameState(pipe_a, pipe_e, "no stop vs message stops", true);
  for (size_t offset : run_e.message_stops) {
    FUZZ_CHECK_MSG(EndsOutsideMessage(std::string_view(run_e.sink).substr(0, offset)),
                   "message-boundary stop inside a message at sink offset %zu", offset);
  }

  // A and B: same bytes, same end state.
  FUZZ_CHECK_MSG(run_a.sink == run_b.sink, "sink differs: whole %zu bytes, chunked %zu bytes",
                 run_a.sink.size(), run_b.sink.size());
  CheckSameState(pipe_a, pipe_b, "whole vs chunked", true);
  FUZZ_CHECK(run_a.violated == run_b.violated);
  FUZZ_CHECK(run_a.close_results == run_b.close_results);
  FUZZ_CHECK(pipe_a.at_boundary() == pipe_b.at_boundary());
  CheckSameState(pipe_a, pipe_c, "sink vs no sink", false);
  FUZZ_CHECK(pipe_c.frames() == 0 && pipe_c.bytes() == 0);
  FUZZ_CHECK(run_a.violated == run_c.violated);
  CheckSameState(pipe_a, pipe_d, "no stop vs stop", false);
  FUZZ_CHECK(pipe_d.bytes() == run_d.sink.size());
  FUZZ_CHECK(run_a.violated == run_d.violated);

  // The bytes forwarded are the bytes received, unaltered and never more.
  FUZZ_CHECK(pipe_a.bytes() <= stream.size());
  FUZZ_CHECK(run_a.sink.size() == pipe_a.bytes());
  FUZZ_CHECK(std::string_view(stream).substr(0, run_a.sink.size()) == run_a.sink);
  FUZZ_CHECK(run_a.close_results == (pipe_a.close_relayed() ? 1u : 0u));
  FUZZ_CHECK(!pipe_a.close_relayed() || pipe_a.violation_code() == 0);

  bool boundary = false;
  ws::FrameHeader last;
  const size_t walked = WalkFrames(run_a.sink, &boundary, &last);
  FUZZ_CHECK_MSG(walked == pipe_a.frames(), "sink holds %zu headers, frames() = %llu", walked,
                 static_cast<unsigned long long>(pipe_a.frames()));
  FUZZ_CHECK(boundary == pipe_a.at_boundary());
  FUZZ_CHECK(pipe_a.messages() <= pipe_a.frames());
  if (pipe_a.close_relayed()) {
    // The close frame is the last thing forwarded, and close_code() is the one it carried.
    FUZZ_CHECK(boundary && walked > 0 && last.opcode == ws::kClose);
    FUZZ_CHECK(pipe_a.close_code() == ws::kNoStatus ||
               ws::IsValidWireCloseCode(pipe_a.close_code()));
  } else {
    FUZZ_CHECK(pipe_a.close_code() == 0);
  }

  // D: a prefix of A's bytes, cut at a frame boundary.
  FUZZ_CHECK(run_d.sink.size() <= run_a.sink.size());
  FUZZ_CHECK(std::string_view(run_a.sink).substr(0, run_d.sink.size()) == run_d.sink);
  if (run_d.stopped) {
    FUZZ_CHECK(run_d.stop_offset == run_d.sink.size());
    bool d_boundary = false;
    ws::FrameHeader d_last;
    WalkFrames(run_d.sink, &d_boundary, &d_last);
    FUZZ_CHECK_MSG(d_boundary, "stopped inside a frame after %zu bytes", run_d.sink.size());
  }
  return 0;
}
