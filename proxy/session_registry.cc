#include "proxy/session_registry.h"

#include "proxy/session.h"

namespace wsgate {

SessionRegistry::SessionRegistry() = default;
SessionRegistry::~SessionRegistry() = default;

Session& SessionRegistry::Add(SessionPtr session) {
  sessions_.push_front(std::move(session));
  Session& added = *sessions_.front();
  added.self_ = sessions_.begin();
  size_.store(sessions_.size(), std::memory_order_relaxed);
  return added;
}

SessionPtr SessionRegistry::Release(Session& session) {
  SessionPtr owned = std::move(*session.self_);
  sessions_.erase(session.self_);
  size_.store(sessions_.size(), std::memory_order_relaxed);
  return owned;
}

void SessionRegistry::Clear() {
  sessions_.clear();
  size_.store(0, std::memory_order_relaxed);
}

}  // namespace wsgate
