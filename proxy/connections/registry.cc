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
  std::lock_guard<std::mutex> lock(shard.mutex);
  std::string id = entry.id;
  shard.live[id] = std::move(entry);
}

void ConnectionIndex::Remove(const std::string& id) {
  Shard& shard = ShardOf(id);
  std::lock_guard<std::mutex> lock(shard.mutex);
  if (shard.live.erase(id) == 0) return;
  if (shard.closed.insert(id).second) shard.closed_order.push_back(id);
  if (shard.closed_order.size() > kClosedRemembered) {
    shard.closed.erase(shard.closed_order.front());
    shard.closed_order.pop_front();
  }
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

DisconnectHook& ConnectionDirectory::disconnect_hook(EventLoop& loop) {
  if (!disconnect_hook_) {
    disconnect_hook_ = std::make_unique<DisconnectHook>(loop, index_->hook_counters());
  }
  return *disconnect_hook_;
}

}  // namespace wsgate
