// The upstream stage that WebSocket upgrades (Session) and plain HTTP requests (HttpForwarder)
// share: route → pool → sticky placement → balancer pick within `retries` → the outcome of each
// try (passive outlier detection, wsgate_backend_connect_failures_total, the log line) → the
// answer when no backend is left. The caller owns the sockets and timers; an UpstreamAttempt
// decides where to go and what each result means, so both paths place, retry and fail alike.
//
// BodyRelay moves a response body from a backend to the client as http::ResponseFraming says
// (length, chunked or close-delimited), zero-copy: for HTTP responses and refused upgrades.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "metrics/metrics.h"
#include "proxy/balancer.h"
#include "proxy/core/libevent_ptr.h"
#include "proxy/http/body_framer.h"
#include "proxy/http/head_parser.h"
#include "proxy/runtime.h"

namespace wsgate {

// What to answer the client when a request cannot go to any backend.
struct UpstreamRefusal {
  int status = 0;
  const char* reason = nullptr;
  const char* extra_header = "";  // "Retry-After: 1\r\n" with 503
};

// Why one try on a backend failed before any usable answer. Each kind has one log text, one
// wsgate_backend_connect_failures_total reason, and says whether it was a timeout (all tries
// timing out gives 504 rather than 502).
enum class AttemptFailure {
  kNoSocket,  // socket() or the bufferevent could not be made
  kOutOfMemory,
  kConnectFailed,         // refused or unreachable
  kConnectTimedOut,       // timeouts.connect
  kTlsHandshake,          // the backend's TLS handshake failed (certificate, protocol)
  kClosedBeforeResponse,  // the backend closed or reset before its response head
  kUpgradeTimedOut,       // timeouts.backend_handshake: no response head to the upgrade
};

class UpstreamAttempt {
 public:
  // |log_tag| starts the log lines ("session", "http"); |runtime| and |metrics| outlive it.
  UpstreamAttempt(const char* log_tag, Runtime& runtime, metrics::Registry& metrics)
      : log_tag_(log_tag), runtime_(runtime), metrics_(metrics) {}

  // Route |host| and |path| to a pool and place |request| in it (sticky key, insert_cookie),
  // then start counting tries. False, with *refusal set (404, 400), if it has nowhere to go.
  bool Place(const http::HeadView& request, std::string_view host, std::string_view path,
             const std::string& client_ip, UpstreamRefusal* refusal);
  // Place a live session anew in the pool named |pool| of this runtime (it may be a later
  // generation than the one the session started under), keeping its sticky key and never
  // picking |leaving|. False if the pool no longer exists.
  bool PlaceForMove(const std::string& pool, const PickRequest& sticky, const Backend* leaving);
  // Try every backend again (a pooled connection proved stale); "all timed out" is kept.
  void Restart() { attempts_.Restart(); }
  // Forget the placement (the next request on a keep-alive connection places itself anew).
  void Clear();
  // Free what only retries need, keeping the route, pool and sticky key (a spliced session).
  void EndTries();

  // Lease the next backend to try; empty, with *refusal set (503, 502, 504), when none is left.
  BackendLease Next(UpstreamRefusal* refusal);
  // The try on |backend| failed before any usable answer (|detail| adds to the log text):
  // counted against it and logged for |client|. The caller then releases its lease and asks
  // Next() again.
  void Failed(Backend& backend, AttemptFailure failure, const std::string& client,
              std::string_view detail = {});
  // |backend| answered something unusable (a garbage head, an invalid 101, broken framing).
  void BadResponse(Backend& backend);
  // |backend| answered usably (ok) or not, for passive outlier detection.
  void ReportOutcome(Backend& backend, bool ok);

  int route_index() const { return route_index_; }
  int pool_index() const { return pool_index_; }
  bool placed() const { return pool_index_ >= 0; }
  Pool& pool() { return runtime_.pools[static_cast<size_t>(pool_index_)]; }
  const Pool& pool() const { return runtime_.pools[static_cast<size_t>(pool_index_)]; }
  const config::PoolConfig& pool_config() const {
    return runtime_.config.pools[static_cast<size_t>(pool_index_)];
  }
  // The pool's TLS client context; null for a plain-TCP pool.
  const tls::ClientContext* pool_tls() const {
    return runtime_.pool_tls[static_cast<size_t>(pool_index_)].get();
  }
  const PickRequest& pick() const { return pick_; }
  uint32_t tries() const { return attempts_.count(); }

 private:
  const char* log_tag_;
  Runtime& runtime_;
  metrics::Registry& metrics_;
  int route_index_ = -1;
  int pool_index_ = -1;
  PickRequest pick_;            // sticky key; pick_.excluded points into attempts_ while trying
  int preferred_backend_ = -1;  // named by the insert_cookie, honoured while accepting
  BackendAttempts attempts_;
};

// Parse the backend's response head at the front of |input| with |parser|, linearising at most
// |max_view| bytes of it (0: all). kComplete: *buffered is the view the head lies in. kError:
// *error is the reason a 502 gives ("invalid response head from backend: ...").
http::ParseStatus ParseResponseHead(evbuffer* input, size_t max_view, http::HeadParser& parser,
                                    std::string_view* buffered, std::string* error);

// Moves one response body from a backend's input to the client's output, as its framing says.
class BodyRelay {
 public:
  enum class Step { kProgress, kNeedMore, kDone, kError };
  // Start relaying a body framed as |framing|; |dechunk|: relay a chunked body's payload only.
  void Start(const http::Framing& framing, const http::ChunkLimits& limits, bool dechunk);
  // Move what |in| holds of the body to |out|, one step; *moved counts the bytes passed on.
  // At the input's end a close-delimited body needs more; only EOF (the caller's) ends it.
  Step Move(evbuffer* in, evbuffer* out, uint64_t* moved);
  bool done() const { return done_; }
  bool until_close() const { return framing_.kind == http::BodyKind::kUntilClose; }
  const char* error() const { return chunks_ ? chunks_->error() : nullptr; }
  // The backend closed: a close-delimited body is complete, any other is cut short (false).
  bool EndOfInput() {
    if (until_close()) done_ = true;
    return done_;
  }

 private:
  http::Framing framing_;
  uint64_t left_ = 0;
  std::optional<http::ChunkedDecoder> chunks_;
  bool dechunk_ = false;
  bool done_ = false;
};

// Chunked-body limits (requests and responses alike): a chunk-size line up to 4 KiB, trailers
// bounded like a head.
http::ChunkLimits ChunkLimitsFor(const config::ProxyConfig& config);

// Head limits of a WebSocket upgrade, its request and its response alike: limits.max_header_bytes,
// limits.max_request_line_bytes (also bounding a status line), at most 128 fields.
http::HeadLimits UpgradeHeadLimitsFor(const config::ProxyConfig& config);

// Move one step of a chunked body from |in| to |out| (or drop its framing when |dechunk|);
// *moved counts the bytes passed on.
BodyRelay::Step MoveChunked(http::ChunkedDecoder& decoder, evbuffer* in, evbuffer* out,
                            bool dechunk, uint64_t* moved);

}  // namespace wsgate
