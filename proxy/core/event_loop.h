// One libevent event_base plus deferred deletion.
//
// Objects that own libevent handles are never deleted inside their own callbacks: they hand
// themselves to DeferDelete(), and the loop frees them after the current callback has unwound
// (the pattern Envoy, Tor and h2o use). This is what keeps a callback from touching freed memory.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "proxy/core/libevent_ptr.h"

namespace wsgate {

// A libevent timeout from a millisecond duration.
inline timeval ToTimeval(std::chrono::milliseconds d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

class Deferrable {
 public:
  virtual ~Deferrable() = default;
};

class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  event_base* base() const { return base_.get(); }

  // Free |object| after the current callback returns, in this loop pass.
  void DeferDelete(std::unique_ptr<Deferrable> object);

  // Run |task| on this loop's thread soon. Safe from any thread once EnableThreads() has run
  // (before any loop was created); tasks run in the order they were posted.
  void Post(std::function<void()> task);

  // Run until Exit() or until there are no more events. Exit() is safe from any thread once
  // EnableThreads() has run.
  void Run();
  void Exit();

  // Make libevent thread-aware (evthread_use_pthreads). Call once, before any EventLoop exists.
  static void EnableThreads();

 private:
  static void OnReap(evutil_socket_t, short, void* ctx);
  static void OnPosted(evutil_socket_t, short, void* ctx);
  void Reap();
  void RunPosted();

  EventBasePtr base_;
  EventPtr reap_event_;
  std::vector<std::unique_ptr<Deferrable>> pending_delete_;
  EventPtr posted_event_;
  std::mutex posted_mutex_;
  std::vector<std::function<void()>> posted_;  // guarded by posted_mutex_
};

}  // namespace wsgate
