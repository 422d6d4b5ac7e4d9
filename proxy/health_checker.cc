#include "proxy/health_checker.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstring>

#include "proxy/core/event_loop.h"
#include "proxy/core/log.h"
#include "proxy/http/handshake.h"
#include "proxy/upstream.h"
#include "proxy/ws/frame.h"

namespace wsgate {
namespace {

std::string RandomKey() {
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof(raw)) != 1) std::memset(raw, 0x42, sizeof(raw));
  unsigned char encoded[32];
  int n = EVP_EncodeBlock(encoded, raw, sizeof(raw));
  return std::string(reinterpret_cast<char*>(encoded), static_cast<size_t>(n));
}

}  // namespace

HealthChecker::HealthChecker(event_base* base, const config::HealthCheckConfig& config,
                             BackendPtr backend, tls::ClientContextPtr tls, OnChange on_change)
    : base_(base),
      config_(config),
      backend_(std::move(backend)),
      tls_(std::move(tls)),
      on_change_(std::move(on_change)) {
  interval_timer_.reset(evtimer_new(base_, &HealthChecker::OnIntervalCb, this));
  timeout_timer_.reset(evtimer_new(base_, &HealthChecker::OnTimeoutCb, this));
  // The first probe runs at once so a dead backend is found within one timeout of start-up.
  timeval now{0, 0};
  evtimer_add(interval_timer_.get(), &now);
}

HealthChecker::~HealthChecker() = default;

void HealthChecker::OnIntervalCb(evutil_socket_t, short, void* ctx) {
  static_cast<HealthChecker*>(ctx)->StartProbe();
}

void HealthChecker::OnTimeoutCb(evutil_socket_t, short, void* ctx) {
  static_cast<HealthChecker*>(ctx)->Finish(false, "timed out");
}

void HealthChecker::OnReadCb(bufferevent*, void* ctx) {
  static_cast<HealthChecker*>(ctx)->OnResponseData();
}

void HealthChecker::OnEventCb(bufferevent*, short what, void* ctx) {
  auto* self = static_cast<HealthChecker*>(ctx);
  if ((what & BEV_EVENT_CONNECTED) != 0) {
    self->OnConnected();
  } else if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) != 0) {
    self->Finish(false, (what & BEV_EVENT_EOF) != 0 ? "connection closed" : "connection failed");
  }
}

void HealthChecker::StartProbe() {
  timeval interval = ToTimeval(config_.interval);
  evtimer_add(interval_timer_.get(), &interval);
  if (probe_) return;  // the previous probe is still bounded by its timeout
  probe_ = StartConnect(base_, *backend_, tls_.get());
  if (!probe_) {
    Finish(false, "cannot create a socket");
    return;
  }
  bufferevent_setcb(probe_.get(), &HealthChecker::OnReadCb, nullptr, &HealthChecker::OnEventCb,
                    this);
  bufferevent_enable(probe_.get(), EV_READ);
  timeval timeout = ToTimeval(config_.timeout);
  evtimer_add(timeout_timer_.get(), &timeout);
}

void HealthChecker::OnConnected() {
  if (config_.type == config::HealthCheckConfig::Type::kTcp) {
    Finish(true, "");
    return;
  }
  std::string request = "GET " + config_.path + " HTTP/1.1\r\nHost: " + backend_->address +
                        "\r\nUser-Agent: wsgate-health-check\r\n";
  if (config_.type == config::HealthCheckConfig::Type::kWebSocket) {
    std::string key = RandomKey();
    expected_accept_ = http::ComputeAccept(key);
    request +=
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: " +
        key + "\r\n";
  } else {
    request += "Connection: close\r\n";
  }
  request += "\r\n";
  parser_ = std::make_unique<http::HeadParser>(http::HeadKind::kResponse, http::HeadLimits{});
  bufferevent_write(probe_.get(), request.data(), request.size());
}

void HealthChecker::OnResponseData() {
  if (!parser_) return;
  evbuffer* input = bufferevent_get_input(probe_.get());
  size_t length = evbuffer_get_length(input);
  std::string_view buffered(reinterpret_cast<const char*>(evbuffer_pullup(input, -1)), length);
  switch (parser_->Parse(buffered)) {
    case http::ParseStatus::kNeedMore:
      return;
    case http::ParseStatus::kError:
      Finish(false, "malformed response");
      return;
    case http::ParseStatus::kComplete:
      break;
  }
  int status = parser_->status_code();
  if (config_.type == config::HealthCheckConfig::Type::kHttp) {
    if (status >= 200 && status < 300) {
      Finish(true, "");
    } else {
      Finish(false, ("answered " + std::to_string(status)).c_str());
    }
    return;
  }
  http::HeadView view(*parser_, buffered);
  http::UpstreamVerdict verdict = http::CheckUpstreamResponse(view, expected_accept_);
  if (verdict.kind != http::UpstreamVerdict::kUpgraded) {
    Finish(false, "upgrade refused");
    return;
  }
  // Close the probe politely: a masked close 1000, as a client must send.
  uint8_t mask[4];
  if (RAND_bytes(mask, sizeof(mask)) != 1) std::memset(mask, 0x17, sizeof(mask));
  std::string close = ws::BuildCloseFrame(ws::kNormal, "health check", mask);
  bufferevent_write(probe_.get(), close.data(), close.size());
  // Success is decided: hand the close frame to the kernel now, since freeing the bufferevent
  // discards unsent output. (Over TLS the probe just ends; the bytes would need the record layer.)
  if (!tls_) evbuffer_write(bufferevent_get_output(probe_.get()), bufferevent_getfd(probe_.get()));
  Finish(true, "");
}

void HealthChecker::Finish(bool ok, const char* why) {
  evtimer_del(timeout_timer_.get());
  parser_.reset();
  probe_.reset();  // safe inside its own callback: libevent defers the actual free
  if (ok) {
    failures_ = 0;
    ++successes_;
    if (!backend_->healthy && successes_ >= config_.healthy_threshold) {
      backend_->healthy = true;
      LOG_INFO("health: backend " + backend_->pool + "/" + backend_->address + " is healthy again");
      if (on_change_) on_change_(*backend_);
    }
    return;
  }
  successes_ = 0;
  ++failures_;
  last_failure_ = why;
  if (backend_->healthy && failures_ >= config_.unhealthy_threshold) {
    backend_->healthy = false;
    LOG_WARN("health: backend " + backend_->pool + "/" + backend_->address +
             " is unhealthy after " + std::to_string(failures_) +
             " failed checks (last: " + last_failure_ + ")");
    if (on_change_) on_change_(*backend_);
  }
}

}  // namespace wsgate
