// The WebSocket path's second stage: from a client's valid upgrade request head to what goes
// upstream. It normalises the target (the one target that routing, auth, the sticky key, the
// access log and the backend all see), places the request (UpstreamAttempt::Place: route, pool,
// sticky key), and builds the upgrade request for the backend (forwarding fields, the
// connections API's id and callback URL, the headers the auth service vouches for stripped,
// deflate offers stripped as limits.compression says) and, when a route asks for it, what the
// auth hook is sent. No I/O: the session carries the plan out.
#pragma once

#include <sys/socket.h>

#include <string>
#include <string_view>

#include "config/config.h"
#include "proxy/connections/auth_hook.h"
#include "proxy/http/handshake.h"
#include "proxy/http/head_parser.h"
#include "proxy/upstream_attempt.h"

namespace wsgate {

// Who asks.
struct UpgradeClient {
  std::string_view connection_id;
  const sockaddr* peer = nullptr;
  bool tls = false;  // the listener terminates TLS
  // The connections API's base URL ("" when it is off): the backend gets the callback URL.
  std::string_view callback_base;
  bool auth_available = false;  // an auth hook can be asked on this worker
};

struct UpgradePlan {
  // A refusal for the client when status != 0 (nothing else is set then).
  int status = 0;
  std::string reason;
  std::string path;  // normalised, without the query
  std::string upstream_request;
  std::string expected_accept;
  bool authorize = false;  // ask the auth hook first, with these:
  HeaderList auth_headers;
  std::string auth_cache_key;  // empty: not cached
};

// |request| passed CheckClientHandshake as |handshake|; |placement| is placed on success.
UpgradePlan PlanUpgrade(const http::HeadView& request, const http::ClientHandshake& handshake,
                        const config::ProxyConfig& config, const UpgradeClient& client,
                        UpstreamAttempt& placement);

}  // namespace wsgate
