// Plain HTTP/1.1 forwarding on a client connection that is not (or not yet) a WebSocket.
//
// The Session stays the owner of the client connection; an HttpForwarder only reads and writes
// it while the session is in its HTTP state, and tells the session through HttpForwarderOwner
// when the connection should end or a WebSocket upgrade request has arrived. It owns the backend
// connection of the exchange in flight and returns it to the loop's BackendConnectionPool only
// after both the request and the response completed cleanly.
//
// One request at a time: the next pipelined request is not parsed until the previous response
// has been sent, so answers go out strictly in order; bytes the client already sent stay in the
// client's input buffer, which the read watermark bounds to max_header_bytes meanwhile.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proxy/access_log.h"
#include "proxy/backend_connection_pool.h"
#include "proxy/balancer.h"
#include "proxy/core/libevent_ptr.h"
#include "proxy/http/body_framer.h"
#include "proxy/http/head_parser.h"
#include "proxy/runtime.h"
#include "proxy/upstream_attempt.h"

namespace wsgate {

struct SessionContext;

class HttpForwarderOwner {
 public:
  virtual ~HttpForwarderOwner() = default;
  // The next request on the connection is a WebSocket upgrade; its head is still buffered.
  virtual void OnUpgradeRequest() = 0;
  // The connection is done: close it after flushing (linger: wait for the client's EOF first).
  virtual void OnHttpEnd(bool linger, ClosedBy closed_by) = 0;
};

struct HttpClientInfo {
  std::string connection_id;
  std::string peer_text;  // "ip:port"
  std::string client_ip;
  std::string listener;
  bool client_tls = false;    // X-Forwarded-Proto / Forwarded say https
  bool peer_trusted = false;  // in trusted_proxies: its forwarding fields are kept
};

class HttpForwarder {
 public:
  HttpForwarder(SessionContext& context, RuntimePtr runtime, HttpForwarderOwner& owner,
                bufferevent* client, HttpClientInfo info);
  ~HttpForwarder();
  HttpForwarder(const HttpForwarder&) = delete;
  HttpForwarder& operator=(const HttpForwarder&) = delete;

  // Serve the request head buffered in the client's input (and the ones after it); the first
  // request's bytes started arriving at |first_request_at|.
  void Start(std::chrono::steady_clock::time_point first_request_at);
  // The session ends or takes the connection back: drop the backend, stop every callback.
  void Stop();

  // Client events, routed here by the session while it is in its HTTP state.
  void OnClientRead();
  void OnClientWritable();
  void OnClientEvent(short what);
  // GoAway: finish the exchange in flight, then close instead of reading another request.
  void Drain();

  uint64_t requests() const { return requests_; }

 private:
  enum class Phase { kIdle, kConnecting, kExchanging, kStopped };

  friend struct HttpForwarderCallbacks;
  void ParseRequest();
  bool PrepareRequest(const http::HeadView& request);  // false: answered with an error
  void ConnectBackend();
  void OnAttemptFailed(AttemptFailure failure);
  void SendRequest();
  void PumpRequestBody();
  void OnBackendRead();
  void OnBackendWritable();
  void OnBackendEvent(short what);
  bool HandleResponseHead();  // false: waiting for more, or failed
  void RelayResponseBody();
  void OnResponseComplete();
  void OnTimer();
  // A local answer (400, 413, 502, ...), sent only while nothing of a response went out yet;
  // otherwise the client connection is cut. Either way the connection ends.
  void Fail(int status, const std::string& reason, const std::string& extra_header = {});
  void BackendBroken(const std::string& why);  // 502; the backend connection is never reused
  void ReportOutcome(bool ok);                 // passive outlier detection
  void Record();                               // metrics and the access-log line
  void DropBackend();
  void ResetExchange();
  void ArmTimer(std::chrono::milliseconds after);
  void PauseClient(bool pause);
  void PauseBackend(bool pause);
  size_t high_watermark() const;
  const config::ProxyConfig& config() const { return runtime_->config; }

  SessionContext& context_;
  RuntimePtr runtime_;
  HttpForwarderOwner& owner_;
  bufferevent* client_;  // owned by the session
  HttpClientInfo info_;
  EventPtr timer_;
  Phase phase_ = Phase::kIdle;
  bool draining_ = false;
  uint64_t requests_ = 0;

  // The exchange in flight.
  std::optional<http::HeadParser> request_parser_;  // set once bytes of a request arrived
  std::chrono::steady_clock::time_point started_at_;
  std::chrono::steady_clock::time_point request_deadline_;
  std::optional<std::chrono::steady_clock::time_point> first_request_at_;
  std::string method_;
  std::string path_;
  bool head_request_ = false;
  bool client_http10_ = false;
  bool client_keep_alive_ = true;
  bool client_eof_ = false;
  http::Framing request_framing_;
  std::optional<http::ChunkedDecoder> request_chunks_;
  uint64_t request_left_ = 0;
  bool request_done_ = false;
  uint64_t bytes_in_ = 0;
  std::string upstream_head_;
  UpstreamAttempt upstream_;  // route, pool, sticky placement and retries of this request
  BackendLease backend_;
  BufferEventPtr backend_bev_;
  bool backend_reused_ = false;
  bool fresh_connection_only_ = false;  // a pooled connection proved stale: connect anew
  bool backend_eof_ = false;
  bool client_paused_ = false;
  bool backend_paused_ = false;

  std::optional<http::HeadParser> response_parser_;
  bool response_started_ = false;  // bytes of a response (interim or final) went to the client
  bool response_head_done_ = false;
  bool response_done_ = false;
  http::Framing response_framing_;
  BodyRelay response_body_;
  bool dechunk_ = false;  // HTTP/1.0 client: relay the payload only, close-delimited
  bool backend_reusable_ = false;
  bool close_after_response_ = false;
  int status_ = 0;
  uint64_t bytes_out_ = 0;
  std::string reason_;
};

}  // namespace wsgate
