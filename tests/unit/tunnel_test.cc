// Tunnel over real loopback TCP: the test owns the far end of the client's and the backend's
// connections and speaks raw WebSocket frames on them, while the Tunnel drives the proxy-side
// ends as a Session would (a plain client moves from its bufferevent to a DirectSocket; a
// backend is a DirectSocket from connect() or, like TLS, stays on a bufferevent). Each case
// checks the bytes at both far ends, the CloseDecision, the counters and that the owner heard
// OnTunnelEnded exactly once. Loopback TCP rather than socketpairs: splice(2) of large frames
// runs as in production.
#include "proxy/tunnel.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>
#include <csignal>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/core/libevent_ptr.h"
#include "proxy/ws/frame.h"
#include "tests/unit/loopback_util.h"

namespace wsgate {
using wsgate::testing::Deflate;
using wsgate::testing::TcpPair;

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Writes to a closed peer must fail with EPIPE, as in wsgate (which ignores SIGPIPE too).
const bool kSigpipeIgnored = [] { return signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();

constexpr uint8_t kMaskKey[4] = {0x11, 0x22, 0x33, 0x44};

// One frame as written on the wire; |masked| as a client must, unmasked as a backend must.
std::string Encode(uint8_t opcode, std::string_view payload, bool masked, bool fin = true) {
  std::string out;
  out.push_back(static_cast<char>((fin ? 0x80 : 0) | opcode));
  uint64_t n = payload.size();
  int length_bytes = n < 126 ? 0 : n <= 0xFFFF ? 2 : 8;
  uint8_t mask_bit = masked ? 0x80 : 0;
  out.push_back(static_cast<char>(mask_bit | (length_bytes == 0   ? n
                                              : length_bytes == 2 ? 126
                                                                  : 127)));
  for (int i = length_bytes - 1; i >= 0; --i) out.push_back(static_cast<char>(n >> (8 * i)));
  if (!masked) return out.append(payload);
  out.append(reinterpret_cast<const char*>(kMaskKey), 4);
  for (size_t i = 0; i < payload.size(); ++i) {
    out.push_back(static_cast<char>(payload[i] ^ kMaskKey[i % 4]));
  }
  return out;
}
std::string FromClient(uint8_t opcode, std::string_view payload, bool fin = true) {
  return Encode(opcode, payload, true, fin);
}
std::string FromBackend(uint8_t opcode, std::string_view payload, bool fin = true) {
  return Encode(opcode, payload, false, fin);
}
std::string CloseFromClient(uint16_t code, std::string_view reason) {
  return ws::BuildCloseFrame(code, reason, kMaskKey);
}
std::string CloseFromBackend(uint16_t code, std::string_view reason) {
  return ws::BuildCloseFrame(code, reason, nullptr);
}

// Content that changes every byte, so reordering or loss shows.
std::string Pattern(size_t size, size_t seed = 0) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    out[i] = static_cast<char>(((i + seed) * 131 + (i + seed) / 4096) & 0xFF);
  }
  return out;
}

struct Parsed {
  uint8_t opcode = 0;
  bool fin = false;
  bool masked = false;
  std::string payload;  // unmasked
  uint16_t close_code() const {
    return payload.size() >= 2 ? static_cast<uint16_t>(static_cast<uint8_t>(payload[0]) << 8 |
                                                       static_cast<uint8_t>(payload[1]))
                               : 0;
  }
  std::string close_reason() const { return payload.size() > 2 ? payload.substr(2) : ""; }
};

// The whole frames at the start of |bytes|; |rest| gets how many bytes follow them.
std::vector<Parsed> ParseFrames(const std::string& bytes, size_t* rest = nullptr) {
  std::vector<Parsed> frames;
  size_t at = 0;
  while (at < bytes.size()) {
    ws::FrameHeader header;
    auto data = reinterpret_cast<const uint8_t*>(bytes.data()) + at;
    if (ws::ParseFrameHeader(data, bytes.size() - at, &header) != ws::HeaderStatus::kComplete ||
        bytes.size() - at - header.header_length < header.payload_length) {
      break;
    }
    Parsed frame;
    frame.opcode = header.opcode;
    frame.fin = header.fin;
    frame.masked = header.masked;
    frame.payload = bytes.substr(at + header.header_length, header.payload_length);
    if (header.masked) {
      for (size_t i = 0; i < frame.payload.size(); ++i) {
        frame.payload[i] = static_cast<char>(frame.payload[i] ^ header.mask[i % 4]);
      }
    }
    frames.push_back(std::move(frame));
    at += header.header_length + header.payload_length;
  }
  if (rest != nullptr) *rest = bytes.size() - at;
  return frames;
}

// The test's end of a connection: what it sends waits in |outbox| until the kernel takes it;
// what arrives accumulates in |received| (unless |reading| is off).
struct FarEnd {
  int fd = -1;
  std::string outbox;
  std::string received;
  size_t sent = 0;  // bytes the kernel took
  bool reading = true;
  bool eof = false;    // the proxy's side closed (FIN or reset)
  bool reset = false;  // ...with a reset

  void Send(const std::string& bytes) {
    outbox += bytes;
    Flush();
  }
  void Flush() {
    while (fd >= 0 && !outbox.empty()) {
      ssize_t n = send(fd, outbox.data(), outbox.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n <= 0) return;
      outbox.erase(0, static_cast<size_t>(n));
      sent += static_cast<size_t>(n);
    }
  }
  void Read() {
    if (fd < 0 || !reading || eof) return;
    char buffer[65536];
    while (true) {
      ssize_t n = recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n > 0) {
        received.append(buffer, static_cast<size_t>(n));
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        eof = true;
        reset = n < 0;
      }
      return;
    }
  }
  void ShutdownWrite() { shutdown(fd, SHUT_WR); }
  void Close() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
  std::vector<Parsed> frames() const { return ParseFrames(received); }
  bool got_close() const {
    for (const Parsed& frame : frames()) {
      if (frame.opcode == ws::kClose) return true;
    }
    return false;
  }
  Parsed last() const {
    std::vector<Parsed> all = frames();
    return all.empty() ? Parsed{} : all.back();
  }
};

enum class Kind { kDirect, kBufferevent };
struct Kinds {
  Kind client;
  Kind backend;
};
std::string KindsName(const ::testing::TestParamInfo<Kinds>& info) {
  auto name = [](Kind kind) { return kind == Kind::kDirect ? "Direct" : "Bufferevent"; };
  return std::string("Client") + name(info.param.client) + "Backend" + name(info.param.backend);
}

class TunnelTest : public ::testing::TestWithParam<Kinds>, public TunnelOwner {
 protected:
  void SetUp() override {
    base_.reset(event_base_new());
    ASSERT_TRUE(base_);
    // Bounds each pass of the loop, so RunUntil sees the far ends change without a sleep.
    tick_.reset(event_new(
        base_.get(), -1, EV_PERSIST, [](evutil_socket_t, short, void*) {}, nullptr));
    timeval one_ms{0, 1000};
    event_add(tick_.get(), &one_ms);
    verdict_.kind = http::UpstreamVerdict::kUpgraded;
    config_.timeouts.close = 5s;
  }
  void TearDown() override {
    EXPECT_LE(ended_calls_, 1);
    if (tunnel_) tunnel_->Stop();
    tunnel_.reset();
    client_.Close();
    backend_.Close();
    client_far_.Close();
    backend_far_.Close();
  }

  // TunnelOwner, as Session::Finish does it.
  void OnTunnelEnded() override {
    ++ended_calls_;
    ended_at_ = Clock::now();
    tunnel_->Stop();
    client_.Close();
    backend_.Close();
  }
  std::string ClientText() const override { return "127.0.0.1:40000"; }

  // |shrink|: small kernel buffers (no autotuning), so backpressure shows early.
  void MakeEndpoint(Endpoint& endpoint, FarEnd& far, Kind kind, bool backend, bool shrink) {
    int fds[2] = {-1, -1};
    TcpPair(fds, shrink);
    far.fd = fds[1];
    endpoint.bev.reset(bufferevent_socket_new(base_.get(), fds[0],
                                              BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS));
    ASSERT_TRUE(endpoint.bev);
    endpoint.plain_tcp = kind == Kind::kDirect;
    // A plain backend connection is a DirectSocket from connect() on; a plain client moves to
    // one in Tunnel::Start.
    if (backend && kind == Kind::kDirect) {
      ASSERT_TRUE(endpoint.direct.TakeOver(endpoint.bev, nullptr, nullptr));
    }
  }

  void Start(PushQueue pushes = {}, bool small_buffers = false) {
    Kinds setup = GetParam();
    MakeEndpoint(client_, client_far_, setup.client, false, small_buffers);
    MakeEndpoint(backend_, backend_far_, setup.backend, true, small_buffers);
    tunnel_ = std::make_unique<Tunnel>(*this, base_.get(), config_, client_, backend_, verdict_);
    tunnel_->Start(nullptr, std::move(pushes));
  }

  // Run the loop until |done| holds (checked after reading both far ends), at most |limit|.
  bool RunUntil(const std::function<bool()>& done, Clock::duration limit = 10s) {
    Clock::time_point deadline = Clock::now() + limit;
    while (true) {
      for (FarEnd* far : {&client_far_, &backend_far_}) {
        far->Flush();
        far->Read();
      }
      if (done()) return true;
      if (Clock::now() > deadline) return false;
      event_base_loop(base_.get(), EVLOOP_ONCE);
    }
  }
  bool RunUntilFrames(FarEnd& far, size_t count) {
    return RunUntil([&] { return far.frames().size() >= count; });
  }
  bool RunUntilEnded() {
    return RunUntil([&] { return ended_calls_ > 0; });
  }

  // The backend's far end has more to send, and the tunnel has stopped reading from it: bytes
  // wait unread at the proxy's backend socket, and loop passes change nothing.
  bool RunUntilBackendHeldBack() {
    int proxy_backend_fd = backend_.fd();
    return RunUntil([&] {
      int unread = 0;
      ioctl(proxy_backend_fd, FIONREAD, &unread);
      if (unread == 0 || backend_far_.outbox.empty()) return false;
      size_t sent_before = backend_far_.sent;
      for (int i = 0; i < 3; ++i) event_base_loop(base_.get(), EVLOOP_NONBLOCK);
      backend_far_.Flush();
      int unread_after = 0;
      ioctl(proxy_backend_fd, FIONREAD, &unread_after);
      return backend_far_.sent == sent_before && unread_after == unread;
    });
  }

  // Both far ends answer the close frame they got, then the tunnel must end.
  void FinishHandshake() {
    ASSERT_TRUE(RunUntil([&] { return client_far_.got_close() && backend_far_.got_close(); }));
    Parsed to_client = client_far_.last();
    Parsed to_backend = backend_far_.last();
    if (!client_far_.eof) client_far_.Send(CloseFromClient(to_client.close_code(), ""));
    if (!backend_far_.eof) backend_far_.Send(CloseFromBackend(to_backend.close_code(), ""));
    ASSERT_TRUE(RunUntil([&] {
      // A peer closes once it sees the proxy's FIN (a lingering close waits for that).
      for (FarEnd* far : {&client_far_, &backend_far_}) {
        if (far->eof) far->Close();
      }
      return ended_calls_ > 0 && client_far_.eof && backend_far_.eof;
    }));
    EXPECT_FALSE(tunnel_->close().by == ClosedBy::kTimeout);
  }

  void ExpectDecision(uint16_t code, ClosedBy by, const std::string& reason) {
    ASSERT_TRUE(tunnel_);
    EXPECT_EQ(tunnel_->close().code, code);
    EXPECT_EQ(tunnel_->close().by, by);
    EXPECT_EQ(tunnel_->close().reason, reason);
  }
  void ExpectClose(const Parsed& frame, uint16_t code, const std::string& reason) {
    EXPECT_EQ(frame.opcode, ws::kClose);
    EXPECT_EQ(frame.close_code(), code);
    EXPECT_EQ(frame.close_reason(), reason);
  }

  EventBasePtr base_;
  EventPtr tick_;
  config::ProxyConfig config_;
  http::UpstreamVerdict verdict_;
  Endpoint client_;
  Endpoint backend_;
  FarEnd client_far_;
  FarEnd backend_far_;
  std::unique_ptr<Tunnel> tunnel_;
  int ended_calls_ = 0;
  Clock::time_point ended_at_;
};

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
}  // namespace wsgate
