#include "proxy/upstream_attempt.h"

#include <algorithm>

#include "proxy/core/log.h"
#include "proxy/sticky_balancer.h"

namespace wsgate {

namespace {

constexpr size_t kFramingPeek = 1024;  // framing bytes linearised at a time (chunk-size lines)
constexpr size_t kMaxTrailerFields = 128;

}  // namespace

http::HeadLimits UpgradeHeadLimitsFor(const config::ProxyConfig& config) {
  return http::HeadLimits{config.limits.max_header_bytes, config.limits.max_request_line_bytes,
                          128};
}

http::ChunkLimits ChunkLimitsFor(const config::ProxyConfig& config) {
  return http::ChunkLimits{4096, static_cast<size_t>(config.limits.max_header_bytes),
                           kMaxTrailerFields};
}

bool UpstreamAttempt::Place(const http::HeadView& request, std::string_view host,
                            std::string_view path, const std::string& client_ip,
                            UpstreamRefusal* refusal) {
  Clear();
  Router::Match match = runtime_.router.Route(host, path);
  if (match.pool < 0) {
    *refusal = UpstreamRefusal{404, "no route for this host and path"};
    return false;
  }
  route_index_ = match.route;
  pool_index_ = match.pool;
  if (!PlaceSticky(request, pool_config(), pool().backends, client_ip, path, &pick_,
                   &preferred_backend_)) {
    *refusal = UpstreamRefusal{400, "the sticky routing key is missing"};
    return false;
  }
  attempts_.Reset(pool().backends.size());
  return true;
}

bool UpstreamAttempt::PlaceForMove(const std::string& pool_name, const PickRequest& sticky,
                                   const Backend* leaving) {
  Clear();
  for (size_t i = 0; i < runtime_.pools.size(); ++i) {
    if (runtime_.pools[i].name != pool_name) continue;
    pool_index_ = static_cast<int>(i);
    pick_.has_key = sticky.has_key;
    pick_.key_hash = sticky.key_hash;
    std::vector<BackendPtr>& backends = pool().backends;
    attempts_.Reset(backends.size());
    for (size_t b = 0; b < backends.size(); ++b) {
      if (backends[b].get() == leaving) attempts_.Exclude(b);
    }
    return true;
  }
  return false;
}

void UpstreamAttempt::Clear() {
  route_index_ = -1;
  pool_index_ = -1;
  pick_ = PickRequest{};
  preferred_backend_ = -1;
  attempts_.Reset(0);
}

void UpstreamAttempt::EndTries() {
  pick_.excluded = nullptr;
  attempts_ = BackendAttempts{};
}

BackendLease UpstreamAttempt::Next(UpstreamRefusal* refusal) {
  int status = 0;
  const char* reason = nullptr;
  BackendLease backend =
      attempts_.Next(pool(), pick_, preferred_backend_, runtime_.config.retries, &status, &reason);
  if (!backend) {
    *refusal = UpstreamRefusal{status, reason, status == 503 ? "Retry-After: 1\r\n" : ""};
  }
  return backend;
}

void UpstreamAttempt::Failed(Backend& backend, AttemptFailure failure, const std::string& client,
                             std::string_view detail) {
  const char* text = "";
  metrics::ConnectFailure reason = metrics::kRefused;
  bool timed_out = false;
  switch (failure) {
    case AttemptFailure::kNoSocket:
      text = "could not create a socket";
      break;
    case AttemptFailure::kOutOfMemory:
      text = "out of memory";
      break;
    case AttemptFailure::kConnectFailed:
      text = "connect failed";
      break;
    case AttemptFailure::kConnectTimedOut:
      text = "connect timed out";
      reason = metrics::kConnectTimeout;
      timed_out = true;
      break;
    case AttemptFailure::kTlsHandshake:
      text = "TLS handshake failed";
      reason = metrics::kTlsHandshake;
      break;
    case AttemptFailure::kClosedBeforeResponse:
      text = "connection closed before a response";
      reason = metrics::kReset;
      break;
    case AttemptFailure::kUpgradeTimedOut:
      text = "backend did not answer the upgrade in time";
      reason = metrics::kConnectTimeout;
      timed_out = true;
      break;
  }
  attempts_.Failed(timed_out);
  ReportOutcome(backend, false);
  metrics_.Backend(backend.pool, backend.address).connect_failures[reason].Add();
  std::string why = text;
  if (!detail.empty()) why.append(": ").append(detail);
  LOG_WARN(std::string(log_tag_) + " client=" + client + " backend=" + backend.address +
           " attempt " + std::to_string(attempts_.count()) + " failed: " + why);
}

void UpstreamAttempt::BadResponse(Backend& backend) {
  ReportOutcome(backend, false);
  metrics_.Backend(backend.pool, backend.address).connect_failures[metrics::kBadResponse].Add();
}

void UpstreamAttempt::ReportOutcome(Backend& backend, bool ok) {
  ReportBackendOutcome(backend, pool_config().outlier, ok);
}

// ---------------------------------------------------------------------------------------------

http::ParseStatus ParseResponseHead(evbuffer* input, size_t max_view, http::HeadParser& parser,
                                    std::string_view* buffered, std::string* error) {
  size_t length = evbuffer_get_length(input);
  if (length == 0) return http::ParseStatus::kNeedMore;
  size_t view = max_view == 0 ? length : std::min(length, max_view);
  const char* data =
      reinterpret_cast<const char*>(evbuffer_pullup(input, static_cast<ssize_t>(view)));
  *buffered = std::string_view(data, view);
  http::ParseStatus status = parser.Parse(*buffered);
  if (status == http::ParseStatus::kError) {
    *error =
        std::string("invalid response head from backend: ") + http::ParseErrorName(parser.error());
  }
  return status;
}

BodyRelay::Step MoveChunked(http::ChunkedDecoder& decoder, evbuffer* in, evbuffer* out,
                            bool dechunk, uint64_t* moved) {
  size_t available = evbuffer_get_length(in);
  if (decoder.done()) return BodyRelay::Step::kDone;
  if (available == 0) return BodyRelay::Step::kNeedMore;
  if (decoder.in_data()) {
    auto n = static_cast<size_t>(std::min<uint64_t>(available, decoder.data_left()));
    evbuffer_remove_buffer(in, out, n);
    decoder.ConsumeData(n);
    *moved += n;
    return BodyRelay::Step::kProgress;
  }
  size_t peek = std::min(available, kFramingPeek);
  const char* data = reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ssize_t>(peek)));
  size_t consumed = decoder.Feed(std::string_view(data, peek));
  if (decoder.failed()) return BodyRelay::Step::kError;
  if (dechunk) {
    evbuffer_drain(in, consumed);
  } else {
    evbuffer_remove_buffer(in, out, consumed);
    *moved += consumed;
  }
  return decoder.done() ? BodyRelay::Step::kDone : BodyRelay::Step::kProgress;
}

void BodyRelay::Start(const http::Framing& framing, const http::ChunkLimits& limits, bool dechunk) {
  framing_ = framing;
  left_ = framing.length;
  dechunk_ = dechunk;
  done_ = false;
  chunks_.reset();
  if (framing.kind == http::BodyKind::kChunked) chunks_.emplace(limits);
}

BodyRelay::Step BodyRelay::Move(evbuffer* in, evbuffer* out, uint64_t* moved) {
  if (done_) return Step::kDone;
  size_t available = evbuffer_get_length(in);
  switch (framing_.kind) {
    case http::BodyKind::kNone:
      done_ = true;
      return Step::kDone;
    case http::BodyKind::kLength: {
      if (left_ == 0) {
        done_ = true;
        return Step::kDone;
      }
      if (available == 0) return Step::kNeedMore;
      auto n = static_cast<size_t>(std::min<uint64_t>(available, left_));
      evbuffer_remove_buffer(in, out, n);
      left_ -= n;
      *moved += n;
      done_ = left_ == 0;
      return done_ ? Step::kDone : Step::kProgress;
    }
    case http::BodyKind::kUntilClose:
      if (available == 0) return Step::kNeedMore;
      evbuffer_remove_buffer(in, out, available);
      *moved += available;
      return Step::kProgress;
    case http::BodyKind::kChunked: {
      Step step = MoveChunked(*chunks_, in, out, dechunk_, moved);
      if (step == Step::kDone) done_ = true;
      return step;
    }
  }
  return Step::kError;
}

}  // namespace wsgate
