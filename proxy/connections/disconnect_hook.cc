#include "proxy/connections/disconnect_hook.h"

#include <algorithm>

#include "proxy/core/log.h"

namespace wsgate {

DisconnectHook::DisconnectHook(EventLoop& loop, HookCounters& counters)
    : loop_(loop), counters_(counters) {
  retry_timer_.reset(evtimer_new(loop_.base(), &DisconnectHook::OnRetryTimer, this));
}

DisconnectHook::~DisconnectHook() = default;

void DisconnectHook::Send(const config::DisconnectHookConfig& config, std::string body) {
  if (queue_.size() + retry_.size() >= config.queue_size) {
    counters_.disconnect_dropped.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  queue_.push_back(Event{config.url, config.timeout, config.retries, 0, std::move(body)});
  StartSome();
}

void DisconnectHook::StartSome() {
  while (in_flight_.size() < kMaxInFlight && !queue_.empty()) {
    Event event = std::move(queue_.front());
    queue_.pop_front();
    std::string error;
    std::unique_ptr<HookCall> call = HookCall::Start(
        loop_.base(), event.url, EVHTTP_REQ_POST, {{"Content-Type", "application/json"}},
        event.body, event.timeout,
        [this, event](evhttp_request* response) mutable {
          int status = response != nullptr ? evhttp_request_get_response_code(response) : 0;
          OnAnswer(std::move(event), status >= 200 && status < 300);
        },
        &error);
    if (!call) {
      LOG_WARN("on_disconnect: " + error);
      counters_.disconnect_failed.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    in_flight_.push_back(std::move(call));
  }
}

void DisconnectHook::OnAnswer(Event event, bool delivered) {
  // The answered call is inside its callback now: free it after the callback returns.
  for (auto& call : in_flight_) {
    if (call->finished()) loop_.DeferDelete(std::move(call));
  }
  std::erase_if(in_flight_, [](const std::unique_ptr<HookCall>& call) { return !call; });
  if (delivered) {
    counters_.disconnect_delivered.fetch_add(1, std::memory_order_relaxed);
  } else if (event.retries_left > 0) {
    --event.retries_left;
    ++event.attempt;
    counters_.disconnect_retried.fetch_add(1, std::memory_order_relaxed);
    retry_.push_back(std::move(event));
    if (!retry_armed_) {
      retry_armed_ = true;
      // 100ms, 200ms, 400ms... capped at 5s, from the attempt that failed first.
      int64_t delay =
          std::min<int64_t>(5000, int64_t{100} << std::min<uint32_t>(retry_.back().attempt, 6));
      timeval tv = ToTimeval(std::chrono::milliseconds(delay));
      evtimer_add(retry_timer_.get(), &tv);
    }
  } else {
    counters_.disconnect_failed.fetch_add(1, std::memory_order_relaxed);
    LOG_WARN("on_disconnect: gave up delivering an event to " + event.url);
  }
  StartSome();
}

void DisconnectHook::OnRetryTimer(evutil_socket_t, short, void* ctx) {
  auto* hook = static_cast<DisconnectHook*>(ctx);
  hook->retry_armed_ = false;
  while (!hook->retry_.empty()) {
    hook->queue_.push_front(std::move(hook->retry_.back()));
    hook->retry_.pop_back();
  }
  hook->StartSome();
}

}  // namespace wsgate
