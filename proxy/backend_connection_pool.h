// Idle keep-alive connections to backends, for plain HTTP forwarding. One pool per event loop
// (never shared between threads); connections are keyed by pool name and backend address.
//
// An idle connection belongs to the pool alone: it is closed when the backend closes it, sends
// anything unsolicited, or stays idle for the idle timeout. Take() hands ownership back to one
// exchange, which returns it with Put() only after a request and its response both completed
// cleanly, so no request can ever span two uses of one connection.
#pragma once

#include <chrono>
#include <list>
#include <map>
#include <memory>
#include <string>

#include "proxy/balancer.h"
#include "proxy/core/libevent_ptr.h"

namespace wsgate {

class BackendConnectionPool {
 public:
  BackendConnectionPool() = default;
  ~BackendConnectionPool() { Clear(); }
  BackendConnectionPool(const BackendConnectionPool&) = delete;
  BackendConnectionPool& operator=(const BackendConnectionPool&) = delete;

  // The most recently used idle connection to |backend|, with no callbacks set, or null.
  BufferEventPtr Take(const Backend& backend);
  // Keep |bev| for reuse; closes it at once when |backend| already has |max_idle| idle ones.
  void Put(const Backend& backend, BufferEventPtr bev, size_t max_idle,
           std::chrono::milliseconds idle_timeout);
  size_t idle(const Backend& backend) const;
  void Clear() { idle_.clear(); }

 private:
  struct Idle {
    BackendConnectionPool* pool = nullptr;
    std::string key;
    BufferEventPtr bev;
    std::list<std::unique_ptr<Idle>>::iterator self;
  };
  static std::string Key(const Backend& backend) { return backend.pool + '\n' + backend.address; }
  static void OnActivity(bufferevent* bev, void* ctx);
  static void OnEvent(bufferevent* bev, short what, void* ctx);
  void Drop(Idle* idle);

  std::map<std::string, std::list<std::unique_ptr<Idle>>> idle_;
};

}  // namespace wsgate
