#include "proxy/upstream.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "config/validate.h"

namespace wsgate {

bool ResolveAddress(const config::HostPort& address, sockaddr_storage* out, socklen_t* out_len,
                    std::string* error) {
  Result<config::ResolvedAddress> resolved = config::ResolveHostPort(address);
  if (!resolved) {
    *error = std::move(resolved).error();
    return false;
  }
  *out = resolved->addr;
  *out_len = resolved->len;
  return true;
}

BufferEventPtr StartConnect(event_base* base, const Backend& backend,
                            const tls::ClientContext* tls) {
  BufferEventPtr bev;
  if (tls != nullptr) {
    bev = tls->Connect(base, backend.address);
  } else {
    // Made non-blocking here, which spares libevent's fcntl calls on every connect.
    evutil_socket_t fd =
        socket(backend.sockaddr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return bev;
    bev.reset(bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS));
    if (!bev) {
      evutil_closesocket(fd);
      return bev;
    }
  }
  if (!bev) return bev;
  if (bufferevent_socket_connect(bev.get(), reinterpret_cast<const sockaddr*>(&backend.sockaddr),
                                 static_cast<int>(backend.sockaddr_len)) != 0) {
    // The failure is reported through the (deferred) event callback as well in libevent 2.1
    // for most errors; a null return makes the caller treat it as an immediate failure.
    return nullptr;
  }
  SetNoDelay(bufferevent_getfd(bev.get()));
  return bev;
}

evutil_socket_t StartConnectSocket(const Backend& backend) {
  evutil_socket_t fd =
      socket(backend.sockaddr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&backend.sockaddr), backend.sockaddr_len) !=
          0 &&
      errno != EINPROGRESS) {
    int error = errno;
    evutil_closesocket(fd);
    errno = error;
    return -1;
  }
  SetNoDelay(fd);
  return fd;
}

void SetNoDelay(evutil_socket_t fd) {
  if (fd < 0) return;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

std::string FormatIp(const sockaddr* addr) {
  char host[INET6_ADDRSTRLEN] = {0};
  if (addr->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
  } else if (addr->sa_family == AF_INET) {
    const auto* in4 = reinterpret_cast<const sockaddr_in*>(addr);
    inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
  } else {
    return "unknown";
  }
  return host;
}

std::string FormatSockaddr(const sockaddr* addr) {
  if (addr->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    return "[" + FormatIp(addr) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  if (addr->sa_family == AF_INET) {
    const auto* in4 = reinterpret_cast<const sockaddr_in*>(addr);
    return FormatIp(addr) + ":" + std::to_string(ntohs(in4->sin_port));
  }
  return "unknown";
}

}  // namespace wsgate
