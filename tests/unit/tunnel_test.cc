// Tunnel over real loopback TCP: the test owns the far end of the client's and the backend's
// connections and speaks raw WebSocket frames on them, while the Tunnel drives the proxy-side
// ends as a Session would (a plain client moves from its bufferevent to a DirectSocket; a
// backend is a DirectSocket from connect() or, like TLS, stays on a bufferevent). Each case
// checks the bytes at both far ends, the CloseDecision, the counters and that the owner heard
// OnTunnelEnded exactly once. Loopback TCP rather than socketpairs: splice(2) of large frames
// runs as in production.
#include <gtest/gtest.h>

#include "tests/unit/tunnel_fixture.h"

namespace wsgate::tunnel_testing {
namespace {

using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------
// Relaying.

TEST_P(TunnelTest, RelaysDataBothWaysAndCountsIt) {
  Start();
  std::string hello = FromClient(ws::kText, "hello");
  // A fragmented message with a ping between its fragments.
  std::string fragmented = FromClient(ws::kText, "frag", false) + FromClient(ws::kPing, "p") +
                           FromClient(ws::kContinuation, "mented", true);
  std::string large = FromClient(ws::kBinary, Pattern(100 * 1024));
  client_far_.Send(hello + fragmented + large);
  std::string world = FromBackend(ws::kText, "world");
  std::string large_back = FromBackend(ws::kBinary, Pattern(200 * 1024, 7));
  backend_far_.Send(world + large_back);

  ASSERT_TRUE(RunUntilFrames(backend_far_, 5));
  ASSERT_TRUE(RunUntilFrames(client_far_, 2));
  std::vector<Parsed> at_backend = backend_far_.frames();
  ASSERT_EQ(at_backend.size(), 5u);
  EXPECT_EQ(at_backend[0].payload, "hello");
  EXPECT_TRUE(at_backend[0].masked);
  EXPECT_EQ(at_backend[1].opcode, ws::kText);
  EXPECT_FALSE(at_backend[1].fin);
  EXPECT_EQ(at_backend[2].opcode, ws::kPing);
  EXPECT_EQ(at_backend[3].opcode, ws::kContinuation);
  EXPECT_EQ(at_backend[1].payload + at_backend[3].payload, "fragmented");
  EXPECT_EQ(at_backend[4].payload, Pattern(100 * 1024));
  // Frames pass byte for byte: the mask is kept, nothing is re-encoded.
  EXPECT_EQ(backend_far_.received, hello + fragmented + large);
  EXPECT_EQ(client_far_.received, world + large_back);

  EXPECT_EQ(tunnel_->bytes_from_client(), (hello + fragmented + large).size());
  EXPECT_EQ(tunnel_->messages_from_client(), 3u);
  EXPECT_EQ(tunnel_->bytes_to_client(), (world + large_back).size());
  EXPECT_EQ(tunnel_->messages_to_client(), 2u);
  EXPECT_FALSE(tunnel_->closing());
  EXPECT_FALSE(tunnel_->close().decided());
  EXPECT_EQ(ended_calls_, 0);
}

// ---------------------------------------------------------------------------------------------
// The close handshake.

TEST_P(TunnelTest, CloseStartedByTheClient) {
  Start();
  client_far_.Send(FromClient(ws::kText, "last") + CloseFromClient(ws::kNormal, "bye"));
  ASSERT_TRUE(RunUntil([&] { return backend_far_.got_close(); }));
  std::vector<Parsed> at_backend = backend_far_.frames();
  ASSERT_EQ(at_backend.size(), 2u);
  EXPECT_EQ(at_backend[0].payload, "last");
  EXPECT_TRUE(at_backend[1].masked);
  ExpectClose(at_backend[1], ws::kNormal, "bye");
  EXPECT_TRUE(tunnel_->closing());
  EXPECT_EQ(ended_calls_, 0);
  backend_far_.Send(CloseFromBackend(ws::kNormal, "ok"));
  ASSERT_TRUE(RunUntil([&] { return ended_calls_ > 0 && client_far_.eof && backend_far_.eof; }));
  std::vector<Parsed> at_client = client_far_.frames();
  ASSERT_EQ(at_client.size(), 1u);
  ExpectClose(at_client[0], ws::kNormal, "ok");
  EXPECT_FALSE(at_client[0].masked);
  ExpectDecision(ws::kNormal, ClosedBy::kClient, "bye");
  EXPECT_EQ(ended_calls_, 1);
}

TEST_P(TunnelTest, CloseStartedByTheBackend) {
  Start();
  backend_far_.Send(CloseFromBackend(ws::kGoingAway, "restart"));
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close(); }));
  ExpectClose(client_far_.last(), ws::kGoingAway, "restart");
  client_far_.Send(CloseFromClient(ws::kGoingAway, ""));
  ASSERT_TRUE(RunUntil([&] { return ended_calls_ > 0 && client_far_.eof && backend_far_.eof; }));
  ASSERT_EQ(backend_far_.frames().size(), 1u);
  ExpectClose(backend_far_.last(), ws::kGoingAway, "");
  ExpectDecision(ws::kGoingAway, ClosedBy::kBackend, "restart");
  EXPECT_EQ(ended_calls_, 1);
}

TEST_P(TunnelTest, CloseFramesCrossing) {
  Start();
  client_far_.Send(CloseFromClient(ws::kNormal, "client"));
  backend_far_.Send(CloseFromBackend(ws::kNormal, "backend"));
  ASSERT_TRUE(RunUntil([&] { return ended_calls_ > 0 && client_far_.eof && backend_far_.eof; }));
  // Each side gets exactly the other's close frame; the first one read decides.
  ASSERT_EQ(client_far_.frames().size(), 1u);
  ExpectClose(client_far_.last(), ws::kNormal, "backend");
  ASSERT_EQ(backend_far_.frames().size(), 1u);
  ExpectClose(backend_far_.last(), ws::kNormal, "client");
  EXPECT_EQ(tunnel_->close().code, ws::kNormal);
  EXPECT_TRUE(tunnel_->close().by == ClosedBy::kClient ||
              tunnel_->close().by == ClosedBy::kBackend);
  EXPECT_EQ(tunnel_->close().reason,
            tunnel_->close().by == ClosedBy::kClient ? "client" : "backend");
  EXPECT_EQ(ended_calls_, 1);
}

TEST_P(TunnelTest, ClientHalfClosedAfterItsCloseStillGetsTheReply) {
  Start();
  client_far_.Send(CloseFromClient(ws::kNormal, "bye"));
  client_far_.ShutdownWrite();
  ASSERT_TRUE(RunUntil([&] { return backend_far_.got_close(); }));
  EXPECT_FALSE(client_far_.eof);
  backend_far_.Send(CloseFromBackend(ws::kNormal, "reply"));
  ASSERT_TRUE(RunUntil([&] { return ended_calls_ > 0 && client_far_.eof && backend_far_.eof; }));
  ASSERT_EQ(client_far_.frames().size(), 1u);
  ExpectClose(client_far_.last(), ws::kNormal, "reply");
  ExpectDecision(ws::kNormal, ClosedBy::kClient, "bye");
  EXPECT_EQ(ended_calls_, 1);
}

// With a direct client and a bufferevent backend the reply is relayed in the same loop pass as
// the backend's (deferred) EOF: it was dropped before the fix in Tunnel::OnPeerGone.
TEST_P(TunnelTest, BackendHalfClosedAfterItsCloseStillGetsTheReply) {
  Start();
  backend_far_.Send(CloseFromBackend(ws::kNormal, "bye"));
  backend_far_.ShutdownWrite();
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close(); }));
  EXPECT_FALSE(backend_far_.eof);
  client_far_.Send(CloseFromClient(ws::kNormal, "reply"));
  ASSERT_TRUE(RunUntil([&] { return ended_calls_ > 0 && client_far_.eof && backend_far_.eof; }));
  ASSERT_EQ(backend_far_.frames().size(), 1u);
  ExpectClose(backend_far_.last(), ws::kNormal, "reply");
  ExpectDecision(ws::kNormal, ClosedBy::kBackend, "bye");
  EXPECT_EQ(ended_calls_, 1);
}

// ---------------------------------------------------------------------------------------------
// A peer gone without a close frame.

TEST_P(TunnelTest, BackendGoneWithoutCloseTellsTheClient1014) {
  Start();
  backend_far_.Send(FromBackend(ws::kText, "before"));
  ASSERT_TRUE(RunUntilFrames(client_far_, 1));
  backend_far_.Close();
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close(); }));
  std::vector<Parsed> at_client = client_far_.frames();
  ASSERT_EQ(at_client.size(), 2u);
  EXPECT_EQ(at_client[0].payload, "before");
  ExpectClose(at_client[1], ws::kBadGateway, "backend went away");
  EXPECT_EQ(ended_calls_, 0);  // waiting for the client's reply
  client_far_.Send(CloseFromClient(ws::kBadGateway, ""));
  ASSERT_TRUE(RunUntil([&] { return ended_calls_ > 0 && client_far_.eof; }));
  ExpectDecision(ws::kAbnormal, ClosedBy::kBackend, "TCP closed without a close frame");
  EXPECT_EQ(ended_calls_, 1);
}

TEST_P(TunnelTest, ClientGoneWithoutCloseTellsTheBackend1001) {
  Start();
  client_far_.Close();
  ASSERT_TRUE(RunUntil([&] { return backend_far_.got_close(); }));
  ASSERT_EQ(backend_far_.frames().size(), 1u);
  ExpectClose(backend_far_.last(), ws::kGoingAway, "client went away");
  EXPECT_TRUE(backend_far_.last().masked);
  backend_far_.Send(CloseFromBackend(ws::kGoingAway, ""));
  ASSERT_TRUE(RunUntil([&] { return ended_calls_ > 0 && backend_far_.eof; }));
  ExpectDecision(ws::kAbnormal, ClosedBy::kClient, "TCP closed without a close frame");
  EXPECT_EQ(ended_calls_, 1);
}

// A frame cut in half cannot be followed by a close frame: the other side's TCP connection ends.
TEST_P(TunnelTest, FrameCutInHalfEndsTheOtherConnectionWithoutClose) {
  Start();
  std::string frame = FromBackend(ws::kBinary, Pattern(1000));
  backend_far_.Send(frame.substr(0, 500));
  ASSERT_TRUE(RunUntil([&] { return client_far_.received.size() == 500; }));
  backend_far_.Close();
  ASSERT_TRUE(RunUntil([&] { return ended_calls_ > 0 && client_far_.eof; }));
  EXPECT_EQ(client_far_.received, frame.substr(0, 500));
  ExpectDecision(ws::kAbnormal, ClosedBy::kBackend, "TCP closed without a close frame");
  EXPECT_EQ(ended_calls_, 1);
}

// Whole messages the tunnel accepted before the cut frame still reach a slow client (with two
// direct sockets they were dropped before the fix in Tunnel::OnPeerGone).
TEST_P(TunnelTest, SlowClientGetsTheWholeMessagesBeforeACutFrame) {
  Start({}, /*small_buffers=*/true);
  client_far_.reading = false;
  std::string whole;
  for (size_t i = 0; i < 25; ++i) whole += FromBackend(ws::kBinary, Pattern(4000, i));
  std::string cut = FromBackend(ws::kBinary, Pattern(4000, 99)).substr(0, 2000);
  backend_far_.Send(whole + cut);
  ASSERT_TRUE(RunUntil([&] { return backend_far_.outbox.empty() && client_.output_length() > 0; }));
  backend_far_.Close();
  client_far_.reading = true;
  ASSERT_TRUE(RunUntil([&] { return ended_calls_ > 0 && client_far_.eof; }));
  EXPECT_EQ(client_far_.received.size(), (whole + cut).size());
  EXPECT_TRUE(client_far_.received == whole + cut);
  ExpectDecision(ws::kAbnormal, ClosedBy::kBackend, "TCP closed without a close frame");
}

// The same while the frame goes by splice(2) (two direct sockets) or the evbuffers.
TEST_P(TunnelTest, LargeFrameCutInHalfDeliversWhatArrivedThenEnds) {
  Start();
  std::string frame = FromBackend(ws::kBinary, Pattern(256 * 1024));
  size_t cut = 100 * 1024;
  backend_far_.Send(frame.substr(0, cut));
  ASSERT_TRUE(RunUntil([&] { return backend_far_.outbox.empty(); }));
  ASSERT_TRUE(RunUntil([&] { return client_far_.received.size() == cut; }));
  backend_far_.Close();
  ASSERT_TRUE(RunUntil([&] { return ended_calls_ > 0 && client_far_.eof; }));
  EXPECT_EQ(client_far_.received, frame.substr(0, cut));
  EXPECT_FALSE(client_far_.got_close());
  ExpectDecision(ws::kAbnormal, ClosedBy::kBackend, "TCP closed without a close frame");
  EXPECT_EQ(ended_calls_, 1);
}

// ---------------------------------------------------------------------------------------------
// Protocol violations and limits.

TEST_P(TunnelTest, UnmaskedClientFrameIs1002AndTheBackendGets1001) {
  Start();
  client_far_.Send(FromClient(ws::kText, "fine") + FromBackend(ws::kText, "unmasked"));
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close() && backend_far_.got_close(); }));
  std::vector<Parsed> at_backend = backend_far_.frames();
  ASSERT_EQ(at_backend.size(), 2u);
  EXPECT_EQ(at_backend[0].payload, "fine");
  ExpectClose(at_backend[1], ws::kGoingAway, "client protocol error");
  ASSERT_EQ(client_far_.frames().size(), 1u);
  ExpectClose(client_far_.last(), ws::kProtocolError, "protocol error");
  ExpectDecision(ws::kProtocolError, ClosedBy::kProxy, "client protocol error");
  // The offender gets a lingering close: FIN after the close frame, its bytes dropped till EOF.
  ASSERT_TRUE(RunUntil([&] { return client_far_.eof; }));
  EXPECT_FALSE(client_far_.reset);
  client_far_.Send(FromClient(ws::kText, "ignored"));
  client_far_.Close();
  backend_far_.Send(CloseFromBackend(ws::kGoingAway, ""));
  ASSERT_TRUE(RunUntil([&] { return ended_calls_ > 0 && backend_far_.eof; }));
  EXPECT_EQ(backend_far_.frames().size(), 2u);
  EXPECT_EQ(tunnel_->messages_from_client(), 1u);
  EXPECT_EQ(ended_calls_, 1);
}

TEST_P(TunnelTest, MaskedBackendFrameIs1002AndTheClientGets1011) {
  Start();
  backend_far_.Send(FromBackend(ws::kText, "fine") + FromClient(ws::kText, "masked"));
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close() && backend_far_.got_close(); }));
  std::vector<Parsed> at_client = client_far_.frames();
  ASSERT_EQ(at_client.size(), 2u);
  EXPECT_EQ(at_client[0].payload, "fine");
  ExpectClose(at_client[1], ws::kInternalError, "backend protocol error");
  ASSERT_EQ(backend_far_.frames().size(), 1u);
  ExpectClose(backend_far_.last(), ws::kProtocolError, "protocol error");
  ExpectDecision(ws::kProtocolError, ClosedBy::kProxy, "backend protocol error");
  FinishHandshake();
  EXPECT_EQ(ended_calls_, 1);
}

TEST_P(TunnelTest, MessageOverTheLimitIs1009) {
  config_.limits.max_message_bytes = 1000;
  Start();
  // Fragments add up: 600 + 600 is over 1000.
  client_far_.Send(FromClient(ws::kText, std::string(600, 'a'), false) +
                   FromClient(ws::kContinuation, std::string(600, 'b')));
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close() && backend_far_.got_close(); }));
  ExpectClose(client_far_.last(), ws::kMessageTooBig, "message too big");
  std::vector<Parsed> at_backend = backend_far_.frames();
  ASSERT_EQ(at_backend.size(), 2u);  // the first fragment passed, then the close
  EXPECT_EQ(at_backend[0].payload, std::string(600, 'a'));
  ExpectClose(at_backend[1], ws::kGoingAway, "client protocol error");
  ExpectDecision(ws::kMessageTooBig, ClosedBy::kProxy, "client message too big");
  FinishHandshake();
  EXPECT_EQ(ended_calls_, 1);
}

// Garbage right behind a large frame (spliced between two direct sockets): the frame is
// delivered whole, and the close follows at its boundary.
TEST_P(TunnelTest, ViolationBehindALargeFrameIsHandledAtItsBoundary) {
  Start();
  std::string large = FromBackend(ws::kBinary, Pattern(300 * 1024, 3));
  backend_far_.Send(large.substr(0, 64 * 1024));
  ASSERT_TRUE(RunUntil([&] { return client_far_.received.size() >= 32 * 1024; }));
  std::string reserved_opcode = FromBackend(0x3, "garbage");
  backend_far_.Send(large.substr(64 * 1024) + reserved_opcode);
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close() && backend_far_.got_close(); }));
  std::vector<Parsed> at_client = client_far_.frames();
  ASSERT_EQ(at_client.size(), 2u);
  EXPECT_EQ(at_client[0].payload, Pattern(300 * 1024, 3));
  ExpectClose(at_client[1], ws::kInternalError, "backend protocol error");
  ExpectClose(backend_far_.last(), ws::kProtocolError, "protocol error");
  ExpectDecision(ws::kProtocolError, ClosedBy::kProxy, "backend protocol error");
  EXPECT_EQ(tunnel_->bytes_to_client(), large.size());
  FinishHandshake();
  EXPECT_EQ(ended_calls_, 1);
}

TEST_P(TunnelTest, ClientViolationBehindALargeFrameIsHandledAtItsBoundary) {
  Start();
  std::string large = FromClient(ws::kBinary, Pattern(300 * 1024, 5));
  client_far_.Send(large.substr(0, 64 * 1024));
  ASSERT_TRUE(RunUntil([&] { return backend_far_.received.size() >= 32 * 1024; }));
  client_far_.Send(large.substr(64 * 1024) + FromBackend(ws::kText, "unmasked"));
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close() && backend_far_.got_close(); }));
  std::vector<Parsed> at_backend = backend_far_.frames();
  ASSERT_EQ(at_backend.size(), 2u);
  EXPECT_EQ(at_backend[0].payload, Pattern(300 * 1024, 5));
  ExpectClose(at_backend[1], ws::kGoingAway, "client protocol error");
  ExpectClose(client_far_.last(), ws::kProtocolError, "protocol error");
  ExpectDecision(ws::kProtocolError, ClosedBy::kProxy, "client protocol error");
  EXPECT_EQ(tunnel_->bytes_from_client(), large.size());
  FinishHandshake();
  EXPECT_EQ(ended_calls_, 1);
}

// Bytes that do not compress.
std::string Noise(size_t size) {
  std::string out(size, '\0');
  uint32_t state = 12345;
  for (char& c : out) {
    state = state * 1103515245 + 12345;
    c = static_cast<char>(state >> 24);
  }
  return out;
}

// limits.compression: inspect finds a compressed message too big inside a frame longer than the
// hold size, after part of it reached the client: no close frame can follow that part, so the
// client's connection ends without one; the backend gets 1009.
TEST_P(TunnelTest, CompressedMessageTooBigInsideAFrameEndsTheClientWithoutClose) {
  verdict_.permessage_deflate = true;
  config_.limits.max_message_bytes = 200 * 1024;
  Start();
  // About 100 KiB compressed (under the limit, over the 64 KiB hold), 1.1 MiB inflated.
  std::string frame =
      FromBackend(ws::kBinary, Deflate(Noise(100 * 1024) + std::string(1 << 20, 'z')));
  ASSERT_LT(frame.size(), config_.limits.max_message_bytes);
  frame[0] = static_cast<char>(frame[0] | 0x40);  // RSV1: compressed
  backend_far_.Send(frame);
  ASSERT_TRUE(RunUntil([&] { return ended_calls_ > 0 && client_far_.eof && backend_far_.eof; }));
  EXPECT_FALSE(client_far_.got_close());
  EXPECT_GT(client_far_.received.size(), 0u);
  EXPECT_LT(client_far_.received.size(), frame.size());
  EXPECT_EQ(client_far_.received, frame.substr(0, client_far_.received.size()));
  ASSERT_EQ(backend_far_.frames().size(), 1u);
  ExpectClose(backend_far_.last(), ws::kMessageTooBig, "message too big");
  ExpectDecision(ws::kMessageTooBig, ClosedBy::kProxy, "backend message too big");
  EXPECT_EQ(ended_calls_, 1);
}

// ---------------------------------------------------------------------------------------------
// Backpressure.

TEST_P(TunnelTest, SlowClientHoldsTheBackendBackAndLosesNothing) {
  Start({}, /*small_buffers=*/true);
  client_far_.reading = false;
  constexpr size_t kFrames = 500;  // 2 MB: far more than any buffer on the way
  std::string all;
  for (size_t i = 0; i < kFrames; ++i) all += FromBackend(ws::kBinary, Pattern(4000, i));
  // Offer everything; the kernel takes what the path holds. Stop once the tunnel no longer
  // reads: bytes wait unread at its backend socket while a send would still block.
  backend_far_.Send(all);
  ASSERT_TRUE(RunUntilBackendHeldBack());
  size_t sent = backend_far_.sent;
  int proxy_backend_fd = backend_.fd();
  // What the tunnel took: at most the read limit plus one read in its input, and the output up
  // to the watermark plus the frame that crossed it, plus the kernel's buffers on the way.
  auto buffer_size = [](int fd, int option) {
    int size = 0;
    socklen_t length = sizeof(size);
    getsockopt(fd, SOL_SOCKET, option, &size, &length);
    return static_cast<size_t>(size);
  };
  size_t kernel = buffer_size(backend_far_.fd, SO_SNDBUF) +
                  buffer_size(proxy_backend_fd, SO_RCVBUF) + buffer_size(client_.fd(), SO_SNDBUF) +
                  buffer_size(client_far_.fd, SO_RCVBUF);
  size_t watermark = config_.limits.write_buffer_high_watermark;
  EXPECT_LT(sent, all.size());
  EXPECT_LE(sent, kernel + 2 * watermark + 2 * 64 * 1024) << "kernel buffers " << kernel;
  EXPECT_EQ(ended_calls_, 0);

  // The client reads again: reading resumes and every byte arrives, in order.
  client_far_.reading = true;
  ASSERT_TRUE(RunUntil([&] { return client_far_.received.size() == all.size(); }, 30s))
      << "received " << client_far_.received.size() << " of " << all.size() << ", sent "
      << backend_far_.sent << ", client output " << client_.output_length() << ", backend input "
      << evbuffer_get_length(backend_.input());
  EXPECT_TRUE(client_far_.received == all);
  EXPECT_EQ(tunnel_->bytes_to_client(), all.size());
  EXPECT_EQ(tunnel_->messages_to_client(), kFrames);
  EXPECT_FALSE(tunnel_->closing());
}

// The same for one large frame, which goes by splice(2) between two direct sockets: the pipe
// holds at most its capacity while the client is full.
TEST_P(TunnelTest, SlowClientHoldsALargeFrameBackAndLosesNothing) {
  Start({}, /*small_buffers=*/true);
  client_far_.reading = false;
  std::string frame = FromBackend(ws::kBinary, Pattern(2 * 1024 * 1024, 9));
  backend_far_.Send(frame);
  ASSERT_TRUE(RunUntilBackendHeldBack());
  size_t sent = backend_far_.sent;
  constexpr size_t kPipeCapacity = 256 * 1024;
  size_t watermark = config_.limits.write_buffer_high_watermark;
  // Four small kernel buffers (16 KiB asked, 32 KiB given), the tunnel's buffers, the pipe.
  EXPECT_LE(sent, 4 * 64 * 1024 + 2 * watermark + 2 * 64 * 1024 + kPipeCapacity);
  client_far_.reading = true;
  ASSERT_TRUE(RunUntil([&] { return client_far_.received.size() == frame.size(); }));
  EXPECT_TRUE(client_far_.received == frame);
  EXPECT_EQ(tunnel_->bytes_to_client(), frame.size());
  EXPECT_EQ(tunnel_->messages_to_client(), 1u);
}

// ---------------------------------------------------------------------------------------------
// GoAway (drain).

TEST_P(TunnelTest, GoAwayDeliversWhatWasReadBeforeTheCloseFrames) {
  Start({}, /*small_buffers=*/true);
  client_far_.reading = false;
  std::string all;
  for (size_t i = 0; i < 200; ++i) all += FromBackend(ws::kBinary, Pattern(4000, i));
  backend_far_.Send(all);
  // The tunnel now holds frames it read but could not deliver yet.
  ASSERT_TRUE(RunUntilBackendHeldBack());
  EXPECT_GT(client_.output_length(), 0u);
  tunnel_->GoAway(ws::kGoingAway, "drain");
  client_far_.reading = true;
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close() && backend_far_.got_close(); }));
  // Whole frames in order, a prefix of what was sent, then the close frame; nothing after it.
  size_t rest = 1;
  std::vector<Parsed> at_client = ParseFrames(client_far_.received, &rest);
  EXPECT_EQ(rest, 0u);
  ASSERT_GE(at_client.size(), 2u);
  for (size_t i = 0; i + 1 < at_client.size(); ++i) {
    ASSERT_EQ(at_client[i].payload, Pattern(4000, i)) << "frame " << i;
  }
  ExpectClose(at_client.back(), ws::kGoingAway, "drain");
  // Everything already in the tunnel's buffers went out.
  EXPECT_GT(at_client.size() - 1, 16u);
  ExpectClose(backend_far_.last(), ws::kGoingAway, "drain");
  EXPECT_TRUE(backend_far_.last().masked);
  ExpectDecision(ws::kGoingAway, ClosedBy::kProxy, "drain");
  EXPECT_EQ(tunnel_->messages_to_client(), at_client.size() - 1);
  FinishHandshake();
  EXPECT_EQ(ended_calls_, 1);
}

TEST_P(TunnelTest, GoAwayFinishesTheFrameInFlightFirst) {
  Start();
  std::string frame = FromBackend(ws::kBinary, Pattern(2000));
  backend_far_.Send(frame.substr(0, 1000));
  ASSERT_TRUE(RunUntil([&] { return client_far_.received.size() == 1000; }));
  tunnel_->GoAway(ws::kServiceRestart, "restart");
  // The backend's close is due at once; the client's waits for the frame's end.
  ASSERT_TRUE(RunUntil([&] { return backend_far_.got_close(); }));
  ExpectClose(backend_far_.last(), ws::kGoingAway, "restart");
  for (int i = 0; i < 3; ++i) event_base_loop(base_.get(), EVLOOP_NONBLOCK);
  client_far_.Read();
  EXPECT_EQ(client_far_.received.size(), 1000u);
  backend_far_.Send(frame.substr(1000));
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close(); }));
  std::vector<Parsed> at_client = client_far_.frames();
  ASSERT_EQ(at_client.size(), 2u);
  EXPECT_EQ(at_client[0].payload, Pattern(2000));
  ExpectClose(at_client[1], ws::kServiceRestart, "restart");
  ExpectDecision(ws::kServiceRestart, ClosedBy::kProxy, "restart");
  FinishHandshake();
  EXPECT_EQ(ended_calls_, 1);
}

// ---------------------------------------------------------------------------------------------
// Pushes from the connections API.

EvBufferPtr Payload(std::string_view text) {
  EvBufferPtr buffer(evbuffer_new());
  evbuffer_add(buffer.get(), text.data(), text.size());
  return buffer;
}

TEST_P(TunnelTest, PushGoesOutBetweenMessages) {
  PushQueue during_upgrade;
  EvBufferPtr early = Payload("queued during the upgrade");
  ASSERT_TRUE(during_upgrade.Add(early.get(), true));
  Start(std::move(during_upgrade));
  ASSERT_TRUE(RunUntilFrames(client_far_, 1));
  EXPECT_EQ(client_far_.last().payload, "queued during the upgrade");
  EvBufferPtr payload = Payload("pushed");
  EXPECT_EQ(tunnel_->Push(payload.get(), false), 200);
  ASSERT_TRUE(RunUntilFrames(client_far_, 2));
  Parsed pushed = client_far_.last();
  EXPECT_EQ(pushed.opcode, ws::kBinary);
  EXPECT_TRUE(pushed.fin);
  EXPECT_FALSE(pushed.masked);
  EXPECT_EQ(pushed.payload, "pushed");
  EXPECT_EQ(tunnel_->pushes().messages(), 2u);
  EXPECT_EQ(tunnel_->messages_to_client(), 2u);
  EXPECT_EQ(tunnel_->bytes_to_client(), client_far_.received.size());
  EXPECT_TRUE(backend_far_.received.empty());
}

TEST_P(TunnelTest, PushDuringAFragmentedMessageWaitsForItsEnd) {
  Start();
  backend_far_.Send(FromBackend(ws::kText, "part1", false));
  ASSERT_TRUE(RunUntilFrames(client_far_, 1));
  EvBufferPtr payload = Payload("pushed");
  EXPECT_EQ(tunnel_->Push(payload.get(), true), 200);
  // A ping inside the message may pass; the pushed message may not.
  backend_far_.Send(FromBackend(ws::kPing, "p"));
  ASSERT_TRUE(RunUntilFrames(client_far_, 2));
  for (int i = 0; i < 3; ++i) event_base_loop(base_.get(), EVLOOP_NONBLOCK);
  client_far_.Read();
  EXPECT_EQ(client_far_.frames().size(), 2u);
  backend_far_.Send(FromBackend(ws::kContinuation, "part2"));
  ASSERT_TRUE(RunUntilFrames(client_far_, 4));
  std::vector<Parsed> at_client = client_far_.frames();
  ASSERT_EQ(at_client.size(), 4u);
  EXPECT_EQ(at_client[0].payload, "part1");
  EXPECT_EQ(at_client[1].opcode, ws::kPing);
  EXPECT_EQ(at_client[2].payload, "part2");
  EXPECT_TRUE(at_client[2].fin);
  EXPECT_EQ(at_client[3].opcode, ws::kText);
  EXPECT_EQ(at_client[3].payload, "pushed");
}

TEST_P(TunnelTest, PushOverTheWatermarkIs429) {
  Start({}, /*small_buffers=*/true);
  client_far_.reading = false;
  EvBufferPtr large = Payload(Pattern(1024 * 1024));
  EXPECT_EQ(tunnel_->Push(large.get(), false), 200);
  EvBufferPtr more = Payload("more");
  EXPECT_EQ(tunnel_->Push(more.get(), true), 429);
  client_far_.reading = true;
  ASSERT_TRUE(RunUntilFrames(client_far_, 1));
  EXPECT_EQ(client_far_.last().payload, Pattern(1024 * 1024));
  ASSERT_TRUE(RunUntil([&] { return client_.output_length() == 0; }));
  EXPECT_EQ(tunnel_->Push(more.get(), true), 200);
  ASSERT_TRUE(RunUntilFrames(client_far_, 2));
  EXPECT_EQ(client_far_.last().payload, "more");
  EXPECT_EQ(tunnel_->pushes().messages(), 2u);
}

TEST_P(TunnelTest, PushAndCloseAfterClosingAre410) {
  Start();
  client_far_.Send(CloseFromClient(ws::kNormal, "bye"));
  ASSERT_TRUE(RunUntil([&] { return backend_far_.got_close(); }));
  EvBufferPtr payload = Payload("late");
  EXPECT_EQ(tunnel_->Push(payload.get(), true), 410);
  EXPECT_EQ(tunnel_->CloseByApi(ws::kNormal, "api"), 410);
  backend_far_.Send(CloseFromBackend(ws::kNormal, ""));
  ASSERT_TRUE(RunUntilEnded());
  EXPECT_EQ(client_far_.frames().size(), 1u);  // only the backend's close
  ExpectDecision(ws::kNormal, ClosedBy::kClient, "bye");
}

TEST_P(TunnelTest, CloseByApiClosesBothSides) {
  Start();
  EXPECT_EQ(tunnel_->CloseByApi(4000, "kicked"), 200);
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close() && backend_far_.got_close(); }));
  ExpectClose(client_far_.last(), 4000, "kicked");
  ExpectClose(backend_far_.last(), 4000, "kicked");
  ExpectDecision(4000, ClosedBy::kApi, "kicked");
  FinishHandshake();
  EXPECT_EQ(ended_calls_, 1);
}

// ---------------------------------------------------------------------------------------------
// Timers.

TEST_P(TunnelTest, IdleTimeoutClosesBothSides1001) {
  config_.timeouts.idle = 100ms;
  Clock::time_point started = Clock::now();
  Start();
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close() && backend_far_.got_close(); }));
  // libevent times from its cached clock, so a timer may fire a little early.
  EXPECT_GE(Clock::now() - started, 80ms);
  ExpectClose(client_far_.last(), ws::kGoingAway, "idle timeout");
  ExpectClose(backend_far_.last(), ws::kGoingAway, "idle timeout");
  ExpectDecision(ws::kGoingAway, ClosedBy::kProxy, "idle timeout");
  FinishHandshake();
  EXPECT_EQ(ended_calls_, 1);
}

TEST_P(TunnelTest, CloseTimerEndsAHandshakeThePeerNeverAnswers) {
  config_.timeouts.close = 100ms;
  Start();
  Clock::time_point sent_at = Clock::now();
  client_far_.Send(CloseFromClient(ws::kNormal, "bye"));
  ASSERT_TRUE(RunUntilEnded());
  EXPECT_GE(ended_at_ - sent_at, 80ms);
  EXPECT_TRUE(backend_far_.got_close());
  ExpectDecision(ws::kNormal, ClosedBy::kClient, "bye");
  EXPECT_EQ(ended_calls_, 1);
}

TEST_P(TunnelTest, PingsTheClientAndClosesWithoutAnAnswer) {
  config_.timeouts.ping_interval = 50ms;
  config_.timeouts.ping_timeout = 100ms;
  Start();
  ASSERT_TRUE(RunUntilFrames(client_far_, 1));
  Parsed ping = client_far_.last();
  EXPECT_EQ(ping.opcode, ws::kPing);
  EXPECT_TRUE(ping.payload.empty());
  // Any data from the client keeps it alive; here the pong, which the backend sees too.
  client_far_.Send(FromClient(ws::kPong, ""));
  ASSERT_TRUE(RunUntilFrames(client_far_, 2));
  EXPECT_EQ(client_far_.last().opcode, ws::kPing);
  EXPECT_FALSE(client_far_.got_close());
  ASSERT_TRUE(RunUntilFrames(backend_far_, 1));
  EXPECT_EQ(backend_far_.last().opcode, ws::kPong);
  // No answer to the second ping.
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close() && backend_far_.got_close(); }));
  ExpectClose(client_far_.last(), ws::kGoingAway, "ping timeout");
  ExpectClose(backend_far_.last(), ws::kGoingAway, "client ping timeout");
  ExpectDecision(ws::kGoingAway, ClosedBy::kProxy, "no pong from the client within ping_timeout");
  FinishHandshake();
  EXPECT_EQ(ended_calls_, 1);
}

// ---------------------------------------------------------------------------------------------
// The message-rate limit.

TEST_P(TunnelTest, RateOverTheLimitCloses1008) {
  config_.limits.max_messages_per_second = 5;
  Start();
  std::string burst;
  for (int i = 0; i < 10; ++i) burst += FromClient(ws::kText, "m" + std::to_string(i));
  client_far_.Send(burst);
  ASSERT_TRUE(RunUntil([&] { return client_far_.got_close() && backend_far_.got_close(); }));
  std::vector<Parsed> at_backend = backend_far_.frames();
  ASSERT_EQ(at_backend.size(), 6u);  // the one-second burst, then the close
  for (int i = 0; i < 5; ++i) EXPECT_EQ(at_backend[i].payload, "m" + std::to_string(i));
  ExpectClose(at_backend[5], ws::kGoingAway, "client protocol error");
  ExpectClose(client_far_.last(), ws::kPolicyViolation, "message rate exceeded");
  ExpectDecision(ws::kPolicyViolation, ClosedBy::kProxy, "client message rate exceeded");
  FinishHandshake();
  EXPECT_EQ(ended_calls_, 1);
}

TEST_P(TunnelTest, RateOverTheLimitThrottlesWithoutDropping) {
  config_.limits.max_messages_per_second = 100;
  config_.limits.rate_action = config::LimitsConfig::RateAction::kThrottle;
  Start();
  std::string burst;
  for (int i = 0; i < 110; ++i) burst += FromClient(ws::kText, "m" + std::to_string(i));
  Clock::time_point sent_at = Clock::now();
  client_far_.Send(burst);
  ASSERT_TRUE(RunUntilFrames(backend_far_, 100));
  ASSERT_TRUE(RunUntilFrames(backend_far_, 110));
  // Ten messages over a burst of 100 at 100 a second wait about 100 ms.
  EXPECT_GE(Clock::now() - sent_at, 80ms);
  std::vector<Parsed> at_backend = backend_far_.frames();
  ASSERT_EQ(at_backend.size(), 110u);
  for (int i = 0; i < 110; ++i) EXPECT_EQ(at_backend[i].payload, "m" + std::to_string(i));
  EXPECT_FALSE(tunnel_->closing());
  EXPECT_FALSE(client_far_.got_close());
  EXPECT_EQ(tunnel_->messages_from_client(), 110u);
}

INSTANTIATE_TEST_SUITE_P(Endpoints, TunnelTest,
                         ::testing::Values(Kinds{Kind::kDirect, Kind::kDirect},
                                           Kinds{Kind::kDirect, Kind::kBufferevent},
                                           Kinds{Kind::kBufferevent, Kind::kBufferevent}),
                         KindsName);

}  // namespace
}  // namespace wsgate::tunnel_testing
