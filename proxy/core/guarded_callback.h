// libevent trampolines to member functions of an object that must not act once it has ended:
// its deletion is queued (EventLoop::DeferDelete) and callbacks already pending may still fire
// before it is freed. Each returns at once then, and never deletes anything itself.
//
//   bufferevent_setcb(bev, &Guarded<&Session::OnClientRead>::OnBufferevent, ...);
#pragma once

#include <event2/bufferevent.h>
#include <event2/event.h>

namespace wsgate {

template <auto Method>
struct Guarded;

template <typename T, void (T::*Method)()>
struct Guarded<Method> {
  static void OnBufferevent(bufferevent* /*bev*/, void* ctx) { Call(ctx); }
  static void OnTimer(evutil_socket_t /*fd*/, short /*what*/, void* ctx) { Call(ctx); }

 private:
  static void Call(void* ctx) {
    auto* object = static_cast<T*>(ctx);
    if (!object->ended()) (object->*Method)();
  }
};

template <typename T, void (T::*Method)(short)>
struct Guarded<Method> {
  static void OnBuffereventEvent(bufferevent* /*bev*/, short what, void* ctx) {
    auto* object = static_cast<T*>(ctx);
    if (!object->ended()) (object->*Method)(what);
  }
};

}  // namespace wsgate
