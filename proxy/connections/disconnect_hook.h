// on_disconnect ($disconnect): after each upgraded connection ends, POST a JSON summary to
// on_disconnect.url. One per worker, on its loop. A bounded queue (on_disconnect.queue_size)
// feeds at most kMaxInFlight requests at a time; a failed delivery (no answer or non-2xx) is
// retried up to on_disconnect.retries times with a growing delay; when the queue is full the
// event is dropped and counted (wsgate_disconnect_webhook_dropped_total).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "proxy/connections/hook_call.h"
#include "proxy/connections/registry.h"
#include "proxy/core/event_loop.h"
#include "proxy/core/libevent_ptr.h"

namespace wsgate {

class DisconnectHook {
 public:
  DisconnectHook(EventLoop& loop, HookCounters& counters);
  ~DisconnectHook();
  DisconnectHook(const DisconnectHook&) = delete;
  DisconnectHook& operator=(const DisconnectHook&) = delete;

  void Send(const config::DisconnectHookConfig& config, std::string body);

 private:
  static constexpr size_t kMaxInFlight = 8;
  struct Event {
    std::string url;
    config::Duration timeout;
    uint32_t retries_left;
    uint32_t attempt;
    std::string body;
  };
  static void OnRetryTimer(evutil_socket_t, short, void* ctx);
  void StartSome();
  void OnAnswer(Event event, bool delivered);

  EventLoop& loop_;
  HookCounters& counters_;
  std::deque<Event> queue_;
  std::deque<Event> retry_;  // failed deliveries waiting for the retry timer
  std::vector<std::unique_ptr<HookCall>> in_flight_;
  EventPtr retry_timer_;
  bool retry_armed_ = false;
};

}  // namespace wsgate
