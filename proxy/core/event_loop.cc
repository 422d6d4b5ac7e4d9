#include "proxy/core/event_loop.h"

#include <event2/thread.h>

#include <cstdlib>

#include "proxy/core/log.h"

namespace wsgate {

namespace {

// The epoll changelist folds a loop pass's interest changes on one fd into one epoll_ctl: a
// handshake otherwise makes ~14 of them (bufferevents enable and disable as they go, and the
// hand-over to a direct socket re-adds both fds). wsgate never dup()s a socket, the case the
// changelist gets wrong.
event_base* NewBase() {
  event_config* config = event_config_new();
  if (config == nullptr) return nullptr;
  event_config_set_flag(config, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  event_base* base = event_base_new_with_config(config);
  event_config_free(config);
  return base;
}

}  // namespace

EventLoop::EventLoop() : base_(NewBase()) {
  if (!base_) {
    LOG_ERROR("event_base_new failed");
    std::abort();
  }
  reap_event_.reset(event_new(base_.get(), -1, 0, &EventLoop::OnReap, this));
  posted_event_.reset(event_new(base_.get(), -1, 0, &EventLoop::OnPosted, this));
}

void EventLoop::EnableThreads() {
  static const bool enabled = [] {
    if (evthread_use_pthreads() != 0) {
      LOG_ERROR("evthread_use_pthreads failed");
      std::abort();
    }
    return true;
  }();
  (void)enabled;
}

void EventLoop::Post(std::function<void()> task) {
  bool first = false;
  {
    std::lock_guard<std::mutex> lock(posted_mutex_);
    first = posted_.empty();
    posted_.push_back(std::move(task));
  }
  // One activation per batch; event_active takes the base's lock (evthread), so it is safe here.
  if (first) event_active(posted_event_.get(), 0, 0);
}

void EventLoop::OnPosted(evutil_socket_t, short, void* ctx) {
  static_cast<EventLoop*>(ctx)->RunPosted();
}

void EventLoop::RunPosted() {
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(posted_mutex_);
    batch.swap(posted_);
  }
  for (auto& task : batch) task();
}

EventLoop::~EventLoop() {
  Reap();
  posted_event_.reset();
  reap_event_.reset();
}

void EventLoop::DeferDelete(std::unique_ptr<Deferrable> object) {
  if (!object) return;
  pending_delete_.push_back(std::move(object));
  if (pending_delete_.size() == 1) event_active(reap_event_.get(), 0, 0);
}

void EventLoop::OnReap(evutil_socket_t, short, void* ctx) { static_cast<EventLoop*>(ctx)->Reap(); }

void EventLoop::Reap() {
  // Destructors may queue more deletions, so swap the list out and repeat until empty.
  while (!pending_delete_.empty()) {
    std::vector<std::unique_ptr<Deferrable>> batch;
    batch.swap(pending_delete_);
    batch.clear();
  }
}

void EventLoop::Run() { event_base_dispatch(base_.get()); }

void EventLoop::Exit() { event_base_loopexit(base_.get(), nullptr); }

}  // namespace wsgate
