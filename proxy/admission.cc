#include "proxy/admission.h"

#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace wsgate {
namespace {

// Sweep idle entries (no connection, bucket refilled) every this many admissions, so the table
// holds only addresses that are connected or were seen within the last second or so.
constexpr size_t kPruneEvery = 4096;

}  // namespace

void Admission::Configure(const config::LimitsConfig& limits) {
  max_per_address_.store(limits.max_connections_per_ip, std::memory_order_relaxed);
  rate_per_address_.store(limits.handshake_rate_per_ip, std::memory_order_relaxed);
  max_pending_.store(limits.max_pending_handshakes, std::memory_order_relaxed);
}

Admission::AddressKey Admission::KeyOf(const sockaddr* peer) {
  AddressKey key{};
  if (peer->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(peer);
    const uint8_t* bytes = v6->sin6_addr.s6_addr;
    static const uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(bytes, kMappedPrefix, sizeof(kMappedPrefix)) == 0) {
      key[0] = 4;
      std::memcpy(&key[1], bytes + 12, 4);
    } else {
      key[0] = 6;
      std::memcpy(&key[1], bytes, 8);
    }
  } else if (peer->sa_family == AF_INET) {
    key[0] = 4;
    std::memcpy(&key[1], &reinterpret_cast<const sockaddr_in*>(peer)->sin_addr, 4);
  }
  return key;
}

size_t Admission::KeyHash::operator()(const AddressKey& key) const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (uint8_t b : key) h = (h ^ b) * 1099511628211ull;
  return static_cast<size_t>(h);
}

Admission::Ticket Admission::Admit(const sockaddr* peer, Clock::time_point now) {
  Ticket ticket;
  if (pending_.load(std::memory_order_relaxed) >= max_pending_.load(std::memory_order_relaxed)) {
    ticket.verdict = Verdict::kTooManyPending;
    return ticket;
  }
  uint64_t max_connections = max_per_address_.load(std::memory_order_relaxed);
  uint64_t rate = rate_per_address_.load(std::memory_order_relaxed);
  if (max_connections != 0 || rate != 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (++admits_since_prune_ >= kPruneEvery) PruneLocked(now);
    auto [it, inserted] = addresses_.try_emplace(KeyOf(peer));
    Entry& entry = it->second;
    if (rate != 0) {
      double capacity = static_cast<double>(rate);
      if (inserted || entry.refilled_at == Clock::time_point{}) {
        entry.tokens = capacity;
      } else {
        double elapsed = std::chrono::duration<double>(now - entry.refilled_at).count();
        entry.tokens = std::min(capacity, entry.tokens + elapsed * capacity);
      }
      entry.refilled_at = now;
    }
    if (max_connections != 0 && entry.connections >= max_connections) {
      ticket.verdict = Verdict::kTooManyFromAddress;
    } else if (rate != 0 && entry.tokens < 1.0) {
      ticket.verdict = Verdict::kRateExceeded;
    } else {
      if (rate != 0) entry.tokens -= 1.0;
      ++entry.connections;
      ticket.holds_address = true;
    }
    if (ticket.verdict != Verdict::kAdmit) {
      if (entry.connections == 0 && rate == 0) addresses_.erase(it);
      return ticket;
    }
  }
  pending_.fetch_add(1, std::memory_order_relaxed);
  ticket.holds_pending = true;
  return ticket;
}

void Admission::EndHandshake(Ticket& ticket) {
  if (!ticket.holds_pending) return;
  ticket.holds_pending = false;
  pending_.fetch_sub(1, std::memory_order_relaxed);
}

void Admission::Release(Ticket& ticket, const sockaddr* peer) {
  EndHandshake(ticket);
  if (!ticket.holds_address) return;
  ticket.holds_address = false;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = addresses_.find(KeyOf(peer));
  if (it == addresses_.end()) return;
  if (it->second.connections > 0) --it->second.connections;
  // Without a rate the entry only counts connections: forget the address at zero.
  if (it->second.connections == 0 && rate_per_address_.load(std::memory_order_relaxed) == 0) {
    addresses_.erase(it);
  }
}

size_t Admission::tracked_addresses() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return addresses_.size();
}

void Admission::PruneLocked(Clock::time_point now) {
  admits_since_prune_ = 0;
  for (auto it = addresses_.begin(); it != addresses_.end();) {
    // After a second without connections the bucket is full again: the entry says nothing.
    bool idle =
        it->second.connections == 0 && now - it->second.refilled_at >= std::chrono::seconds(1);
    it = idle ? addresses_.erase(it) : std::next(it);
  }
}

}  // namespace wsgate
