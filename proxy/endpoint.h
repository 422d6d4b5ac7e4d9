// One side of a proxied connection: the client's socket or a backend's.
//
// TLS runs on a bufferevent throughout. A plain-TCP backend connection is a DirectSocket from
// connect() on; a plain-TCP client goes through its handshake on a bufferevent (the HTTP
// forwarder needs one) and moves to a DirectSocket once spliced. At most one of the two is open.
// The owner sets the callbacks (bufferevent_setcb, or the DirectSocket's) and decides what the
// bytes mean; an Endpoint only moves them and knows how to end politely (CloseAfterFlush).
#pragma once

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include <cstddef>
#include <cstdint>

#include "proxy/core/libevent_ptr.h"
#include "proxy/direct_socket.h"

namespace wsgate {

namespace tls {
class ServerContext;
}

class Endpoint {
 public:
  BufferEventPtr bev;
  DirectSocket direct;
  bool plain_tcp = true;  // false for TLS: bufferevent_openssl keeps the socket

  // A client socket just accepted, on a bufferevent that runs the TLS server handshake first
  // when |tls|. False (and |fd| closed) when out of memory.
  bool AcceptClient(event_base* base, evutil_socket_t fd, const tls::ServerContext* tls);

  bool open() const { return bev != nullptr || direct.open(); }
  evbuffer* input();
  evbuffer* output();
  size_t output_length() const {
    return bev ? evbuffer_get_length(bufferevent_get_output(bev.get())) : direct.output_length();
  }
  void SetReading(bool on);
  void SetReadLimit(size_t limit);  // stop reading while the input holds this much (0: none)
  void Write(const void* data, size_t size);
  void Flush() {
    if (!bev) direct.Flush();  // a bufferevent flushes by itself
  }
  void InputConsumed() {
    if (!bev) direct.InputConsumed();
  }
  evutil_socket_t fd() const { return bev ? bufferevent_getfd(bev.get()) : direct.fd(); }
  // Safe inside the endpoint's own callbacks (libevent defers a bufferevent's free).
  void Close();

  // Ending after the output is flushed: close then, or (|linger|) send FIN and keep reading
  // until the peer's EOF, so unread input never turns the close into a reset that destroys an
  // answer still in flight. Arms the write callback to fire once the output is empty; the owner
  // calls ContinueEnding() from it (and at once if output_length() is already 0).
  void CloseAfterFlush(bool linger);
  enum class Ending : uint8_t {
    kNone,
    kCloseWhenFlushed,
    kHalfCloseWhenFlushed,
    kHalfClosed,  // FIN sent, reading (and dropping) until EOF
  };
  Ending ending() const { return ending_; }
  bool flushing_to_close() const {
    return ending_ == Ending::kCloseWhenFlushed || ending_ == Ending::kHalfCloseWhenFlushed;
  }
  // The peer half-closed first: nothing more will be read, so close once flushed, no FIN wait.
  void SkipLinger() {
    if (ending_ == Ending::kHalfCloseWhenFlushed) ending_ = Ending::kCloseWhenFlushed;
  }
  enum class FlushStep { kWaiting, kHalfClosed, kClosed };
  // Call when the output may have drained while flushing_to_close().
  FlushStep ContinueEnding();

 private:
  Ending ending_ = Ending::kNone;
};

}  // namespace wsgate
