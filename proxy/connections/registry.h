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
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "proxy/connections/auth_hook.h"
#include "proxy/connections/identity.h"

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
  std::atomic<uint64_t> revalidation_allowed{0};
  std::atomic<uint64_t> revalidation_revoked{0};  // closed with 1008
  std::atomic<uint64_t> revalidation_failed{0};   // no usable answer: the connection stays
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
  ConnectionIdentity identity;  // the tags change through the API (ConnectionIndex::SetTags)
};

// Something that mirrors the index elsewhere (the fleet registry on Redis). Called on the
// thread that changed the index (OnUserCount under the index's user lock, to keep the order):
// it must be thread-safe, quick, and must not call back into the index.
class ConnectionIndexObserver {
 public:
  // |first|: a new entry; otherwise its facts changed (subprotocol at the 101, a move).
  virtual void OnAdded(const ConnectionEntry& entry, bool first) = 0;
  virtual void OnRemoved(const ConnectionEntry& entry) = 0;
  virtual void OnTagsChanged(const std::string& id, const std::vector<std::string>& tags) = 0;
  // The number of this process's connections of |user| changed to |count|.
  virtual void OnUserCount(const std::string& user, uint64_t count) = 0;

 protected:
  ~ConnectionIndexObserver() = default;
};

// limits.max_connections_per_user across a fleet (cluster/Fleet implements it).
class UserGate {
 public:
  // May one more connection of |user| be admitted, with |local| of them on this instance (the
  // new one included) and |cap| allowed fleet-wide? |done| runs on |reply_loop| (true: admit).
  // Callable from any thread.
  virtual void Admit(const std::string& user, uint64_t local, uint64_t cap, EventLoop& reply_loop,
                     std::function<void(bool admit)> done) = 0;

 protected:
  ~UserGate() = default;
};

class ConnectionIndex {
 public:
  void Add(ConnectionEntry entry);
  // Forget |id|; it is remembered as closed (bounded), so the API can answer 410 not 404.
  void Remove(const std::string& id);
  void SetTags(const std::string& id, const std::vector<std::string>& tags);
  // Every live entry (the fleet registry's resynchronisation).
  std::vector<ConnectionEntry> Snapshot() const;

  // This process's connections per user (limits.max_connections_per_user). AddUser counts one
  // more unless that would exceed |cap| (0 = no cap); false when refused.
  // |*count| gets the count after adding.
  bool AddUser(const std::string& user, uint64_t cap, uint64_t* count);
  void RemoveUser(const std::string& user);
  uint64_t UserCount(const std::string& user) const;
  // Every user with connections here, and how many.
  std::vector<std::pair<std::string, uint64_t>> UserCounts() const;

  // Set once at start, before any connection (the fleet); null = none.
  void set_observer(ConnectionIndexObserver* observer) { observer_ = observer; }
  void set_user_gate(UserGate* gate) { user_gate_ = gate; }
  UserGate* user_gate() const { return user_gate_; }
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
  ConnectionIndexObserver* observer_ = nullptr;
  UserGate* user_gate_ = nullptr;
  mutable std::mutex users_mutex_;
  std::unordered_map<std::string, uint64_t> users_;
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

  void Add(const std::string& id, LiveConnection* connection, const ConnectionIdentity* identity);
  void Remove(const std::string& id, const ConnectionIdentity* identity);
  LiveConnection* Find(const std::string& id) const {
    auto it = local_.find(id);
    return it == local_.end() ? nullptr : it->second;
  }
  void SetTag(const std::string& id, const std::string& tag, bool present);

  // The ids of this worker's connections of |user| (or with |tag|); a copy, so the caller may
  // close connections while walking it.
  std::vector<std::string> IdsOfUser(const std::string& user) const;
  std::vector<std::string> IdsWithTag(const std::string& tag) const;
  // Ids whose credentials expired at |now_unix| (each once; the caller checks it still lives).
  std::vector<std::string> TakeExpired(int64_t now_unix);
  void ScheduleExpiry(const std::string& id, int64_t at_unix) { expiries_.emplace(at_unix, id); }
  // auth.revalidate_interval: ask again for |id| at |at_unix|; TakeDueRevalidations hands each
  // out once (the caller checks the connection still lives).
  void ScheduleRevalidation(const std::string& id, int64_t at_unix) {
    revalidations_.emplace(at_unix, id);
  }
  std::vector<std::string> TakeDueRevalidations(int64_t now_unix);

 private:
  using IdSet = std::unordered_set<std::string>;
  static std::vector<std::string> IdsOf(const std::unordered_map<std::string, IdSet>& by,
                                        const std::string& key);
  static void Unlink(std::unordered_map<std::string, IdSet>& by, const std::string& key,
                     const std::string& id);

  ConnectionIndex* index_ = nullptr;
  size_t worker_ = 0;
  std::unordered_map<std::string, LiveConnection*> local_;
  std::unordered_map<std::string, IdSet> by_user_;
  std::unordered_map<std::string, IdSet> by_tag_;
  // (when, id), soonest first.
  using Schedule =
      std::priority_queue<std::pair<int64_t, std::string>,
                          std::vector<std::pair<int64_t, std::string>>, std::greater<>>;
  static std::vector<std::string> TakeDue(Schedule& schedule, int64_t now_unix);
  Schedule expiries_;       // auth expiry (X-Wsgate-Expires)
  Schedule revalidations_;  // auth.revalidate_interval
  std::unique_ptr<DisconnectHook> disconnect_hook_;
  AuthCache auth_cache_;
};

}  // namespace wsgate
