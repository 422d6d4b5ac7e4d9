// auth ($connect): what wsgate asks auth.url before connecting upstream, and a small cache of
// its answers (auth.cache_ttl). The session does the asking (Session::StartAuth); this file
// builds the request and holds the cache. Pure apart from the clock: unit-tested.
//
// The auth request is a GET to auth.url carrying the client's auth.forward_headers (every
// field of each name, in order: the backend gets them all too), plus X-Original-Uri (the
// request target as routed, i.e. normalised), X-Original-Method, X-Forwarded-For and the
// connection's X-Wsgate-Connection-Id. A 2xx answer lets
// the client through with auth.copy_headers added upstream; 401/403 is relayed; anything else,
// or no answer within auth.timeout, is a 503.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "config/config.h"
#include "proxy/connections/identity.h"
#include "proxy/http/head_parser.h"

namespace wsgate {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// Headers of the auth request for |request| (the client's upgrade) from |client_ip|, which
// will be connection |connection_id| if allowed (sent as X-Wsgate-Connection-Id).
// |target| is the request target as routed (normalised), sent as X-Original-Uri.
HeaderList AuthRequestHeaders(const http::HeadView& request, const config::AuthConfig& auth,
                              const std::string& client_ip, const std::string& connection_id,
                              std::string_view target);

// The cache key: exactly what AuthRequestHeaders sends but the per-connection parts (method,
// the normalised |target| and every forwarded header value; client_ip and the connection id
// are not part of it, so a decision must not depend on them when caching is on).
std::string AuthCacheKey(const http::HeadView& request, const config::AuthConfig& auth,
                         std::string_view target);

struct AuthDecision {
  int status = 0;                // the auth service's answer: 2xx, 401 or 403
  HeaderList copy_headers;       // for 2xx: added to the upstream request
  std::string www_authenticate;  // for 401: relayed to the client
  ConnectionIdentity identity;   // for 2xx: X-Wsgate-User, -Tags and -Expires
};

// One worker's cache of auth decisions; entries live for the TTL given at Put, at most
// |capacity| of them (the oldest go first).
class AuthCache {
 public:
  using Clock = std::chrono::steady_clock;
  const AuthDecision* Find(const std::string& key, Clock::time_point now);
  void Put(const std::string& key, AuthDecision decision, Clock::time_point expires,
           size_t capacity);
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    AuthDecision decision;
    Clock::time_point expires;
  };
  std::unordered_map<std::string, Entry> entries_;
  std::deque<std::string> order_;  // insertion order, for eviction
};

}  // namespace wsgate
