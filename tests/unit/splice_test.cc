// Splicing a large frame's payload between two DirectSockets over real loopback TCP: the bytes
// arrive intact and in order and are counted, a slow sink holds the source back without losing
// anything, and EOF in the middle of a spliced frame is reported like a read's EOF.
//
// Relay below is the session's glue in miniature (Session::Pump, DrainSplice, MaybeStartSplice,
// OnWritable): FramePipe moves headers and small tails, the pipe carries the payload.
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "proxy/core/libevent_ptr.h"
#include "proxy/direct_socket.h"
#include "proxy/frame_splicer.h"
#include "proxy/ws/frame.h"
#include "tests/unit/loopback_util.h"

namespace wsgate {
using wsgate::testing::TcpPair;

namespace {

const bool kSigpipeIgnored = [] { return signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();

constexpr size_t kHighWatermark = 64 * 1024;
constexpr uint64_t kThreshold = 16 * 1024;

// A FIN binary frame from a backend (unmasked), with the shortest length form.
std::string BinaryFrame(const std::string& payload) {
  std::string out;
  out.push_back(static_cast<char>(0x80 | ws::kBinary));
  uint64_t n = payload.size();
  int length_bytes = n < 126 ? 0 : n <= 0xFFFF ? 2 : 8;
  out.push_back(static_cast<char>(length_bytes == 0 ? n : length_bytes == 2 ? 126 : 127));
  for (int i = length_bytes - 1; i >= 0; --i) out.push_back(static_cast<char>(n >> (8 * i)));
  return out + payload;
}

// Content that changes every byte, so reordering or loss shows.
std::string Pattern(size_t size) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<char>((i * 131 + i / 4096) & 0xFF);
  return out;
}

struct Relay {
  DirectSocket source;
  DirectSocket sink;
  FramePipe frames{ws::DirectionPolicy{}};
  SplicePipePtr pipe;
  bool paused = false;
  int pauses = 0;
  size_t spliced = 0;                // bytes that went through the pipe
  bool boundary_while_held = false;  // must never be seen
  short source_event = 0;

  void OnSourceRead() {
    if (pipe && !Drain()) return;
    while (true) {
      FramePipe::Result result = frames.Pump(source.input(), sink.output(), kHighWatermark);
      if (result == FramePipe::Result::kOutputFull) {
        sink.Flush();
        if (sink.output_length() < kHighWatermark) continue;
        Pause();
      } else if (result == FramePipe::Result::kDrained) {
        MaybeStart();
      } else {
        ADD_FAILURE() << "unexpected pump result " << static_cast<int>(result);
      }
      break;
    }
    sink.Flush();
    source.InputConsumed();
  }
  void MaybeStart() {
    uint64_t left = frames.spliceable_bytes();
    if (left < kThreshold || pipe || source.input_length() != 0) return;
    sink.Flush();
    if (sink.output_length() != 0) return;
    pipe = TakeSplicePipe();
    ASSERT_TRUE(pipe);
    source.SpliceInto(pipe->write_fd, std::min<uint64_t>(left, pipe->capacity));
  }
  bool Drain() {
    pipe->held += source.TakeSplicedBytes();
    if (pipe->held > 0) {
      size_t moved = sink.SpliceFrom(pipe->read_fd, pipe->held);
      pipe->held -= moved;
      spliced += moved;
      frames.SplicedToSink(moved);
      if (pipe->held > 0) {
        if (frames.at_boundary()) boundary_while_held = true;
        Pause();
        return false;
      }
    }
    uint64_t left = frames.spliceable_bytes();
    if (left == 0) {
      source.StopSplicing();
      pipe.reset();
      return true;
    }
    source.SpliceInto(pipe->write_fd, std::min<uint64_t>(left, pipe->capacity));
    return true;
  }
  void Pause() {
    paused = true;
    ++pauses;
    source.SetReading(false);
  }
  void OnSinkWritable() {
    if (!paused || sink.output_length() >= kHighWatermark) return;
    paused = false;
    source.SetReading(true);
    OnSourceRead();
  }
};

void SourceRead(void* ctx) { static_cast<Relay*>(ctx)->OnSourceRead(); }
void SourceEvent(void* ctx, short what) {
  auto* relay = static_cast<Relay*>(ctx);
  relay->OnSourceRead();  // as the session does: move what came before the end first
  relay->source_event = what;
}
void SinkWrite(void* ctx) { static_cast<Relay*>(ctx)->OnSinkWritable(); }
void Ignore(void*) {}
void IgnoreEvent(void*, short) {}
constexpr DirectSocket::Callbacks kSourceCallbacks{&SourceRead, &Ignore, &SourceEvent};
constexpr DirectSocket::Callbacks kSinkCallbacks{&Ignore, &SinkWrite, &IgnoreEvent};

class SpliceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_.reset(event_base_new());
    TcpPair(in_);
    TcpPair(out_);
  }
  void Start() {
    for (auto [fd, socket, callbacks] : {std::tuple{in_[0], &relay_.source, &kSourceCallbacks},
                                         std::tuple{out_[0], &relay_.sink, &kSinkCallbacks}}) {
      BufferEventPtr bev(bufferevent_socket_new(base_.get(), fd, BEV_OPT_CLOSE_ON_FREE));
      ASSERT_TRUE(socket->TakeOver(bev, callbacks, &relay_));
    }
    relay_.sink.WatchWritable(kHighWatermark / 2);
    relay_.source.SetReading(true);
  }
  void TearDown() override {
    relay_.source.Close();
    relay_.sink.Close();
    relay_.pipe.reset();
    if (in_[1] >= 0) close(in_[1]);
    if (out_[1] >= 0) close(out_[1]);
  }
  // Send |data| into the source and run the loop, reading the sink's peer every |read_every|
  // turns, until |expected| bytes came out or 20 seconds passed.
  std::string Run(const std::string& data, size_t expected, int read_every = 1) {
    std::string received;
    size_t sent = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (int turn = 0; received.size() < expected && std::chrono::steady_clock::now() < deadline;
         ++turn) {
      if (sent < data.size()) {
        ssize_t n = send(in_[1], data.data() + sent,
                         std::min<size_t>(data.size() - sent, 256 * 1024), MSG_DONTWAIT);
        if (n > 0) sent += static_cast<size_t>(n);
      }
      event_base_loop(base_.get(), EVLOOP_NONBLOCK);
      if (turn % read_every == 0) {
        char buffer[8192];  // small reads: a slow consumer
        ssize_t n = recv(out_[1], buffer, sizeof(buffer), MSG_DONTWAIT);
        if (n > 0) received.append(buffer, static_cast<size_t>(n));
      }
    }
    return received;
  }

  EventBasePtr base_;
  int in_[2] = {-1, -1};
  int out_[2] = {-1, -1};
  Relay relay_;
};

TEST_F(SpliceTest, LargeFramePayloadGoesThroughThePipeIntactAndCounted) {
  Start();
  std::string frame = BinaryFrame(Pattern(4 * 1024 * 1024)) + BinaryFrame("tail");
  std::string received = Run(frame, frame.size());
  ASSERT_EQ(received.size(), frame.size());
  EXPECT_TRUE(received == frame) << "bytes differ";
  EXPECT_GT(relay_.spliced, 3u * 1024 * 1024);  // most of it went by splice
  EXPECT_EQ(relay_.frames.bytes(), frame.size());
  EXPECT_EQ(relay_.frames.messages(), 2u);
  EXPECT_TRUE(relay_.frames.at_boundary());
  EXPECT_FALSE(relay_.pipe);  // handed back once the payload was delivered
  EXPECT_FALSE(relay_.boundary_while_held);
}

TEST_F(SpliceTest, SlowSinkHoldsTheSourceBackAndLosesNothing) {
  // Small, but not so small that TCP falls into zero-window probing (which would only be slow).
  int small = 16 * 1024;
  ASSERT_EQ(setsockopt(out_[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  Start();
  std::string frame;
  for (int i = 0; i < 3; ++i) frame += BinaryFrame(Pattern(1024 * 1024 + static_cast<size_t>(i)));
  std::string received = Run(frame, frame.size(), /*read_every=*/4);
  ASSERT_EQ(received.size(), frame.size());
  EXPECT_TRUE(received == frame) << "bytes differ";
  EXPECT_GT(relay_.pauses, 0);                  // the sink was full with bytes in the pipe
  EXPECT_GT(relay_.spliced, 1u * 1024 * 1024);  // each frame starts the evbuffer way
  EXPECT_EQ(relay_.frames.bytes(), frame.size());
  EXPECT_FALSE(relay_.boundary_while_held);
}

TEST_F(SpliceTest, EndOfStreamInsideASplicedFrameIsReportedLikeAReadEof) {
  Start();
  std::string frame = BinaryFrame(Pattern(1024 * 1024));
  std::string part = frame.substr(0, 300 * 1024);
  std::string received = Run(part, part.size());
  ASSERT_EQ(received, part);
  EXPECT_GT(relay_.spliced, 0u);
  EXPECT_TRUE(relay_.pipe);  // still inside the frame
  shutdown(in_[1], SHUT_WR);
  for (int turn = 0; turn < 1000 && relay_.source_event == 0; ++turn) {
    event_base_loop(base_.get(), EVLOOP_NONBLOCK);
  }
  EXPECT_EQ(relay_.source_event, BEV_EVENT_READING | BEV_EVENT_EOF);
  EXPECT_FALSE(relay_.frames.at_boundary());  // a frame cut in half: the session closes TCP
  EXPECT_EQ(relay_.frames.bytes(), part.size());
}

TEST(SplicePipePool, LendsAtMostItsLimitAndReusesReturnedPipes) {
  std::vector<SplicePipePtr> taken;
  for (size_t i = 0; i < kMaxSplicePipesPerThread; ++i) {
    taken.push_back(TakeSplicePipe());
    ASSERT_TRUE(taken.back());
    EXPECT_GE(taken.back()->capacity, 64u * 1024);
  }
  EXPECT_FALSE(TakeSplicePipe());  // the caller falls back to the evbuffers
  int reused = taken.back()->read_fd;
  taken.pop_back();
  SplicePipePtr again = TakeSplicePipe();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->read_fd, reused);
  // One still holding bytes is closed, not pooled: a new pipe replaces it.
  ASSERT_EQ(write(again->write_fd, "x", 1), 1);
  again->held = 1;
  again.reset();
  SplicePipePtr fresh = TakeSplicePipe();
  ASSERT_TRUE(fresh);
  char byte;
  EXPECT_EQ(read(fresh->read_fd, &byte, 1), -1);  // empty (EAGAIN), not the old one's byte
}

}  // namespace
}  // namespace wsgate
