// A WebSocket upgrade sent upstream: the connect → send → read-head → check part of the
// upstream stage, driven over the session's backend Endpoint.
//
// UpstreamAttempt (upstream_attempt.h) decides where to go: the pool, the sticky placement, the
// next backend within `retries`, and what each failed try means. UpgradeAttempt carries each try
// out: it connects (a plain-TCP backend as a DirectSocket, writing the request at once; TLS on a
// bufferevent), sends the upgrade request, reads the response head within
// timeouts.backend_handshake and checks it (Sec-WebSocket-Accept, extensions that were never
// offered), reporting the outcome for outlier detection. A failed try moves on to the next
// backend. A refused upgrade's answer is relayed to the client as its framing says (a length,
// chunks, or until the backend closes). It reports one outcome to its owner, who holds the
// sockets and the lease.
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
  // The backend answered a valid 101 (choosing |subprotocol|, maybe empty); its head, with the
  // sticky cookie if the pool sets one, is in the client's output already.
  virtual void OnUpgradeAccepted(const http::UpstreamVerdict& verdict,
                                 const std::string& subprotocol) = 0;
  // The backend answered |status| without upgrading. The attempt now relays that answer to the
  // client (its head, then its body as its framing says); nothing the client sends may reach it.
  virtual void OnUpgradeRefused(int status, const std::string& reason) = 0;
  // The refused answer's relay is over. |cut_short| is empty when the body ended as framed or the
  // backend closed (inside a length or chunked body the client then gets fewer bytes than
  // announced, and sees it cut short), else why it stopped: broken chunked framing, or no
  // progress for timeouts.backend_handshake.
  virtual void OnRefusalRelayed(const std::string& cut_short) = 0;
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
  // socket and the backend being tried; |client| is where a refused answer goes. All outlive
  // this object, as does |config|.
  UpgradeAttempt(UpgradeAttemptOwner& owner, event_base* base, const config::ProxyConfig& config,
                 UpstreamAttempt& placement, Endpoint& client, Endpoint& backend,
                 BackendLease& lease, std::string request, std::string expected_accept);
  UpgradeAttempt(const UpgradeAttempt&) = delete;
  UpgradeAttempt& operator=(const UpgradeAttempt&) = delete;

  // Resuming a live session on another backend (issue 19): nothing reaches the client. The
  // 101 head is consumed, not relayed; any other answer is reported by OnUpgradeRefused and
  // not relayed either (no OnRefusalRelayed follows).
  void set_resuming() { resuming_ = true; }
  // Try the first backend (and the next ones as tries fail) until one outcome is reported.
  void Start();
  // Stop every callback and timer (the owner closes the socket). Idempotent.
  void Stop();
  bool stopped() const { return phase_ == Phase::kStopped; }
  // The client's output drained below the watermark: a paused refused answer goes on.
  void OnClientWritable();

 private:
  friend struct UpgradeAttemptCallbacks;
  enum class Phase { kIdle, kConnecting, kAwaitingResponse, kRelayingRefusal, kStopped };

  void TryNextBackend();
  void ConnectDirect();
  void OnConnected();
  void OnTryFailed(AttemptFailure failure, std::string_view detail = {});
  void OnRead();
  void OnEvent(short what);
  void OnTimer();
  void HandleResponseHead();
  void FailBadResponse(const std::string& reason);  // 502, counted as a bad_response
  void RelayUpgradedHead(bool require_no_context);
  void StartRelay(const http::HeadView& response, const http::Framing& framing);
  void RelayBody();
  void EndRelay(const std::string& cut_short);
  void ArmTimer(config::Duration after);
  void Report() { phase_ = Phase::kStopped; }  // one outcome only: stop before telling the owner

  UpgradeAttemptOwner& owner_;
  event_base* base_;
  const config::ProxyConfig& config_;
  UpstreamAttempt& placement_;
  Endpoint& client_;
  Endpoint& backend_;
  BackendLease& lease_;
  std::string request_;
  std::string expected_accept_;
  http::HeadParser response_parser_;
  BodyRelay refusal_body_;
  bool relay_paused_ = false;  // the client's output is full
  bool resuming_ = false;
  EventPtr timer_;
  Phase phase_ = Phase::kIdle;
};

}  // namespace wsgate
