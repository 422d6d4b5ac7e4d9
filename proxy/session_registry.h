// The live sessions of one event loop, owned here until each finishes.
#pragma once

#include <atomic>
#include <cstddef>
#include <list>
#include <memory>

namespace wsgate {

class Session;
using SessionPtr = std::unique_ptr<Session>;

class SessionRegistry {
 public:
  SessionRegistry();
  ~SessionRegistry();
  SessionRegistry(const SessionRegistry&) = delete;
  SessionRegistry& operator=(const SessionRegistry&) = delete;

  Session& Add(SessionPtr session);
  // Hand |session| back (to be deleted once the current callback has returned).
  SessionPtr Release(Session& session);
  // Safe to read from any thread (the main thread sums the workers' counts).
  size_t size() const { return size_.load(std::memory_order_relaxed); }
  template <typename Fn>
  void ForEach(Fn&& fn) {
    for (auto& session : sessions_) fn(*session);
  }
  void Clear();

 private:
  std::list<SessionPtr> sessions_;
  std::atomic<size_t> size_{0};
};

}  // namespace wsgate
