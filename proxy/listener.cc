#include "proxy/listener.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "proxy/core/log.h"
#include "proxy/upstream.h"

namespace wsgate {

Listener::Listener(event_base* base, const config::ListenerConfig& config, AcceptFn on_accept)
    : base_(base), config_(config), on_accept_(std::move(on_accept)) {}

bool Listener::Bind(std::string* error) {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  if (!ResolveAddress(config_.address, &addr, &addr_len, error)) return false;
  listener_.reset(evconnlistener_new_bind(
      base_, &Listener::OnAccept, this, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 1024,
      reinterpret_cast<sockaddr*>(&addr), static_cast<int>(addr_len)));
  if (!listener_) {
    *error = "cannot listen on " + config_.address.text + ": " + std::strerror(errno);
    return false;
  }
  evconnlistener_set_error_cb(listener_.get(), &Listener::OnError);
  resume_timer_.reset(evtimer_new(base_, &Listener::OnResume, this));
  SetListenerNoDelay();
  return true;
}

bool Listener::Adopt(int fd, std::string* error) {
  evutil_make_socket_nonblocking(fd);
  // Backlog 0: the socket is already listening; keep its accept queue as it is.
  listener_.reset(
      evconnlistener_new(base_, &Listener::OnAccept, this, LEV_OPT_CLOSE_ON_EXEC, 0, fd));
  if (!listener_) {
    *error = "cannot adopt the listening socket of " + config_.name;
    return false;
  }
  evconnlistener_set_error_cb(listener_.get(), &Listener::OnError);
  resume_timer_.reset(evtimer_new(base_, &Listener::OnResume, this));
  SetListenerNoDelay();
  return true;
}

void Listener::SetListenerNoDelay() {
  int one = 1;
  nodelay_inherited_ = setsockopt(evconnlistener_get_fd(listener_.get()), IPPROTO_TCP, TCP_NODELAY,
                                  &one, sizeof(one)) == 0;
}

namespace {

// A timer-only event_base_once passes fd -1 to its callback, so the fd travels in |arg|.
void CloseLater(evutil_socket_t, short, void* arg) {
  evutil_closesocket(static_cast<evutil_socket_t>(reinterpret_cast<intptr_t>(arg)));
}

}  // namespace

// The fd is closed one loop pass after the listener is freed. A handed-over listening socket
// shares its open file with the new process, so closing it does not take it out of this
// process's epoll set; with the epoll changelist the removal is only applied on the next pass,
// and an fd already closed by then stays registered and wakes this loop for every connection
// the new process gets.
Listener::~Listener() {
  if (!listener_) return;
  evutil_socket_t fd = evconnlistener_get_fd(listener_.get());
  listener_.reset();
  timeval now{0, 0};
  if (fd >= 0 && event_base_once(base_, -1, EV_TIMEOUT, &CloseLater,
                                 reinterpret_cast<void*>(static_cast<intptr_t>(fd)), &now) != 0) {
    evutil_closesocket(fd);
  }
}

int Listener::fd() const { return evconnlistener_get_fd(listener_.get()); }

std::string Listener::BoundAddress() const {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (getsockname(evconnlistener_get_fd(listener_.get()), reinterpret_cast<sockaddr*>(&addr),
                  &len) != 0) {
    return config_.address.text;
  }
  return FormatSockaddr(reinterpret_cast<sockaddr*>(&addr));
}

void Listener::OnAccept(evconnlistener*, evutil_socket_t fd, sockaddr* addr, int, void* ctx) {
  auto* self = static_cast<Listener*>(ctx);
  // Already non-blocking: evconnlistener accepts with SOCK_NONBLOCK (no
  // LEV_OPT_LEAVE_SOCKETS_BLOCKING).
  if (!self->nodelay_inherited_) SetNoDelay(fd);
  self->on_accept_(fd, addr, self->config_.name);
}

void Listener::OnError(evconnlistener* listener, void* ctx) {
  auto* self = static_cast<Listener*>(ctx);
  int err = EVUTIL_SOCKET_ERROR();
  // Out of file descriptors: stop accepting for a moment instead of spinning on the error.
  LOG_ERROR("listener=" + self->config_.name +
            " accept failed: " + evutil_socket_error_to_string(err) + "; pausing accepts for 1s");
  evconnlistener_disable(listener);
  timeval one_second{1, 0};
  evtimer_add(self->resume_timer_.get(), &one_second);
}

void Listener::OnResume(evutil_socket_t, short, void* ctx) {
  auto* self = static_cast<Listener*>(ctx);
  evconnlistener_enable(self->listener_.get());
}

}  // namespace wsgate
