// DirectSocket over a real socketpair: large reads, immediate writes, EOF held back while reading
// is paused, and write errors reported from the event callback rather than from Flush(). And
// over loopback TCP: a connecting socket (StartConnectSocket + AdoptConnecting) with the first
// write sent at once, refusals, reconnecting.
#include "proxy/direct_socket.h"
#include "proxy/core/libevent_memory.h"
#include "proxy/upstream.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace wsgate {
namespace {

struct Recorder {
  DirectSocket socket;
  int reads = 0;
  int writes = 0;
  short last_event = 0;
  bool pause_on_read = false;
  bool close_on_event = false;
};

void OnRead(void* ctx) {
  auto* r = static_cast<Recorder*>(ctx);
  ++r->reads;
  if (r->pause_on_read) r->socket.SetReading(false);
}
void OnWrite(void* ctx) { ++static_cast<Recorder*>(ctx)->writes; }
void OnEvent(void* ctx, short what) {
  auto* r = static_cast<Recorder*>(ctx);
  r->last_event = what;
  if (r->close_on_event) r->socket.Close();
}
constexpr DirectSocket::Callbacks kCallbacks{&OnRead, &OnWrite, &OnEvent};

// A write to a closed peer must fail with EPIPE, as in wsgate (which ignores SIGPIPE too).
const bool kSigpipeIgnored = [] { return signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();

class DirectSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_.reset(event_base_new());
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds_), 0);
    evutil_make_socket_nonblocking(fds_[0]);
    BufferEventPtr bev(bufferevent_socket_new(base_.get(), fds_[0], BEV_OPT_CLOSE_ON_FREE));
    // Bytes already buffered by the bufferevent move over with the socket.
    evbuffer* early = bufferevent_get_input(bev.get());
    evbuffer_unfreeze(early, 0);  // as if the bufferevent had read them
    evbuffer_add(early, "early", 5);
    evbuffer_freeze(early, 0);
    bufferevent_write(bev.get(), "queued", 6);
    ASSERT_TRUE(recorder_.socket.TakeOver(bev, &kCallbacks, &recorder_));
    EXPECT_EQ(bev, nullptr);
  }
  void TearDown() override {
    recorder_.socket.Close();
    if (fds_[1] >= 0) close(fds_[1]);
  }
  void RunOnce() { event_base_loop(base_.get(), EVLOOP_NONBLOCK); }
  std::string ReadPeer() {
    std::string out;
    char buffer[65536];
    ssize_t n;
    while ((n = recv(fds_[1], buffer, sizeof(buffer), MSG_DONTWAIT)) > 0) out.append(buffer, n);
    return out;
  }

  EventBasePtr base_;
  int fds_[2] = {-1, -1};
  Recorder recorder_;
};

TEST_F(DirectSocketTest, KeepsBufferedBytesAndWritesAtOnce) {
  EXPECT_EQ(evbuffer_get_length(recorder_.socket.input()), 5u);
  recorder_.socket.Flush();
  EXPECT_EQ(ReadPeer(), "queued");  // written by Flush itself, no loop pass needed
  evbuffer_add(recorder_.socket.output(), "more", 4);
  recorder_.socket.Flush();
  EXPECT_EQ(ReadPeer(), "more");
}

TEST_F(DirectSocketTest, ReadsLargeBurstsInOneEvent) {
  std::string big(120 * 1024, 'x');  // more than one 64 KiB read
  ASSERT_EQ(send(fds_[1], big.data(), big.size(), 0), static_cast<ssize_t>(big.size()));
  recorder_.socket.SetReading(true);
  RunOnce();
  // All in one event; on_read also fires after the first (16 KiB) read, so the session can
  // start splicing a large frame before the rest of it is read.
  EXPECT_EQ(recorder_.reads, 2);
  EXPECT_EQ(evbuffer_get_length(recorder_.socket.input()), 5u + big.size());
}

TEST_F(DirectSocketTest, ReadLimitStopsReading) {
  std::string big(100 * 1024, 'x');
  ASSERT_EQ(send(fds_[1], big.data(), big.size(), 0), static_cast<ssize_t>(big.size()));
  recorder_.socket.SetReadLimit(8 * 1024);
  recorder_.socket.SetReading(true);
  RunOnce();
  EXPECT_EQ(evbuffer_get_length(recorder_.socket.input()), 8u * 1024);
  RunOnce();  // at the limit the fd is no longer polled (this would spin otherwise)
  EXPECT_EQ(recorder_.reads, 1);
  // Draining below the limit and saying so resumes reading.
  evbuffer_drain(recorder_.socket.input(), 8 * 1024);
  RunOnce();
  EXPECT_EQ(recorder_.reads, 1);
  recorder_.socket.InputConsumed();
  RunOnce();
  EXPECT_EQ(recorder_.reads, 2);
  EXPECT_EQ(evbuffer_get_length(recorder_.socket.input()), 8u * 1024);
}

TEST_F(DirectSocketTest, EndOfStreamWaitsWhileReadingIsPaused) {
  ASSERT_EQ(send(fds_[1], "data", 4, 0), 4);
  shutdown(fds_[1], SHUT_WR);
  recorder_.pause_on_read = true;
  recorder_.socket.SetReading(true);
  RunOnce();
  EXPECT_EQ(recorder_.reads, 1);
  EXPECT_EQ(recorder_.last_event, 0);  // not reported while the session holds reading paused
  recorder_.pause_on_read = false;
  recorder_.socket.SetReading(true);
  RunOnce();
  EXPECT_EQ(recorder_.last_event, BEV_EVENT_READING | BEV_EVENT_EOF);
}

TEST_F(DirectSocketTest, WriteErrorIsReportedFromTheEventCallback) {
  recorder_.socket.Flush();
  close(fds_[1]);
  fds_[1] = -1;
  std::string big(64 * 1024, 'y');
  evbuffer_add(recorder_.socket.output(), big.data(), big.size());
  recorder_.close_on_event = true;
  ASSERT_TRUE(kSigpipeIgnored);
  recorder_.socket.Flush();  // fails with EPIPE but does not call back
  EXPECT_EQ(recorder_.last_event, 0);
  for (int i = 0; i < 3 && recorder_.socket.open(); ++i) RunOnce();
  EXPECT_EQ(recorder_.last_event, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
  EXPECT_FALSE(recorder_.socket.open());
}

TEST_F(DirectSocketTest, ShortWriteArmsWritableAndReportsDrain) {
  int small = 4096;
  setsockopt(fds_[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  recorder_.socket.WatchWritable(0);
  std::string big(1024 * 1024, 'z');
  evbuffer_add(recorder_.socket.output(), big.data(), big.size());
  recorder_.socket.Flush();
  ASSERT_GT(evbuffer_get_length(recorder_.socket.output()), 0u);
  std::string received;
  for (int i = 0; i < 10000 && received.size() < big.size() + 6; ++i) {
    received += ReadPeer();
    RunOnce();
  }
  EXPECT_EQ(received.size(), big.size() + 6);  // "queued" + the megabyte, in order
  EXPECT_EQ(received.substr(0, 6), "queued");
  EXPECT_EQ(evbuffer_get_length(recorder_.socket.output()), 0u);
  EXPECT_GE(recorder_.writes, 1);
}

TEST_F(DirectSocketTest, HoldsBuffersOnlyWhileBytesWait) {
  EXPECT_TRUE(recorder_.socket.holds_buffers());  // "early" and "queued" moved over
  recorder_.socket.Flush();
  EXPECT_EQ(ReadPeer(), "queued");
  evbuffer_drain(recorder_.socket.input(), 5);
  recorder_.socket.InputConsumed();
  EXPECT_FALSE(recorder_.socket.holds_buffers());  // an idle connection costs no evbuffer
  ASSERT_EQ(send(fds_[1], "ping", 4, 0), 4);
  recorder_.socket.SetReading(true);
  RunOnce();
  ASSERT_EQ(recorder_.reads, 1);
  EXPECT_EQ(recorder_.socket.input_length(), 4u);
  evbuffer_remove_buffer(recorder_.socket.input(), recorder_.socket.output(), 4);
  recorder_.socket.InputConsumed();
  recorder_.socket.Flush();
  EXPECT_EQ(ReadPeer(), "ping");
  EXPECT_FALSE(recorder_.socket.holds_buffers());
  // A short write keeps the output until EV_WRITE has drained it.
  int small = 4096;
  setsockopt(fds_[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  std::string big(256 * 1024, 'b');
  evbuffer_add(recorder_.socket.output(), big.data(), big.size());
  recorder_.socket.Flush();
  EXPECT_TRUE(recorder_.socket.holds_buffers());
  std::string received;
  for (int i = 0; i < 10000 && received.size() < big.size(); ++i) {
    received += ReadPeer();
    RunOnce();
  }
  EXPECT_EQ(received, big);
  EXPECT_FALSE(recorder_.socket.holds_buffers());
}

TEST(LibeventAllocatorTest, ReusesChainBlocks) {
  InstallLibeventAllocator();
  EvBufferPtr buffer(evbuffer_new());
  evbuffer_iovec first;
  ASSERT_EQ(evbuffer_reserve_space(buffer.get(), 16000, &first, 1), 1);
  first.iov_len = 100;
  ASSERT_EQ(evbuffer_commit_space(buffer.get(), &first, 1), 0);
  evbuffer_drain(buffer.get(), 100);  // frees the 16 KiB chain
  evbuffer_iovec second;
  ASSERT_EQ(evbuffer_reserve_space(buffer.get(), 16000, &second, 1), 1);
  if (LibeventBlockCacheEnabled()) {
    EXPECT_EQ(second.iov_base, first.iov_base);
  }
  second.iov_len = 16000;
  std::memset(second.iov_base, 'q', 16000);  // the reused block is whole and writable
  ASSERT_EQ(evbuffer_commit_space(buffer.get(), &second, 1), 0);
  EXPECT_EQ(evbuffer_get_length(buffer.get()), 16000u);
}
}  // namespace
}  // namespace wsgate

// Review finding (memory): a read that exactly fills the first 16 KiB reservation calls on_read
// (the session drains the input and InputConsumed() hands the buffer back), then reserves a 64 KiB
// chain for the next read; when that read finds nothing (EAGAIN) the reservation is committed
// empty and no on_read follows, so the idle socket keeps an evbuffer holding an empty 64 KiB chain.
namespace wsgate {
namespace {

struct Consumer {
  DirectSocket socket;
  int reads = 0;
};
void ConsumeAll(void* ctx) {
  auto* c = static_cast<Consumer*>(ctx);
  ++c->reads;
  evbuffer_drain(c->socket.input(), c->socket.input_length());  // what Pump does
  c->socket.InputConsumed();
}
void Ignore(void*) {}
void IgnoreEvent(void*, short) {}
constexpr DirectSocket::Callbacks kConsumer{&ConsumeAll, &Ignore, &IgnoreEvent};

TEST(DirectSocketIdleTest, ExactFirstReadLeavesNoBufferBehind) {
  EventBasePtr base(event_base_new());
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  evutil_make_socket_nonblocking(fds[0]);
  BufferEventPtr bev(bufferevent_socket_new(base.get(), fds[0], BEV_OPT_CLOSE_ON_FREE));
  Consumer consumer;
  ASSERT_TRUE(consumer.socket.TakeOver(bev, &kConsumer, &consumer));
  consumer.socket.SetReading(true);
  std::string message(16 * 1024 - 128, 'm');  // kFirstRead bytes
  ASSERT_EQ(send(fds[1], message.data(), message.size(), 0), static_cast<ssize_t>(message.size()));
  event_base_loop(base.get(), EVLOOP_NONBLOCK);
  EXPECT_EQ(consumer.reads, 1);
  EXPECT_EQ(consumer.socket.input_length(), 0u);
  EXPECT_FALSE(consumer.socket.holds_buffers()) << "idle socket still holds an input evbuffer";
  consumer.socket.Close();
  close(fds[1]);
}

// Backend connections start on a DirectSocket, and the first bytes go out at once.
class DirectSocketConnectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_.reset(event_base_new());
    listener_ = ListenOnLoopback(&address_);
    ASSERT_GE(listener_, 0);
    fcntl(listener_, F_SETFL, O_NONBLOCK);
  }
  void TearDown() override {
    if (listener_ >= 0) close(listener_);
  }
  static int ListenOnLoopback(sockaddr_in* address) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    *address = sockaddr_in{};
    address->sin_family = AF_INET;
    address->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(*address);
    if (bind(fd, reinterpret_cast<sockaddr*>(address), length) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(address), &length) != 0) {
      close(fd);
      return -1;
    }
    return fd;
  }
  // A loopback port nobody listens on: bound, then closed.
  static sockaddr_in RefusingAddress() {
    sockaddr_in address{};
    int fd = ListenOnLoopback(&address);
    close(fd);
    return address;
  }
  std::string Receive(int fd, size_t want) {
    std::string out;
    char buffer[4096];
    for (int i = 0; i < 200 && out.size() < want; ++i) {
      event_base_loop(base_.get(), EVLOOP_NONBLOCK);
      ssize_t n = recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
      if (n > 0) out.append(buffer, static_cast<size_t>(n));
      if (n <= 0) usleep(5000);
    }
    return out;
  }
  // Accepts while running the loop: a retry is only made from an event callback.
  int Accept() {
    for (int i = 0; i < 200; ++i) {
      int fd = accept4(listener_, nullptr, nullptr, SOCK_NONBLOCK);
      if (fd >= 0) return fd;
      event_base_loop(base_.get(), EVLOOP_NONBLOCK);
      usleep(5000);
    }
    return -1;
  }
  const sockaddr* address() const { return reinterpret_cast<const sockaddr*>(&address_); }

  EventBasePtr base_;
  int listener_ = -1;
  sockaddr_in address_{};
};

// What the session does: the connect from upstream, the socket driven by a DirectSocket.
bool ConnectTo(DirectSocket& socket, event_base* base, const sockaddr* to,
               const DirectSocket::Callbacks* callbacks, void* ctx) {
  Backend backend;
  std::memcpy(&backend.sockaddr, to, sizeof(sockaddr_in));
  backend.sockaddr_len = sizeof(sockaddr_in);
  evutil_socket_t fd = StartConnectSocket(backend);
  return fd >= 0 && socket.AdoptConnecting(base, fd, callbacks, ctx);
}

struct ConnectRecorder {
  DirectSocket socket;
  int connected = 0;
  int errors = 0;
  int reads = 0;
  const sockaddr* retry_to = nullptr;  // on error: reconnect there inside the callback
  event_base* socket_base = nullptr;
};
void ConnectRead(void* ctx) { ++static_cast<ConnectRecorder*>(ctx)->reads; }
void ConnectEvent(void* ctx, short what);
constexpr DirectSocket::Callbacks kConnectCallbacks{&ConnectRead, &Ignore, &ConnectEvent};
void ConnectEvent(void* ctx, short what) {
  auto* r = static_cast<ConnectRecorder*>(ctx);
  if ((what & BEV_EVENT_CONNECTED) != 0) ++r->connected;
  if ((what & BEV_EVENT_ERROR) == 0) return;
  ++r->errors;
  if (r->retry_to == nullptr) {
    r->socket.Close();
    return;
  }
  const sockaddr* to = r->retry_to;
  r->retry_to = nullptr;
  // What the session does on a failed attempt: the same object connects again, inside its own
  // callback, so DirectSocket must not go on with the old connection's event.
  ASSERT_TRUE(ConnectTo(r->socket, r->socket_base, to, &kConnectCallbacks, r));
  evbuffer_add(r->socket.output(), "retried", 7);
  r->socket.Flush();
}

TEST_F(DirectSocketConnectTest, FirstWriteGoesOutWithTheConnect) {
  ConnectRecorder r;
  r.socket_base = base_.get();
  ASSERT_TRUE(ConnectTo(r.socket, base_.get(), address(), &kConnectCallbacks, &r));
  EXPECT_TRUE(r.socket.connecting());
  int one = 0;
  socklen_t length = sizeof(one);
  ASSERT_EQ(getsockopt(r.socket.fd(), IPPROTO_TCP, TCP_NODELAY, &one, &length), 0);
  EXPECT_EQ(one, 1);
  evbuffer_add(r.socket.output(), "GET / HTTP/1.1\r\n\r\n", 18);
  r.socket.Flush();
  // On loopback the TCP handshake completes inside connect(), so the write needs no EPOLLOUT;
  // elsewhere it waits and BEV_EVENT_CONNECTED reports it. Either way: connected exactly once.
  bool at_once = !r.socket.connecting();
  int accepted = Accept();
  ASSERT_GE(accepted, 0);
  EXPECT_EQ(Receive(accepted, 18), "GET / HTTP/1.1\r\n\r\n");
  EXPECT_FALSE(r.socket.connecting());
  EXPECT_EQ(r.connected, at_once ? 0 : 1);
  EXPECT_EQ(r.errors, 0);
  // And it reads like any direct socket.
  r.socket.SetReading(true);
  ASSERT_EQ(send(accepted, "HTTP/1.1 101", 12, 0), 12);
  for (int i = 0; i < 100 && r.reads == 0; ++i) {
    event_base_loop(base_.get(), EVLOOP_NONBLOCK);
    usleep(2000);
  }
  EXPECT_EQ(r.reads, 1);
  EXPECT_EQ(r.socket.input_length(), 12u);
  close(accepted);
  r.socket.Close();
}

TEST_F(DirectSocketConnectTest, RefusedConnectIsAnErrorAndReconnectingInsideTheCallbackWorks) {
  sockaddr_in refusing = RefusingAddress();
  ConnectRecorder r;
  r.socket_base = base_.get();
  r.retry_to = address();
  bool started = ConnectTo(r.socket, base_.get(), reinterpret_cast<const sockaddr*>(&refusing),
                           &kConnectCallbacks, &r);
  if (!started) {
    // Refused within connect() itself: the caller tries the next backend, as the session does.
    EXPECT_EQ(errno, ECONNREFUSED);
    ASSERT_TRUE(ConnectTo(r.socket, base_.get(), address(), &kConnectCallbacks, &r));
    evbuffer_add(r.socket.output(), "retried", 7);
    r.socket.Flush();
  } else {
    evbuffer_add(r.socket.output(), "first", 5);
    r.socket.Flush();  // never reports: the failure comes from the event callback
    EXPECT_EQ(r.errors, 0);
  }
  int accepted = Accept();
  ASSERT_GE(accepted, 0);
  EXPECT_EQ(Receive(accepted, 7), "retried");
  EXPECT_EQ(r.errors, started ? 1 : 0);
  EXPECT_EQ(r.connected, 0);  // the refused attempt never reported success
  EXPECT_TRUE(r.socket.open());
  close(accepted);
  r.socket.Close();
}

}  // namespace
}  // namespace wsgate
