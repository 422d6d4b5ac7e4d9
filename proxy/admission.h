// Stage 1, continued: may an accepted connection start a handshake at all?
//
// Per client address it bounds concurrent connections (limits.max_connections_per_ip) and the
// rate of new ones (limits.handshake_rate_per_ip, a token bucket); across the process it bounds
// handshakes in progress (limits.max_pending_handshakes), so slow senders cannot hold every slot.
// Connections are accepted on one thread and end on any worker, so the address table is guarded
// by a mutex: taken once when a connection opens and once when it closes, never per frame, and
// not at all while both per-address limits are off.
#pragma once

#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "config/config.h"

namespace wsgate {

class Admission {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Verdict { kAdmit, kTooManyPending, kTooManyFromAddress, kRateExceeded };

  // What an admitted connection holds; the session gives each back exactly once.
  struct Ticket {
    Verdict verdict = Verdict::kAdmit;
    bool holds_pending = false;  // counted in the handshakes in progress
    bool holds_address = false;  // counted in its address's connections
  };

  // At start and on reload; connections admitted before keep what their tickets say.
  void Configure(const config::LimitsConfig& limits);
  Ticket Admit(const sockaddr* peer, Clock::time_point now);
  void EndHandshake(Ticket& ticket);                   // spliced, or ended before that
  void Release(Ticket& ticket, const sockaddr* peer);  // the connection ended

  size_t pending() const { return pending_.load(std::memory_order_relaxed); }
  size_t tracked_addresses() const;

  // IPv4: the address. IPv6: its /64 (one host may hold a whole /64); v4-mapped as IPv4.
  using AddressKey = std::array<uint8_t, 9>;
  static AddressKey KeyOf(const sockaddr* peer);

 private:
  struct KeyHash {
    size_t operator()(const AddressKey& key) const;
  };
  struct Entry {
    uint64_t connections = 0;
    double tokens = 0;
    Clock::time_point refilled_at{};
  };
  void PruneLocked(Clock::time_point now);

  std::atomic<uint64_t> max_per_address_{0};
  std::atomic<uint64_t> rate_per_address_{0};
  std::atomic<uint64_t> max_pending_{0};
  std::atomic<size_t> pending_{0};

  mutable std::mutex mutex_;
  std::unordered_map<AddressKey, Entry, KeyHash> addresses_;
  size_t admits_since_prune_ = 0;
};

}  // namespace wsgate
