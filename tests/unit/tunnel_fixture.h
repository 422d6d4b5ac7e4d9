// The Tunnel's test fixture over real loopback TCP (tunnel_test.cc, tunnel_move_test.cc): the
// test owns the far end of the client's and the backend's connections and speaks raw WebSocket
// frames on them, while the Tunnel drives the proxy-side ends as a Session would.
#pragma once

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
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>
#include "proxy/core/libevent_ptr.h"
#include "proxy/tunnel.h"
#include "proxy/ws/frame.h"
#include "tests/unit/loopback_util.h"

namespace wsgate::tunnel_testing {
using wsgate::testing::Deflate;
using wsgate::testing::TcpPair;

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Writes to a closed peer must fail with EPIPE, as in wsgate (which ignores SIGPIPE too).
inline const bool kSigpipeIgnored = [] { return signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();

inline constexpr uint8_t kMaskKey[4] = {0x11, 0x22, 0x33, 0x44};

// One frame as written on the wire; |masked| as a client must, unmasked as a backend must.
inline std::string Encode(uint8_t opcode, std::string_view payload, bool masked, bool fin = true) {
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
inline std::string FromClient(uint8_t opcode, std::string_view payload, bool fin = true) {
  return Encode(opcode, payload, true, fin);
}
inline std::string FromBackend(uint8_t opcode, std::string_view payload, bool fin = true) {
  return Encode(opcode, payload, false, fin);
}
inline std::string CloseFromClient(uint16_t code, std::string_view reason) {
  return ws::BuildCloseFrame(code, reason, kMaskKey);
}
inline std::string CloseFromBackend(uint16_t code, std::string_view reason) {
  return ws::BuildCloseFrame(code, reason, nullptr);
}

// Content that changes every byte, so reordering or loss shows.
inline std::string Pattern(size_t size, size_t seed = 0) {
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
inline std::vector<Parsed> ParseFrames(const std::string& bytes, size_t* rest = nullptr) {
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
inline std::string KindsName(const ::testing::TestParamInfo<Kinds>& info) {
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
    next_.Close();
    next_far_.Close();
  }

  // TunnelOwner, as Session::Finish does it.
  void OnTunnelEnded() override {
    ++ended_calls_;
    ended_at_ = Clock::now();
    tunnel_->Stop();
    client_.Close();
    backend_.Close();
    next_.Close();
  }
  std::string ClientText() const override { return "127.0.0.1:40000"; }
  // As Session does: a lost backend starts a move when the test allows it.
  void OnBackendReplaced(Clock::duration pause) override {
    ++replaced_calls_;
    last_pause_ = pause;
  }
  bool OnBackendLost() override { return move_when_lost_ && tunnel_->BeginMove(); }

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
      for (FarEnd* far : {&client_far_, &backend_far_, &next_far_}) {
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
  // Moving (tunnel_move_test.cc).
  Endpoint next_;  // the backend a session moves to
  FarEnd next_far_;
  bool move_when_lost_ = false;
  int replaced_calls_ = 0;
  Clock::duration last_pause_{};
};

}  // namespace wsgate::tunnel_testing
