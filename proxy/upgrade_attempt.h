// A WebSocket upgrade sent upstream: the connect → send → read-head → check part of the
// upstream stage, driven over the session's backend Endpoint.
//
// UpstreamAttempt (upstream_attempt.h) decides where to go: the pool, the sticky placement, the
// next backend within `retries`, and what each failed try means. UpgradeAttempt carries each try
// out: it connects (a plain-TCP backend as a DirectSocket, writing the request at once; TLS on a
// bufferevent), sends the upgrade request, reads the response head within
// timeouts.backend_handshake and checks it (Sec-WebSocket-Accept, extensions that were never
// offered), reporting the outcome for outlier detection. A failed try moves on to the next
// backend. It reports exactly one result to its owner, who holds the socket and the lease.
#pragma once

#include <string>

#include "config/config.h"
#include "proxy/balancer.h"
#include "proxy/core/libevent_ptr.h"
#include "proxy/endpoint.h"
#include "proxy/http/body_framer.h"
#include "proxy/http/handshake.h"
#include "proxy/http/head_parser.h"
#include "proxy/upstream_attempt.h"

namespace wsgate {

class UpgradeAttemptOwner {
 public:
  // The request is about to reach a backend, which may call the connections API at once.
  virtual void OnUpgradeSending() = 0;
  // |response| is a valid 101 (its head is still at the front of the backend's input).
  virtual void OnUpgradeAccepted(const http::HeadView& response,
                                 const http::UpstreamVerdict& verdict) = 0;
  // The backend answered without upgrading; the head is still in its input and the body, framed
  // as |framing|, follows.
  virtual void OnUpgradeRefused(const http::HeadView& response, const http::Framing& framing,
                                const std::string& reason) = 0;
  // No backend gave a usable answer: the client gets |status| (502, 503 or 504).
  virtual void OnUpgradeFailed(int status, const std::string& reason,
                               const std::string& extra_header) = 0;
  // "address:port" of the client, for log lines.
  virtual std::string ClientText() const = 0;

 protected:
  ~UpgradeAttemptOwner() = default;
};

class UpgradeAttempt {
 public:
  // |placement| has placed the request; |backend| and |lease| are the owner's slots for the
  // socket and the backend being tried; all outlive this object, as does |config|.
  UpgradeAttempt(UpgradeAttemptOwner& owner, event_base* base, const config::ProxyConfig& config,
                 UpstreamAttempt& placement, Endpoint& backend, BackendLease& lease,
                 std::string request, std::string expected_accept);
  UpgradeAttempt(const UpgradeAttempt&) = delete;
  UpgradeAttempt& operator=(const UpgradeAttempt&) = delete;

  // Try the first backend (and the next ones as tries fail) until one outcome is reported.
  void Start();
  // Stop every callback and timer (the owner closes the socket). Idempotent.
  void Stop();
  bool stopped() const { return phase_ == Phase::kStopped; }
  // The request went out on the current try: an answer is awaited.
  bool request_sent() const { return phase_ == Phase::kAwaitingResponse; }

 private:
  friend struct UpgradeAttemptCallbacks;
  enum class Phase { kIdle, kConnecting, kAwaitingResponse, kStopped };

  void TryNextBackend();
  void ConnectDirect();
  void OnConnected();
  void OnTryFailed(AttemptFailure failure, std::string_view detail = {});
  void OnRead();
  void OnEvent(short what);
  void OnTimer();
  void HandleResponseHead();
  void FailBadResponse(const std::string& reason);  // 502, counted as a bad_response
  void ArmTimer(config::Duration after);
  void Report() { phase_ = Phase::kStopped; }  // one outcome only: stop before telling the owner

  UpgradeAttemptOwner& owner_;
  event_base* base_;
  const config::ProxyConfig& config_;
  UpstreamAttempt& placement_;
  Endpoint& backend_;
  BackendLease& lease_;
  std::string request_;
  std::string expected_accept_;
  http::HeadParser response_parser_;
  EventPtr timer_;
  Phase phase_ = Phase::kIdle;
};

}  // namespace wsgate
