// Stage 1: accept client connections on one configured address and hand each accepted socket to
// the server, which gives it to a worker (where it becomes a Session).
#pragma once

#include <functional>
#include <string>

#include "config/config.h"
#include "proxy/core/libevent_ptr.h"

namespace wsgate {

class Listener {
 public:
  // Called on the accepting thread with the new (non-blocking) socket, which it now owns.
  using AcceptFn =
      std::function<void(evutil_socket_t fd, const sockaddr* peer, const std::string& listener)>;

  Listener(event_base* base, const config::ListenerConfig& config, AcceptFn on_accept);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Bind and listen. Returns false with |error| set if the address cannot be bound.
  bool Bind(std::string* error);
  // Use |fd|, a socket already listening (handed over by a previous process), instead of binding.
  bool Adopt(int fd, std::string* error);
  int fd() const;
  // The address actually bound (useful with port 0).
  std::string BoundAddress() const;
  const std::string& name() const { return config_.name; }
  const std::string& address_text() const { return config_.address.text; }

 private:
  static void OnAccept(evconnlistener*, evutil_socket_t fd, sockaddr* addr, int len, void* ctx);
  static void OnError(evconnlistener*, void* ctx);
  static void OnResume(evutil_socket_t, short, void* ctx);

  event_base* base_;
  config::ListenerConfig config_;
  AcceptFn on_accept_;
  ListenerPtr listener_;
  EventPtr resume_timer_;
  // Linux copies TCP_NODELAY from a listening socket to the sockets it accepts: set once here,
  // it saves a setsockopt per connection. Accepted sockets get it themselves if that failed.
  bool nodelay_inherited_ = false;
  void SetListenerNoDelay();
};

}  // namespace wsgate
