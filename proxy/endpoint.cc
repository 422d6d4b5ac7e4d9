#include "proxy/endpoint.h"

#include <sys/socket.h>

#include "proxy/tls/tls_context.h"

namespace wsgate {

bool Endpoint::AcceptClient(event_base* base, evutil_socket_t fd, const tls::ServerContext* tls) {
  plain_tcp = tls == nullptr;
  if (tls != nullptr) {
    bev = tls->Accept(base, fd);  // closes |fd| if it fails
  } else {
    bev.reset(bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS));
    if (!bev) evutil_closesocket(fd);
  }
  return bev != nullptr;
}

evbuffer* Endpoint::input() { return bev ? bufferevent_get_input(bev.get()) : direct.input(); }

evbuffer* Endpoint::output() { return bev ? bufferevent_get_output(bev.get()) : direct.output(); }

void Endpoint::SetReading(bool on) {
  if (!bev) {
    direct.SetReading(on);
  } else if (on) {
    bufferevent_enable(bev.get(), EV_READ);
  } else {
    bufferevent_disable(bev.get(), EV_READ);
  }
}

void Endpoint::SetReadLimit(size_t limit) {
  if (bev) {
    bufferevent_setwatermark(bev.get(), EV_READ, 0, limit);
  } else {
    direct.SetReadLimit(limit);
  }
}

void Endpoint::Write(const void* data, size_t size) {
  evbuffer_add(output(), data, size);
  Flush();
}

void Endpoint::Close() {
  bev.reset();
  direct.Close();
  ending_ = Ending::kNone;
}

void Endpoint::CloseAfterFlush(bool linger) {
  if (!open()) return;
  ending_ = linger ? Ending::kHalfCloseWhenFlushed : Ending::kCloseWhenFlushed;
  // The write callback must fire when the output is empty, not at the splice watermark.
  if (bev) {
    bufferevent_setwatermark(bev.get(), EV_WRITE, 0, 0);
    bufferevent_enable(bev.get(), EV_WRITE);
  } else {
    direct.WatchWritable(0);
    direct.Flush();
  }
}

Endpoint::FlushStep Endpoint::ContinueEnding() {
  if (output_length() != 0) return FlushStep::kWaiting;
  if (ending_ == Ending::kHalfCloseWhenFlushed) {
    // Half-close and keep reading (and dropping) until the peer's EOF; the owner's timer bounds it.
    if (bev) tls::SendCloseNotify(bev.get());
    shutdown(fd(), SHUT_WR);
    ending_ = Ending::kHalfClosed;
    SetReadLimit(0);
    SetReading(true);
    return FlushStep::kHalfClosed;
  }
  Close();
  return FlushStep::kClosed;
}

}  // namespace wsgate
