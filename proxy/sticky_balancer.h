// balance: sticky — consistent hashing with bounded loads. Pure; no libevent.
//
// Algorithm: weighted rendezvous (highest-random-weight) hashing, with the bounded-loads rule of
// Mirrokni, Thorup and Zadimoghaddam ("Consistent Hashing with Bounded Loads", 2018).
//
// For a request key k every backend b gets a score derived only from (HashKey(k), HashKey(b.id))
// and b.weight; backends are visited in descending score and the first one that may take the
// connection (see Unavailable()) and is under its load bound wins.
//
// Why rendezvous rather than a ring (ketama) or Maglev:
//   * O(N) per pick with no ring or lookup table to build, store or rebuild on every reload,
//     health flip or drain — a pool is tens of backends, so N hash mixes are cheaper than a
//     cache miss into a large ring;
//   * minimal disruption by construction: a key only moves when its top-scoring backend changes,
//     so adding a backend moves exactly the keys the new one now wins (all of them TO it), and
//     removing one moves only its own keys, each to its own next-highest scorer;
//   * exact weights: with score = -w / ln(u), u uniform in (0,1), backend b is the winner with
//     probability w_b / sum(w) exactly (the scores are exponential races), with no virtual-node
//     quantisation error;
//   * the descending-score order gives a natural, stable overflow / failover sequence per key,
//     which is what bounded loads and "skip unavailable" need.
//
// Determinism: the choice depends only on the key hash, the backends' ids, weights and active
// counts (never on their order in the vector, the time, or the process). HashKey is fixed
// (FNV-1a 64 + splitmix64 finalizer, no seed) and the score uses a logarithm computed with
// basic IEEE-754 double operations only (no libm), so every wsgate instance, on every machine,
// maps a key to the same backend.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "proxy/balancer.h"
#include "proxy/http/head_parser.h"

namespace wsgate {

// Stable 64-bit hash of |key|: FNV-1a 64 followed by the splitmix64 finalizer. Identical across
// processes, machines and runs; changing it remaps every sticky key, so the unit tests pin it.
uint64_t HashKey(std::string_view key);

// The identity a backend is hashed by: its id, or its address when the id is empty.
std::string_view BackendHashIdentity(const Backend& backend);

// Weighted rendezvous score of a backend (identity hash |id_hash|, weight |weight|) for the key
// hashed to |key_hash|: -weight / ln(u), u in (0,1) from mixing both hashes. Always > 0; a weight
// of 0 is treated as 1 (the configuration only allows 1..1000).
double RendezvousScore(uint64_t key_hash, uint64_t id_hash, uint32_t weight);

// Consistent hashing with bounded loads over weighted rendezvous hashing.
//
// Bound (load_factor c > 0): let A be the backends available for this request (not
// Unavailable(): not already tried, draining, unhealthy or ejected), T the sum of their active
// counts and W the sum of their weights. Backend i in A may take the connection only while
//     active_i < ceil(c * (T + 1) * w_i / W)
// (equivalently active_i * W < c * (T + 1) * w_i), i.e. after placing it, no backend holds more
// than c times its weighted share of the load, the new connection included. Backends are tried
// in descending score and the first under its bound wins, so a key overflows to its own
// next-highest scorer, deterministically. Values of c in (0, 1) are raised to 1 (with c >= 1 the
// bounds sum to more than T, so some available backend is always under its bound); c == 0
// (or negative / NaN) means unbounded: the highest-scoring available backend always wins.
//
// Keyless requests (request.has_key == false) go to the configured fallback: least_conn,
// round_robin, or reject (Pick returns -1 and the session answers 400; see rejects_keyless()).
class StickyBalancer final : public Balancer {
 public:
  explicit StickyBalancer(const config::StickyConfig& config);

  int Pick(std::vector<BackendPtr>& backends, const PickRequest& request) override;
  using Balancer::Pick;

  // True if keyless requests are rejected rather than balanced by a fallback.
  bool rejects_keyless() const { return fallback_ == nullptr; }

  // The effective load factor (0 = unbounded).
  double load_factor() const { return load_factor_; }

 private:
  struct Candidate {
    double score;
    uint64_t id_hash;
    size_t index;
  };

  double load_factor_;
  std::unique_ptr<Balancer> fallback_;  // null: reject keyless requests
  std::vector<Candidate> scratch_;      // reused between picks to avoid allocating
};

// Cookie-safe opaque token naming |backend| (for sticky.insert_cookie): 16 lowercase hex digits
// of HashKey("wsgate-backend:" + identity). Stable across instances and reloads; being a hash, it
// does not reveal the address (nor the configured id).
std::string OpaqueBackendId(const Backend& backend);

// Index of the backend whose OpaqueBackendId() is |token|, or -1 (also for malformed tokens).
int FindByOpaqueId(const std::vector<BackendPtr>& backends, std::string_view token);

// Sticky placement for one request of a sticky pool: fill |pick| with the key's hash and
// |*preferred| with the backend the insert_cookie names (-1 if none). False when the key is
// missing and the pool's fallback is reject.
bool PlaceSticky(const http::HeadView& request, const config::PoolConfig& pool,
                 const std::vector<BackendPtr>& backends, const std::string& client_ip,
                 std::string_view path, PickRequest* pick, int* preferred);

// "Set-Cookie: <insert_cookie>=<opaque id>; ..." CRLF for a sticky pool that inserts a cookie,
// else empty.
std::string StickyCookieLine(const config::PoolConfig& pool, const Backend& backend);

}  // namespace wsgate
