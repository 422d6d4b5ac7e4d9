// Test helpers shared by the tests that run real sockets and frames: loopback TCP pairs (splice(2)
// needs TCP, not a socketpair) and permessage-deflate payloads.
#pragma once

#include <arpa/inet.h>
#include <event2/util.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <string>
#include <string_view>

namespace wsgate::testing {

// Small kernel buffers, without autotuning. Set before connecting: shrinking the receive
// buffer of a live connection stalls TCP in zero-window probes.
inline void SetSmallBuffers(int fd) {
  int size = 16 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
}

// A connected, non-blocking loopback TCP pair: [0] is the end under test, [1] the test's peer.
inline void TcpPair(int fds[2], bool small_buffers = false) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  if (small_buffers) SetSmallBuffers(listener);  // the accepted socket inherits them
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  fds[1] = socket(AF_INET, SOCK_STREAM, 0);
  if (small_buffers) SetSmallBuffers(fds[1]);
  ASSERT_EQ(connect(fds[1], reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  fds[0] = accept(listener, nullptr, nullptr);
  ASSERT_GE(fds[0], 0);
  close(listener);
  evutil_make_socket_nonblocking(fds[0]);
  evutil_make_socket_nonblocking(fds[1]);
}

// permessage-deflate payload of one message (raw DEFLATE, sync flush, tail removed).
inline std::string Deflate(std::string_view text) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(text.size() + 1024, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = static_cast<uInt>(text.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_SYNC_FLUSH), Z_OK);
  out.resize(out.size() - z.avail_out - 4);
  deflateEnd(&z);
  return out;
}

}  // namespace wsgate::testing
