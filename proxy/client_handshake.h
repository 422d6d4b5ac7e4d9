// The WebSocket path's first stage, on the client's socket: the request head is parsed within
// limits and judged (RFC 6455): plain HTTP, a refusal (with its status and reason), or an
// upgrade, which PlanUpgrade turns into what goes upstream. No timers and no writes: the session
// owns the socket, the deadlines and the answer.
#pragma once

#include <event2/buffer.h>

#include <string>

#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/http/head_parser.h"
#include "proxy/upgrade_request.h"
#include "proxy/upstream_attempt.h"

namespace wsgate {

struct HeadJudgement {
  enum Outcome { kNeedMore, kRefused, kPlainHttp, kUpgrade } outcome = kNeedMore;
  // kRefused: what the client is answered.
  int status = 0;
  std::string reason;
  std::string extra_header;
  // kUpgrade: the plan; the head has been drained from the input. kPlainHttp leaves it there.
  UpgradePlan plan;
};

class ClientHandshake {
 public:
  explicit ClientHandshake(const config::ProxyConfig& config);
  // Read a new request (an upgrade after plain HTTP requests on the same connection).
  void Reset(const config::ProxyConfig& config);
  // Judge what |input| holds so far; |client| and |placement| are for planning an upgrade.
  HeadJudgement Read(evbuffer* input, const config::ProxyConfig& config,
                     const UpgradeClient& client, UpstreamAttempt& placement);

 private:
  http::HeadParser parser_;
};

// wsgate_handshakes_total's result for a refusal answered with |status|.
metrics::HandshakeResult HandshakeResultFor(int status);

}  // namespace wsgate
