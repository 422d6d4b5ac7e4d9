#include "proxy/backend_connection_pool.h"

#include "proxy/core/event_loop.h"

namespace wsgate {

BufferEventPtr BackendConnectionPool::Take(const Backend& backend) {
  auto it = idle_.find(Key(backend));
  if (it == idle_.end() || it->second.empty()) return nullptr;
  BufferEventPtr bev = std::move(it->second.back()->bev);
  it->second.pop_back();
  if (it->second.empty()) idle_.erase(it);
  bufferevent_setcb(bev.get(), nullptr, nullptr, nullptr, nullptr);
  bufferevent_set_timeouts(bev.get(), nullptr, nullptr);
  return bev;
}

void BackendConnectionPool::Put(const Backend& backend, BufferEventPtr bev, size_t max_idle,
                                std::chrono::milliseconds idle_timeout) {
  if (!bev) return;
  std::string key = Key(backend);
  auto& list = idle_[key];
  if (list.size() >= max_idle) {
    if (list.empty()) idle_.erase(key);
    return;  // |bev| closes here
  }
  auto idle = std::make_unique<Idle>();
  idle->pool = this;
  idle->key = std::move(key);
  idle->bev = std::move(bev);
  Idle* raw = idle.get();
  list.push_back(std::move(idle));
  raw->self = std::prev(list.end());
  bufferevent_setcb(raw->bev.get(), &OnActivity, nullptr, &OnEvent, raw);
  // The read timeout is the idle timeout: reading is enabled and nothing is expected.
  timeval timeout = ToTimeval(idle_timeout);
  bufferevent_set_timeouts(raw->bev.get(), &timeout, nullptr);
  bufferevent_setwatermark(raw->bev.get(), EV_READ, 0, 0);
  bufferevent_enable(raw->bev.get(), EV_READ);
}

size_t BackendConnectionPool::idle(const Backend& backend) const {
  auto it = idle_.find(Key(backend));
  return it == idle_.end() ? 0 : it->second.size();
}

// Bytes from an idle backend were never asked for: that connection can no longer be trusted.
void BackendConnectionPool::OnActivity(bufferevent*, void* ctx) {
  auto* idle = static_cast<Idle*>(ctx);
  idle->pool->Drop(idle);
}

void BackendConnectionPool::OnEvent(bufferevent*, short, void* ctx) {
  auto* idle = static_cast<Idle*>(ctx);
  idle->pool->Drop(idle);
}

void BackendConnectionPool::Drop(Idle* idle) {
  auto it = idle_.find(idle->key);
  if (it == idle_.end()) return;
  // Freeing the bufferevent inside its own callback is safe: libevent defers the actual free.
  it->second.erase(idle->self);
  if (it->second.empty()) idle_.erase(it);
}

}  // namespace wsgate
