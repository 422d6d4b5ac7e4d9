// unique_ptr aliases for libevent and OpenSSL handles, so ownership is visible in types.
#pragma once

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <memory>

namespace wsgate {

template <typename T, void (*Free)(T*)>
struct CFree {
  void operator()(T* p) const {
    if (p != nullptr) Free(p);
  }
};

using EventBasePtr = std::unique_ptr<event_base, CFree<event_base, event_base_free>>;
using EventPtr = std::unique_ptr<event, CFree<event, event_free>>;
using BufferEventPtr = std::unique_ptr<bufferevent, CFree<bufferevent, bufferevent_free>>;
using EvBufferPtr = std::unique_ptr<evbuffer, CFree<evbuffer, evbuffer_free>>;
using ListenerPtr = std::unique_ptr<evconnlistener, CFree<evconnlistener, evconnlistener_free>>;

}  // namespace wsgate
