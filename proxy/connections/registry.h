// Which worker owns which upgraded connection, for the connections API (docs/connections-api.md).
//
// Two levels, so no lock is ever taken per frame:
// * ConnectionIndex (process-wide): id -> the owning worker plus the facts that never change
//   after the upgrade (pool, backend, client...). Sharded mutexes; written twice per connection
//   (upgrade, end), read by the admin thread to route a request and to list connections.
// * ConnectionDirectory (one per worker, that worker's thread only): id -> LiveConnection* (a
// Session). The admin
//   thread never touches a Session: it posts to the owning worker, which looks the id up here
//   and only then uses the session, so a session freed meanwhile is simply not found.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "proxy/connections/auth_hook.h"

namespace wsgate {

class LiveConnection;
class DisconnectHook;
class EventLoop;

// Hook outcomes, summed over the workers (written once per connection, never per frame).
struct HookCounters {
  std::atomic<uint64_t> disconnect_delivered{0};
  std::atomic<uint64_t> disconnect_retried{0};
  std::atomic<uint64_t> disconnect_failed{0};
  std::atomic<uint64_t> disconnect_dropped{0};
  std::atomic<uint64_t> auth_allowed{0};
  std::atomic<uint64_t> auth_denied{0};
  std::atomic<uint64_t> auth_failed{0};  // timeout or error: the client got 503
  std::atomic<uint64_t> auth_cache_hits{0};
};

// 128 random bits (OpenSSL's CSPRNG, via SecureRandom) as 22 characters of unpadded base64url.
std::string NewConnectionId();

// Facts about an upgraded connection that do not change while it lives.
struct ConnectionEntry {
  std::string id;
  size_t worker = 0;
  std::string client;
  std::string listener;
  std::string route;
  std::string pool;
  std::string backend;
  std::string subprotocol;
  int64_t connected_at_ms = 0;  // Unix time in milliseconds
};

class ConnectionIndex {
 public:
  void Add(ConnectionEntry entry);
  // Forget |id|; it is remembered as closed (bounded), so the API can answer 410 not 404.
  void Remove(const std::string& id);
  std::optional<ConnectionEntry> Find(const std::string& id) const;
  bool RecentlyClosed(const std::string& id) const;

  // Up to |limit| entries with id > |after| in id order, matching |pool| and |backend| (empty =
  // any). |more| tells whether entries beyond the page exist.
  std::vector<ConnectionEntry> List(const std::string& pool, const std::string& backend,
                                    const std::string& after, size_t limit, bool* more) const;
  size_t size() const;

  // The base of every callback URL ("http://10.0.0.5:9901"), set by the admin listener.
  void set_public_url(std::string url);
  std::string public_url() const;

  HookCounters& hook_counters() { return hook_counters_; }

 private:
  static constexpr size_t kShards = 16;
  static constexpr size_t kClosedRemembered = 4096;  // per shard
  struct Shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string, ConnectionEntry> live;
    std::unordered_set<std::string> closed;
    std::deque<std::string> closed_order;
  };
  Shard& ShardOf(const std::string& id);
  const Shard& ShardOf(const std::string& id) const;

  Shard shards_[kShards];
  HookCounters hook_counters_;
  mutable std::mutex url_mutex_;
  std::string public_url_;
};

// One worker's sessions by id; used only on that worker's thread.
class ConnectionDirectory {
 public:
  ConnectionDirectory();
  ~ConnectionDirectory();
  ConnectionDirectory(const ConnectionDirectory&) = delete;
  ConnectionDirectory& operator=(const ConnectionDirectory&) = delete;
  // This worker's on_disconnect sender, created on first use.
  DisconnectHook& disconnect_hook(EventLoop& loop);
  AuthCache& auth_cache() { return auth_cache_; }
  void Attach(ConnectionIndex* index, size_t worker) {
    index_ = index;
    worker_ = worker;
  }
  ConnectionIndex* index() const { return index_; }
  size_t worker() const { return worker_; }

  void Add(const std::string& id, LiveConnection* connection) { local_[id] = connection; }
  void Remove(const std::string& id) { local_.erase(id); }
  LiveConnection* Find(const std::string& id) const {
    auto it = local_.find(id);
    return it == local_.end() ? nullptr : it->second;
  }

 private:
  ConnectionIndex* index_ = nullptr;
  size_t worker_ = 0;
  std::unordered_map<std::string, LiveConnection*> local_;
  std::unique_ptr<DisconnectHook> disconnect_hook_;
  AuthCache auth_cache_;
};

}  // namespace wsgate
