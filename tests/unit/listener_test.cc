// Listener over real loopback sockets: accepted sockets arrive non-blocking and with TCP_NODELAY,
// which they inherit from the listening socket (no per-connection setsockopt or fcntl).
#include "proxy/listener.h"
#include "proxy/core/event_loop.h"

#include <event2/event.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <string>

namespace wsgate {
namespace {

uint16_t PortOf(const Listener& listener) {
  std::string bound = listener.BoundAddress();
  return static_cast<uint16_t>(std::stoi(bound.substr(bound.rfind(':') + 1)));
}

// A blocking TCP connection to 127.0.0.1:|port|, or -1.
int ConnectLoopback(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST(ListenerTest, AcceptedSocketsAreNonBlockingWithNoDelay) {
  EventBasePtr base(event_base_new());
  config::ListenerConfig config;
  config.name = "public";
  config.address = config::HostPort{"127.0.0.1", 0, "127.0.0.1:0"};
  int nodelay = -1;
  bool nonblocking = false;
  Listener listener(base.get(), config,
                    [&](evutil_socket_t fd, const sockaddr*, const std::string& name) {
                      EXPECT_EQ(name, "public");
                      socklen_t len = sizeof(nodelay);
                      getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len);
                      nonblocking = (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
                      close(fd);
                      event_base_loopbreak(base.get());
                    });
  std::string error;
  ASSERT_TRUE(listener.Bind(&error)) << error;
  uint16_t port = PortOf(listener);
  int client = ConnectLoopback(port);
  ASSERT_GE(client, 0);
  timeval limit{5, 0};
  event_base_loopexit(base.get(), &limit);
  event_base_dispatch(base.get());
  close(client);
  EXPECT_EQ(nodelay, 1);
  EXPECT_TRUE(nonblocking);
}

// A listening socket handed over to a new process (SCM_RIGHTS; dup() stands in here) stays open
// there, so closing it here does not take it out of this process's epoll set. With the epoll
// changelist the removal is applied only on the next loop pass; the Listener therefore closes
// its fd after that pass, or the old loop would wake for every connection queued for the new
// process, reported on whatever socket reuses the descriptor number.
struct Spurious {
  int reads = 0;
  event_base* base = nullptr;
};

TEST(ListenerTest, HandedOverListenerClosedUnderChangelistLeavesNoStaleWakeups) {
  EventLoop loop;
  config::ListenerConfig config;
  config.name = "public";
  config.address = config::HostPort{"127.0.0.1", 0, "127.0.0.1:0"};
  auto listener = std::make_unique<Listener>(
      loop.base(), config,
      [](evutil_socket_t fd, const sockaddr*, const std::string&) { close(fd); });
  std::string error;
  ASSERT_TRUE(listener->Bind(&error)) << error;
  uint16_t port = PortOf(*listener);
  int new_process_copy = dup(listener->fd());  // what SCM_RIGHTS gives the new process
  int listener_fd = listener->fd();
  event_base_loop(loop.base(), EVLOOP_NONBLOCK);  // registered with epoll
  listener.reset();                               // OnHandedOver: CloseListeners()
  event_base_loop(loop.base(), EVLOOP_NONBLOCK);  // the loop goes on (the old process drains)
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  ASSERT_EQ(pair[0], listener_fd);  // a later socket (say a backend connect) reuses the number
  Spurious spurious;
  spurious.base = loop.base();
  EventPtr ev(event_new(
      loop.base(), pair[0], EV_READ | EV_PERSIST,
      [](evutil_socket_t fd, short, void* ctx) {
        char c;
        if (recv(fd, &c, 1, MSG_DONTWAIT) < 0) ++static_cast<Spurious*>(ctx)->reads;
      },
      &spurious));
  event_add(ev.get(), nullptr);
  // A client connects; the new process has not accepted it yet.
  int client = ConnectLoopback(port);
  ASSERT_GE(client, 0);
  timeval limit{0, 100000};
  event_base_loopexit(loop.base(), &limit);
  event_base_dispatch(loop.base());
  close(client);
  close(pair[0]);
  close(pair[1]);
  close(new_process_copy);
  EXPECT_EQ(spurious.reads, 0) << "EV_READ reported with nothing to read, from the closed "
                                  "listener's stale epoll registration";
}

}  // namespace
}  // namespace wsgate
