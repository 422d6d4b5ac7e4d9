// One client connection's lifecycle: the only owner of its client and backend sockets.
//
// A Session sequences the rooms that do the work, each in its own file: ClientHandshake (the
// request head judged, the upgrade planned by PlanUpgrade), the auth hook (session_api.cc),
// UpgradeAttempt (connect, send, check the 101, retry; relay a refusal), then Tunnel (frames
// both ways); or the HttpForwarder for plain HTTP. It answers refusals (with a lingering close),
// drains on GoAway, and is the one place that finishes: metrics, the access record,
// on_disconnect, and EventLoop::DeferDelete. Every libevent callback is a static trampoline that
// returns at once if its object has finished, so no callback ever runs on a freed Session.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/access_log.h"
#include "proxy/admission.h"
#include "proxy/backend_connection_pool.h"
#include "proxy/backend_move.h"
#include "proxy/balancer.h"
#include "proxy/client_handshake.h"
#include "proxy/connection_meters.h"
#include "proxy/connections/hook_call.h"
#include "proxy/connections/live_connection.h"
#include "proxy/connections/registry.h"
#include "proxy/core/event_loop.h"
#include "proxy/core/libevent_ptr.h"
#include "proxy/endpoint.h"
#include "proxy/http/head_parser.h"
#include "proxy/http_exchange.h"
#include "proxy/lingering_close.h"
#include "proxy/router.h"
#include "proxy/runtime.h"
#include "proxy/session_context.h"
#include "proxy/session_registry.h"
#include "proxy/tunnel.h"
#include "proxy/upgrade_attempt.h"
#include "proxy/upstream_attempt.h"

namespace wsgate {

class Session final : public Deferrable,
                      public LiveConnection,
                      public HttpForwarderOwner,
                      private TunnelOwner,
                      private UpgradeAttemptOwner,
                      private LingeringCloseOwner,
                      private BackendMoveOwner {
 public:
  // Take ownership of the accepted socket |fd|.
  Session(SessionContext& context, evutil_socket_t fd, const sockaddr* peer,
          std::string listener_name);
  ~Session() override;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // What Admission granted this connection; given back when the handshake and the session end.
  void set_admission(const Admission::Ticket& ticket) { admission_ = ticket; }
  // Start reading the request head. May finish the session at once (allocation failure).
  void Start();
  // Answer |status| at once and close (used when over max_connections).
  void StartRejected(int status, const std::string& reason, const std::string& extra_header,
                     metrics::HandshakeResult result);

  bool finished() const { return state_ == State::kFinished; }
  bool upgraded() const { return state_ == State::kSpliced; }
  bool going_away() const { return going_away_; }
  const std::string& id() const { return id_; }
  // The sticky routing key's hash, if this session was placed by one.
  bool sticky_key(uint64_t* hash) const {
    *hash = upstream_.pick().key_hash;
    return upstream_.pick().has_key;
  }
  // Write an interim access-log line if the last one is older than |interval|.
  void MaybeLogInterim(std::chrono::steady_clock::duration interval);

  // Plain HTTP: serving requests now; EndKeepAlive closes once the request in flight is done.
  bool serving_http() const { return state_ == State::kHttp; }
  void EndKeepAlive() {
    if (state_ == State::kHttp) http_->Drain();
  }

  // The backend this session uses, or null before one is chosen.
  const Backend* backend() const { return chosen_backend_.get(); }

  // Close gracefully: flush everything already received from either side, then send the client
  // |code| and the backend 1001, each at a frame boundary, and wait up to timeouts.close for the
  // close handshakes. A session still in its handshake is answered 503.
  void GoAway(uint16_t code, const std::string& reason);

  // Move to another backend of the pool while the client stays connected (pools[].migrate;
  // session_move.cc). False if this session cannot move now (not such a pool, not spliced,
  // closing, already moving, or a negotiated extension that cannot move).
  bool Migrate(metrics::MigrationReason reason);
  bool moving() const { return resume_ && resume_->move; }
  // Whether Migrate may be worth calling now (it may still decline).
  bool may_move() const {
    return state_ == State::kSpliced && resume_ && !resume_->move &&
           !resume_->unsupported_counted && !going_away_ && !tunnel_->closing() &&
           std::chrono::steady_clock::now() >= resume_->retry_at;
  }
  // How soon a session that found no backend to move to tries again.
  static constexpr std::chrono::seconds kMoveRetryInterval{5};

  // --- Connections API (docs/connections-api.md); the owning loop's thread only. Each returns
  // the HTTP status to answer.
  // Send |payload| (moved out) to the client as one text or binary message, between backend
  // messages: 200 queued, 410 closing, 429 the client's output is over the write watermark.
  int Push(evbuffer* payload, bool text) override;
  // Close both sides with |code| and |reason| (already validated): 200, or 410 if closing.
  int CloseByApi(uint16_t code, const std::string& reason) override;
  int SetTag(const std::string& tag, bool present, std::string* tags_json) override;
  int64_t expires_at() const override { return identity_ ? identity_->expires_at : 0; }
  void Revalidate() override;
  // The connection as a JSON object.
  std::string InfoJson() const override;
  bool ended() const override { return finished(); }

 private:
  enum class State {
    kReadingRequest,
    kAuthorizing,       // waiting for the auth hook's answer
    kUpstream,          // the upgrade goes to a backend (UpgradeAttempt), awaiting its answer
    kRelayingResponse,  // backend refused the upgrade; relaying its HTTP answer, then close
    kSpliced,           // WebSocket frames flow both ways
    kLingering,         // an HTTP answer was sent; drop input until the client closes
    kHttp,              // plain HTTP requests, served by http_
    kFinished,
  };
  friend class SessionRegistry;

  // Handshake.
  bool Attach();  // take the client socket's callbacks; false (finished) without a socket or timer
  void ReadRequestHead();  // (again, after plain HTTP requests) within timeouts.handshake
  void OnClientRead();
  void OnClientEvent(short what);
  void HandleRequestHead();
  void Reject(int status, const std::string& reason, const std::string& extra_header = {});
  void OnTlsHandshakeFailed(metrics::TlsFailure failure, const std::string& detail);
  void BeginLingeringClose();
  void OnLingerEnded() override { Finish(ClosedBy::kProxy); }
  // auth hook.
  void StartAuth(const HeaderList& headers, std::string cache_key);
  void OnAuthAnswer(evhttp_request* response);
  void ApplyAuthDecision(const AuthDecision& decision);
  // limits.max_connections_per_user: count the user in (on this instance, then fleet-wide with
  // `cluster`), then connect upstream; or refuse with 429.
  void AdmitUserThenConnect();
  void RejectOverUserLimit();
  void ReleaseUser();
  void OnRevalidated(evhttp_request* response);
  static int64_t UnixNow();
  int64_t RevalidateSeconds() const;

  // Plain HTTP (not an upgrade): http_ serves it until the connection ends or upgrades.
  void StartHttp();
  void OnUpgradeRequest() override;
  void OnHttpEnd(bool linger, ClosedBy closed_by) override;

  // Upstream.
  void ConnectUpstream();
  void OnUpgradeSending() override;
  void OnUpgradeAccepted(const http::UpstreamVerdict& verdict,
                         const std::string& subprotocol) override;
  void OnUpgradeRefused(int status, const std::string& reason) override;
  void OnRefusalRelayed(const std::string& cut_short) override;
  void OnUpgradeFailed(int status, const std::string& reason,
                       const std::string& extra_header) override;
  const config::PoolConfig& pool_config() const { return upstream_.pool_config(); }

  // The tunnel: frames both ways after a valid 101 (proxy/tunnel.h).
  void StartTunnel(const http::UpstreamVerdict& negotiated);
  void OnTunnelEnded() override;
  std::string ClientText() const override { return peer_text(); }
  // Moving (session_move.cc).
  void KeepForMoves(const http::UpstreamVerdict& negotiated);
  bool OnBackendLost() override;
  void OnMoveUpgraded() override;
  void OnMoveFailed(metrics::MigrationResult result, const std::string& why) override;
  void OnBackendReplaced(std::chrono::steady_clock::duration pause) override;
  void EndMove(metrics::MigrationResult result);
  void OnClientWritable();
  void RegisterConnection();
  void UnregisterConnection();
  void NotifyDisconnect(const AccessRecord& record);  // on_disconnect
  const char* StateName() const;                      // for the connections API

  // Timers and teardown.
  void ArmTimer(config::Duration after);
  void OnTimer();
  void Finish(ClosedBy closed_by);
  AccessRecord MakeAccessRecord(bool interim) const;
  void DropBackend();  // stop the attempt, close the backend socket, end the lease

  size_t high_watermark() const { return config().limits.write_buffer_high_watermark; }

  const config::ProxyConfig& config() const { return runtime_->config; }
  Pool& pool() { return upstream_.pool(); }

  SessionContext& context_;
  Admission::Ticket admission_;
  RuntimePtr runtime_;  // the generation this session started under
  std::string id_;      // 128 random bits, hex: unique across restarts and instances
  std::string path_;
  std::string subprotocol_;
  std::chrono::steady_clock::time_point last_access_line_;
  std::list<SessionPtr>::iterator self_;  // position in the registry
  State state_ = State::kReadingRequest;
  std::string listener_name_;
  bool client_tls_ = false;  // the listener terminates TLS
  bool access_line_ = true;  // false for failed TLS handshakes: scanners would flood the log
  sockaddr_in6
      peer_{};  // a sockaddr_in or sockaddr_in6 (sockaddr_storage would cost 100 bytes more)
  // "address:port" of the client, made when needed (logs, API): not kept per connection.
  std::string peer_text() const;

  Endpoint client_;
  Endpoint backend_;  // the first backend's socket (moves alternate with Resume::other)
  EventPtr timer_;    // the handshake's deadlines; the tunnel has its own

  // What only the handshake needs. Freed once spliced, so a long-lived connection carries none
  // of it; present in every state before that.
  struct Handshake final : Deferrable {
    explicit Handshake(const config::ProxyConfig& config) : request(config) {}
    ClientHandshake request;
    std::string upstream_request;
    std::string expected_accept;
    // migrate pools: copies of the two above, replayed on a move.
    std::string resume_request;
    std::string resume_accept;
    std::unique_ptr<HookCall> auth_call;
    std::string auth_cache_key;
    std::shared_ptr<int> gate_token;  // while the fleet's user gate is asked; dies with us
    PushQueue pushes;  // from the connections API during the upgrade: sent after the 101
    std::unique_ptr<UpgradeAttempt> attempt;
  };
  std::unique_ptr<Handshake> handshake_;
  UpstreamAttempt upstream_;     // route, pool, sticky key; the tries while connecting
  BackendLease chosen_backend_;  // the backend currently assigned (counted in its active)

  std::unique_ptr<HttpForwarder> http_;
  bool served_http_ = false;  // its requests have their own access lines

  std::unique_ptr<Tunnel> tunnel_;  // once spliced; freed with the session, never before

  // pools[].migrate: what moving needs, kept from the 101 on (other pools carry none of it).
  struct Resume {
    std::string request;  // the upgrade request the first backend got
    std::string expected_accept;
    ResumeTerms terms;
    uint32_t moves = 0;
    bool unsupported_counted = false;
    std::chrono::steady_clock::time_point retry_at{};  // after no backend could take it
    Endpoint other;                     // the backend socket slot the tunnel is not using
    bool on_other = false;              // the tunnel uses |other|, and |backend_| is free
    std::unique_ptr<BackendMove> move;  // while moving
  };
  std::unique_ptr<Resume> resume_;
  bool going_away_ = false;

  bool registered_ = false;  // in the connections API's directory
  // From the auth hook's answer (X-Wsgate-User, -Tags, -Expires); null when it gave none.
  std::unique_ptr<ConnectionIdentity> identity_;
  bool user_counted_ = false;    // counted in ConnectionIndex::AddUser (released in Finish)
  bool directory_only_ = false;  // without an admin listener: in the directory, not the index
  // auth.revalidate_interval: what the hook is asked again, and the request out now.
  struct Revalidation {
    HeaderList headers;
    std::unique_ptr<HookCall> call;
  };
  std::unique_ptr<Revalidation> revalidation_;
  std::chrono::system_clock::time_point connected_at_;

  // Access log.
  std::chrono::steady_clock::time_point started_at_;
  int http_status_ = 0;                        // status answered to the client (101 when upgraded)
  ClosedBy closed_by_ = ClosedBy::kUndecided;  // before the tunnel (which decides its own)
  std::string reason_;
  std::string last_backend_;  // address of the backend used last, for the access log

  ConnectionMeters meters_;
  std::unique_ptr<LingeringClose> lingering_;  // once an answer ends the connection
};

}  // namespace wsgate
