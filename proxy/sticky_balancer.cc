// Weighted rendezvous hashing with bounded loads; see sticky_balancer.h for the algorithm choice.
#include "proxy/sticky_balancer.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http/request_key.h"

// The scores must be bit-identical on every machine: forbid fused multiply-add contraction
// (GCC already does not contract in ISO C++ mode; clang does by default where FMA exists).
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

namespace wsgate {

namespace {

constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;
// Salt so that a backend's identity hash and a key hash of the same string do not cancel out.
constexpr uint64_t kBackendSalt = 0x6a09e667f3bcc909ULL;

// splitmix64 (Steele, Lea, Flood): add the golden gamma, then the variant-13 finalizer. A
// bijection on 64 bits with full avalanche, and no fixed point at 0.
uint64_t Mix64(uint64_t x) {
  uint64_t z = x + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint32_t EffectiveWeight(uint32_t weight) { return weight == 0 ? 1 : weight; }

// Natural logarithm of x in (0, 1) from +, -, *, / and the exact frexp only, so that the result
// is the same bit pattern everywhere (libm's log may differ in the last place between versions
// and platforms, which could flip two nearly equal scores on different instances).
// x = m * 2^e with m in [sqrt(1/2), sqrt(2)); ln(m) = 2 atanh(s), s = (m - 1) / (m + 1),
// |s| <= 0.1716, so the odd series up to s^21 is accurate to well under 1e-16 relative.
double PortableLog(double x) {
  constexpr double kSqrtHalf = 0.70710678118654752440;
  constexpr double kLn2Hi = 6.93147180369123816490e-01;  // fdlibm split of ln(2)
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  int exponent = 0;
  double m = std::frexp(x, &exponent);  // m in [0.5, 1)
  if (m < kSqrtHalf) {
    m *= 2.0;
    --exponent;
  }
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double p = 1.0 / 21.0;
  for (int k = 9; k >= 0; --k) p = p * s2 + 1.0 / static_cast<double>(2 * k + 1);
  const double e = static_cast<double>(exponent);
  return e * kLn2Hi + (2.0 * s * p + e * kLn2Lo);
}

// active_i < ceil(c * (T + 1) * w_i / W), evaluated as active_i * W < c * (T + 1) * w_i.
bool UnderBound(int64_t active, uint32_t weight, double load_factor, int64_t total_active,
                uint64_t total_weight) {
  const double lhs = static_cast<double>(active) * static_cast<double>(total_weight);
  const double rhs = load_factor * static_cast<double>(total_active + 1) *
                     static_cast<double>(EffectiveWeight(weight));
  return lhs < rhs;
}

std::unique_ptr<Balancer> MakeFallback(config::StickyConfig::Fallback fallback) {
  switch (fallback) {
    case config::StickyConfig::Fallback::kRoundRobin:
      return MakeBalancer(config::Balance::kRoundRobin);
    case config::StickyConfig::Fallback::kReject:
      return nullptr;
    case config::StickyConfig::Fallback::kLeastConn:
      break;
  }
  return MakeBalancer(config::Balance::kLeastConn);
}

double EffectiveLoadFactor(double load_factor) {
  if (!(load_factor > 0.0)) return 0.0;  // 0, negative or NaN: unbounded
  return std::max(load_factor, 1.0);
}

}  // namespace

uint64_t HashKey(std::string_view key) {
  uint64_t h = kFnvOffsetBasis;
  for (char c : key) {
    h ^= static_cast<uint8_t>(c);
    h *= kFnvPrime;
  }
  return Mix64(h);
}

std::string_view BackendHashIdentity(const Backend& backend) {
  return backend.id.empty() ? std::string_view(backend.address) : std::string_view(backend.id);
}

double RendezvousScore(uint64_t key_hash, uint64_t id_hash, uint32_t weight) {
  const uint64_t h = Mix64(key_hash ^ Mix64(id_hash ^ kBackendSalt));
  // 52 random bits plus one half: exactly representable, u in [2^-53, 1 - 2^-53].
  const double u = (static_cast<double>(h >> 12) + 0.5) * 0x1.0p-52;
  return static_cast<double>(EffectiveWeight(weight)) / -PortableLog(u);
}

StickyBalancer::StickyBalancer(const config::StickyConfig& config)
    : load_factor_(EffectiveLoadFactor(config.load_factor)),
      fallback_(MakeFallback(config.fallback)) {}

int StickyBalancer::Pick(std::vector<BackendPtr>& backends, const PickRequest& request) {
  if (!request.has_key) return fallback_ != nullptr ? fallback_->Pick(backends, request) : -1;

  // Total order on candidates that does not depend on their position in |backends|: score, then
  // identity hash, then identity and address (index only for exact duplicates).
  auto higher = [&backends](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.id_hash != b.id_hash) return a.id_hash > b.id_hash;
    const Backend& x = *backends[a.index];
    const Backend& y = *backends[b.index];
    if (int c = BackendHashIdentity(x).compare(BackendHashIdentity(y)); c != 0) return c < 0;
    if (int c = x.address.compare(y.address); c != 0) return c < 0;
    return a.index < b.index;
  };

  scratch_.clear();
  int64_t total_active = 0;
  uint64_t total_weight = 0;
  size_t best = 0;
  for (size_t i = 0; i < backends.size(); ++i) {
    if (Unavailable(backends, request, i)) continue;
    const Backend& b = *backends[i];
    const uint64_t id_hash = HashKey(BackendHashIdentity(b));
    scratch_.push_back({RendezvousScore(request.key_hash, id_hash, b.weight), id_hash, i});
    total_active += b.active;
    total_weight += EffectiveWeight(b.weight);
    if (scratch_.size() > 1 && higher(scratch_.back(), scratch_[best])) best = scratch_.size() - 1;
  }
  if (scratch_.empty()) return -1;

  const Candidate top = scratch_[best];
  auto under = [&](const Candidate& c) {
    const Backend& b = *backends[c.index];
    return UnderBound(b.active, b.weight, load_factor_, total_active, total_weight);
  };
  if (load_factor_ == 0.0 || under(top)) return static_cast<int>(top.index);

  // The favourite is full: walk the key's own preference order.
  std::sort(scratch_.begin(), scratch_.end(), higher);
  for (const Candidate& c : scratch_) {
    if (under(c)) return static_cast<int>(c.index);
  }
  // Unreachable with load_factor >= 1 (the bounds sum past T); stay sticky rather than fail.
  return static_cast<int>(top.index);
}

std::string OpaqueBackendId(const Backend& backend) {
  std::string input = "wsgate-backend:";
  input.append(BackendHashIdentity(backend));
  const uint64_t h = HashKey(input);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string token(16, '0');
  for (size_t i = 0; i < 16; ++i) token[i] = kHex[(h >> (60 - 4 * i)) & 0xf];
  return token;
}

int FindByOpaqueId(const std::vector<BackendPtr>& backends, std::string_view token) {
  if (token.size() != 16) return -1;
  for (char c : token) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return -1;
  }
  for (size_t i = 0; i < backends.size(); ++i) {
    if (backends[i] != nullptr && OpaqueBackendId(*backends[i]) == token) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

bool PlaceSticky(const http::HeadView& request, const config::PoolConfig& pool,
                 const std::vector<BackendPtr>& backends, const std::string& client_ip,
                 std::string_view path, PickRequest* pick, int* preferred) {
  *preferred = -1;
  if (pool.balance != config::Balance::kSticky) return true;
  const config::StickyConfig& sticky = pool.sticky;
  std::string key;
  if (http::ExtractStickyKey(request, sticky, client_ip, path, &key)) {
    pick->has_key = true;
    pick->key_hash = HashKey(key);
  } else if (sticky.fallback == config::StickyConfig::Fallback::kReject) {
    return false;
  }
  std::string_view cookie;
  if (!sticky.insert_cookie.empty() && http::FindCookie(request, sticky.insert_cookie, &cookie)) {
    *preferred = FindByOpaqueId(backends, cookie);
  }
  return true;
}

std::string StickyCookieLine(const config::PoolConfig& pool, const Backend& backend) {
  if (pool.balance != config::Balance::kSticky || pool.sticky.insert_cookie.empty()) return {};
  // The value is opaque and never the address.
  return "Set-Cookie: " + pool.sticky.insert_cookie + "=" + OpaqueBackendId(backend) +
         "; Path=/; HttpOnly; SameSite=Lax\r\n";
}

}  // namespace wsgate
