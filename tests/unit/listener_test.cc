// Listener over real loopback sockets: accepted sockets arrive non-blocking and with TCP_NODELAY,
// which they inherit from the listening socket (no per-connection setsockopt or fcntl).
#include "proxy/listener.h"

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
  std::string bound = listener.BoundAddress();
  uint16_t port = static_cast<uint16_t>(std::stoi(bound.substr(bound.rfind(':') + 1)));
  int client = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 0);
  timeval limit{5, 0};
  event_base_loopexit(base.get(), &limit);
  event_base_dispatch(base.get());
  close(client);
  EXPECT_EQ(nodelay, 1);
  EXPECT_TRUE(nonblocking);
}

}  // namespace
}  // namespace wsgate
