// Moving a live session to another backend (pools[].migrate): the new backend's upgrade.
//
// A BackendMove places the session anew in the current configuration's pool (a reload or DNS
// discovery may have added backends since the session started), never on the backend being
// left and in a sticky key's order; replays the client's upgrade request with
// X-Wsgate-Resume: REASON; and accepts only a 101 with the subprotocol and extensions the
// session already uses. The Tunnel keeps the messages whole and in order meanwhile
// (tunnel_move.cc); the Session sequences the two (session_move.cc).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "metrics/metrics.h"
#include "proxy/balancer.h"
#include "proxy/core/event_loop.h"
#include "proxy/endpoint.h"
#include "proxy/http/handshake.h"
#include "proxy/runtime.h"
#include "proxy/upgrade_attempt.h"
#include "proxy/upstream_attempt.h"

namespace wsgate {

// What a new backend's 101 must agree to for the session to carry on there.
struct ResumeTerms {
  std::string subprotocol;
  bool permessage_deflate = false;
  bool other_extension = false;
  http::DeflateParams deflate;

  // The terms of an upgrade answered |verdict| choosing |subprotocol|.
  static ResumeTerms Of(const http::UpstreamVerdict& verdict, std::string subprotocol);
  // Whether a session on these terms can move at all. With permessage-deflate the client's
  // compressor keeps its sliding window across messages unless client_no_context_takeover was
  // agreed, and a new backend cannot inflate what refers to data it never saw.
  bool movable() const {
    return !other_extension && (!permessage_deflate || deflate.client_no_context_takeover);
  }
  // "" if |other| (the new backend's answer) matches, else how it differs.
  std::string Mismatch(const ResumeTerms& other) const;
};

class BackendMoveOwner {
 public:
  // The new backend answered a matching 101 on the target endpoint.
  virtual void OnMoveUpgraded() = 0;
  // No other backend could take the session (|result| says why; |why| for the log).
  virtual void OnMoveFailed(metrics::MigrationResult result, const std::string& why) = 0;
  // "address:port" of the client, for log lines.
  virtual std::string ClientText() const = 0;

 protected:
  ~BackendMoveOwner() = default;
};

class BackendMove final : public Deferrable, private UpgradeAttemptOwner {
 public:
  // |current| is the configuration generation to place in (kept alive while moving); |target|
  // is the free backend slot the new connection is made on; |client| is never written (the
  // attempt resumes). All references outlive this object.
  BackendMove(BackendMoveOwner& owner, event_base* base, RuntimePtr current,
              metrics::Registry& metrics, metrics::MigrationReason reason, Endpoint& client,
              Endpoint& target, const std::string& request, std::string expected_accept,
              const ResumeTerms& terms);
  BackendMove(const BackendMove&) = delete;
  BackendMove& operator=(const BackendMove&) = delete;
  ~BackendMove() override;

  // Try the backends of |pool| but |leaving|, as |sticky| orders them. May report at once.
  void Start(const std::string& pool, const PickRequest& sticky, const Backend* leaving);
  // Stop every callback (the owner closes the target socket). Idempotent.
  void Stop();

  metrics::MigrationReason reason() const { return reason_; }
  std::chrono::steady_clock::time_point started_at() const { return started_at_; }
  // The backend that answered the 101 (counted in its active until released).
  BackendLease& lease() { return lease_; }

  // The X-Wsgate-Resume value for |reason|.
  static const char* ResumeValue(metrics::MigrationReason reason);
  // |request| (an upgrade request head) with X-Wsgate-Resume: |reason| added.
  static std::string ResumeRequest(const std::string& request, metrics::MigrationReason reason);

 private:
  void OnUpgradeSending() override {}
  void OnUpgradeAccepted(const http::UpstreamVerdict& verdict,
                         const std::string& subprotocol) override;
  void OnUpgradeRefused(int status, const std::string& reason) override;
  void OnRefusalRelayed(const std::string& /*cut_short*/) override {}  // resuming: never
  void OnUpgradeFailed(int status, const std::string& reason,
                       const std::string& extra_header) override;
  std::string ClientText() const override { return owner_.ClientText(); }

  BackendMoveOwner& owner_;
  RuntimePtr runtime_;
  UpstreamAttempt placement_;
  BackendLease lease_;
  const ResumeTerms& terms_;
  metrics::MigrationReason reason_;
  std::chrono::steady_clock::time_point started_at_;
  UpgradeAttempt attempt_;
};

}  // namespace wsgate
