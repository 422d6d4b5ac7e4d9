// The polite end of a client connection after a final HTTP answer (a refusal, or a keep-alive
// connection's last response): flush the answer, send FIN, then keep reading and dropping until
// the client closes, for a bounded time. Unread input would otherwise turn our close into a
// reset that destroys the answer still in flight.
#pragma once

#include <event2/event.h>

#include "config/config.h"
#include "proxy/core/libevent_ptr.h"
#include "proxy/endpoint.h"

namespace wsgate {

class LingeringCloseOwner {
 public:
  // The socket closed, or the time ran out (the owner closes it then). Called at most once.
  virtual void OnLingerEnded() = 0;

 protected:
  ~LingeringCloseOwner() = default;
};

class LingeringClose {
 public:
  // |client| (already holding the answer in its output) must outlive this object.
  LingeringClose(LingeringCloseOwner& owner, Endpoint& client) : owner_(owner), client_(client) {}

  // Begin, ending after at most |limit|. May call OnLingerEnded at once (output already sent
  // and the socket closed).
  void Start(event_base* base, config::Duration limit);
  // Stop the timer: the owner has ended the connection another way.
  void Stop();

  bool ended() const { return ended_; }
  // The owner forwards the client socket's callbacks while lingering.
  void OnRead();
  void OnWritable();
  void OnEvent(short what);

 private:
  void End();

  LingeringCloseOwner& owner_;
  Endpoint& client_;
  EventPtr timer_;
  bool ended_ = false;
};

}  // namespace wsgate
