#include "proxy/connections/registry.h"

#include "proxy/connections/disconnect_hook.h"

#include "proxy/core/random.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>

namespace wsgate {

std::string NewConnectionId() {
  unsigned char raw[16];
  if (!SecureRandom(raw, sizeof(raw))) {
    // It fails only if the CSPRNG cannot be seeded; stay unique within the process.
    static std::atomic<uint64_t> counter{0};
    uint64_t parts[2] = {
        static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()),
        ++counter};
    std::memcpy(raw, parts, sizeof(raw));
  }
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string id;
  id.reserve(22);
  uint32_t bits = 0;
  int held = 0;
  for (unsigned char byte : raw) {
    bits = (bits << 8) | byte;
    held += 8;
    while (held >= 6) {
      held -= 6;
      id.push_back(kAlphabet[(bits >> held) & 0x3F]);
    }
  }
  if (held > 0) id.push_back(kAlphabet[(bits << (6 - held)) & 0x3F]);
  return id;
}

ConnectionIndex::Shard& ConnectionIndex::ShardOf(const std::string& id) {
  return shards_[std::hash<std::string>{}(id) % kShards];
}

const ConnectionIndex::Shard& ConnectionIndex::ShardOf(const std::string& id) const {
  return shards_[std::hash<std::string>{}(id) % kShards];
}

void ConnectionIndex::Add(ConnectionEntry entry) {
  Shard& shard = ShardOf(entry.id);
  std::optional<ConnectionEntry> told;
  if (observer_ != nullptr) told = entry;
  bool first = false;
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    std::string id = entry.id;
    first = shard.live.insert_or_assign(std::move(id), std::move(entry)).second;
  }
  if (told) observer_->OnAdded(*told, first);
}

void ConnectionIndex::Remove(const std::string& id) {
  Shard& shard = ShardOf(id);
  std::optional<ConnectionEntry> removed;
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    auto it = shard.live.find(id);
    if (it == shard.live.end()) return;
    if (observer_ != nullptr) removed = std::move(it->second);
    shard.live.erase(it);
    if (shard.closed.insert(id).second) shard.closed_order.push_back(id);
    if (shard.closed_order.size() > kClosedRemembered) {
      shard.closed.erase(shard.closed_order.front());
      shard.closed_order.pop_front();
    }
  }
  if (removed) observer_->OnRemoved(*removed);
}

void ConnectionIndex::SetTags(const std::string& id, const std::vector<std::string>& tags) {
  Shard& shard = ShardOf(id);
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    auto it = shard.live.find(id);
    if (it == shard.live.end()) return;
    it->second.identity.tags = tags;
  }
  if (observer_ != nullptr) observer_->OnTagsChanged(id, tags);
}

std::vector<ConnectionEntry> ConnectionIndex::Snapshot() const {
  std::vector<ConnectionEntry> all;
  for (const Shard& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard.mutex);
    for (const auto& [id, entry] : shard.live) all.push_back(entry);
  }
  return all;
}

bool ConnectionIndex::AddUser(const std::string& user, uint64_t cap, uint64_t* added) {
  // The observer is told under the lock: counts are absolute, so two workers' changes to one
  // user must reach it in the order they happened.
  std::lock_guard<std::mutex> lock(users_mutex_);
  uint64_t& held = users_[user];
  if (cap != 0 && held >= cap) {
    if (held == 0) users_.erase(user);
    return false;
  }
  *added = ++held;
  if (observer_ != nullptr) observer_->OnUserCount(user, held);
  return true;
}

void ConnectionIndex::RemoveUser(const std::string& user) {
  std::lock_guard<std::mutex> lock(users_mutex_);
  auto it = users_.find(user);
  if (it == users_.end()) return;
  uint64_t count = --it->second;
  if (count == 0) users_.erase(it);
  if (observer_ != nullptr) observer_->OnUserCount(user, count);
}

uint64_t ConnectionIndex::UserCount(const std::string& user) const {
  std::lock_guard<std::mutex> lock(users_mutex_);
  auto it = users_.find(user);
  return it == users_.end() ? 0 : it->second;
}

std::vector<std::pair<std::string, uint64_t>> ConnectionIndex::UserCounts() const {
  std::lock_guard<std::mutex> lock(users_mutex_);
  return {users_.begin(), users_.end()};
}

std::optional<ConnectionEntry> ConnectionIndex::Find(const std::string& id) const {
  const Shard& shard = ShardOf(id);
  std::lock_guard<std::mutex> lock(shard.mutex);
  auto it = shard.live.find(id);
  if (it == shard.live.end()) return std::nullopt;
  return it->second;
}

bool ConnectionIndex::RecentlyClosed(const std::string& id) const {
  const Shard& shard = ShardOf(id);
  std::lock_guard<std::mutex> lock(shard.mutex);
  return shard.closed.count(id) != 0;
}

std::vector<ConnectionEntry> ConnectionIndex::List(const std::string& pool,
                                                   const std::string& backend,
                                                   const std::string& after, size_t limit,
                                                   bool* more) const {
  // The limit + 1 smallest ids above |after| in a max-heap: memory stays O(limit) however many
  // connections there are; the extra one only tells whether another page follows.
  auto by_id = [](const ConnectionEntry& a, const ConnectionEntry& b) { return a.id < b.id; };
  std::vector<ConnectionEntry> heap;
  heap.reserve(limit + 1);
  for (const Shard& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard.mutex);
    for (const auto& [id, entry] : shard.live) {
      if (id <= after) continue;
      if (!pool.empty() && entry.pool != pool) continue;
      if (!backend.empty() && entry.backend != backend) continue;
      if (heap.size() == limit + 1) {
        if (!(id < heap.front().id)) continue;
        std::pop_heap(heap.begin(), heap.end(), by_id);
        heap.back() = entry;
      } else {
        heap.push_back(entry);
      }
      std::push_heap(heap.begin(), heap.end(), by_id);
    }
  }
  std::sort_heap(heap.begin(), heap.end(), by_id);
  *more = heap.size() > limit;
  if (*more) heap.resize(limit);
  return heap;
}

size_t ConnectionIndex::size() const {
  size_t total = 0;
  for (const Shard& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard.mutex);
    total += shard.live.size();
  }
  return total;
}

void ConnectionIndex::set_public_url(std::string url) {
  std::lock_guard<std::mutex> lock(url_mutex_);
  public_url_ = std::move(url);
}

std::string ConnectionIndex::public_url() const {
  std::lock_guard<std::mutex> lock(url_mutex_);
  return public_url_;
}

ConnectionDirectory::ConnectionDirectory() = default;
ConnectionDirectory::~ConnectionDirectory() = default;

void ConnectionDirectory::Add(const std::string& id, LiveConnection* connection,
                              const ConnectionIdentity* identity) {
  // A session registers again when its facts change (subprotocol, backend): index it once.
  bool added = local_.insert_or_assign(id, connection).second;
  if (identity == nullptr || !added) return;
  if (!identity->user.empty()) by_user_[identity->user].insert(id);
  for (const std::string& tag : identity->tags) by_tag_[tag].insert(id);
  if (identity->expires_at != 0) expiries_.emplace(identity->expires_at, id);
}

void ConnectionDirectory::Unlink(std::unordered_map<std::string, IdSet>& by, const std::string& key,
                                 const std::string& id) {
  auto it = by.find(key);
  if (it == by.end()) return;
  it->second.erase(id);
  if (it->second.empty()) by.erase(it);
}

void ConnectionDirectory::Remove(const std::string& id, const ConnectionIdentity* identity) {
  local_.erase(id);
  if (identity == nullptr) return;
  if (!identity->user.empty()) Unlink(by_user_, identity->user, id);
  for (const std::string& tag : identity->tags) Unlink(by_tag_, tag, id);
  // An expiry entry stays until due; TakeExpired's caller finds the id gone.
}

void ConnectionDirectory::SetTag(const std::string& id, const std::string& tag, bool present) {
  if (present) {
    by_tag_[tag].insert(id);
  } else {
    Unlink(by_tag_, tag, id);
  }
}

std::vector<std::string> ConnectionDirectory::IdsOf(
    const std::unordered_map<std::string, IdSet>& by, const std::string& key) {
  auto it = by.find(key);
  if (it == by.end()) return {};
  return {it->second.begin(), it->second.end()};
}

std::vector<std::string> ConnectionDirectory::IdsOfUser(const std::string& user) const {
  return IdsOf(by_user_, user);
}

std::vector<std::string> ConnectionDirectory::IdsWithTag(const std::string& tag) const {
  return IdsOf(by_tag_, tag);
}

std::vector<std::string> ConnectionDirectory::TakeDue(Schedule& schedule, int64_t now_unix) {
  std::vector<std::string> due;
  while (!schedule.empty() && schedule.top().first <= now_unix) {
    due.push_back(schedule.top().second);
    schedule.pop();
  }
  return due;
}

std::vector<std::string> ConnectionDirectory::TakeDueRevalidations(int64_t now_unix) {
  return TakeDue(revalidations_, now_unix);
}

std::vector<std::string> ConnectionDirectory::TakeExpired(int64_t now_unix) {
  return TakeDue(expiries_, now_unix);
}

DisconnectHook& ConnectionDirectory::disconnect_hook(EventLoop& loop) {
  if (!disconnect_hook_) {
    disconnect_hook_ = std::make_unique<DisconnectHook>(loop, index_->hook_counters());
  }
  return *disconnect_hook_;
}

}  // namespace wsgate
