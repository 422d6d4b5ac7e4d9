#include "proxy/client_handshake.h"

#include "proxy/http/handshake.h"

namespace wsgate {

namespace {

http::HeadParser RequestParser(const config::ProxyConfig& config) {
  return http::HeadParser(http::HeadKind::kRequest, UpgradeHeadLimitsFor(config));
}

HeadJudgement Refusal(int status, std::string reason, std::string extra_header = {}) {
  HeadJudgement judgement;
  judgement.outcome = HeadJudgement::kRefused;
  judgement.status = status;
  judgement.reason = std::move(reason);
  judgement.extra_header = std::move(extra_header);
  return judgement;
}

}  // namespace

ClientHandshake::ClientHandshake(const config::ProxyConfig& config)
    : parser_(RequestParser(config)) {}

void ClientHandshake::Reset(const config::ProxyConfig& config) { parser_ = RequestParser(config); }

HeadJudgement ClientHandshake::Read(evbuffer* input, const config::ProxyConfig& config,
                                    const UpgradeClient& client, UpstreamAttempt& placement) {
  size_t length = evbuffer_get_length(input);
  // The head is bounded by max_header_bytes, so linearising it is cheap.
  const char* data = reinterpret_cast<const char*>(evbuffer_pullup(input, -1));
  std::string_view buffered(data, length);
  switch (parser_.Parse(buffered)) {
    case http::ParseStatus::kNeedMore:
      return HeadJudgement{};
    case http::ParseStatus::kError: {
      http::ParseError error = parser_.error();
      return Refusal(error == http::ParseError::kHeadTooLarge ? 431 : 400,
                     http::ParseErrorName(error));
    }
    case http::ParseStatus::kComplete:
      break;
  }
  http::HeadView request(parser_, buffered);
  http::ClientHandshakePolicy policy{&config.limits.allowed_origins};
  http::ClientHandshake handshake = http::CheckClientHandshake(request, policy);
  if (handshake.status == 426 && !handshake.is_upgrade) {
    HeadJudgement judgement;
    judgement.outcome = HeadJudgement::kPlainHttp;
    return judgement;
  }
  if (handshake.status != 0) {
    return Refusal(handshake.status, handshake.reason, handshake.extra_header);
  }
  HeadJudgement judgement;
  judgement.plan = PlanUpgrade(request, handshake, config, client, placement);
  if (judgement.plan.status != 0) {
    return Refusal(judgement.plan.status, std::move(judgement.plan.reason));
  }
  judgement.outcome = HeadJudgement::kUpgrade;
  evbuffer_drain(input, parser_.head_length());
  return judgement;
}

metrics::HandshakeResult HandshakeResultFor(int status) {
  switch (status) {
    case 403:
      return metrics::kForbidden;
    case 404:
      return metrics::kNotFound;
    case 408:
      return metrics::kTimeout;
    case 431:
      return metrics::kTooLarge;
    case 502:
    case 504:
      return metrics::kBackendFailed;
    case 503:
      return metrics::kNoBackend;
    default:
      return metrics::kBadRequest;
  }
}

}  // namespace wsgate
