#include "proxy/cluster/redis_link.h"

#include <hiredis/adapters/libevent.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>

#include "proxy/core/log.h"

namespace wsgate {
namespace {

constexpr std::chrono::milliseconds kFirstBackoff{100};
constexpr timeval kWatchdogPeriod{0, 100 * 1000};

timeval ToTimeval(std::chrono::milliseconds ms) {
  return timeval{static_cast<time_t>(ms.count() / 1000),
                 static_cast<suseconds_t>((ms.count() % 1000) * 1000)};
}

}  // namespace

RedisLink::RedisLink(event_base* base, const config::ClusterConfig& config, std::string name,
                     std::function<void(bool up)> on_state)
    : base_(base), config_(config), name_(std::move(name)), on_state_(std::move(on_state)) {
  retry_timer_.reset(evtimer_new(base_, &RedisLink::OnRetry, this));
  watchdog_timer_.reset(event_new(base_, -1, EV_PERSIST, &RedisLink::OnWatchdog, this));
}

RedisLink::~RedisLink() {
  closing_ = true;
  if (context_ != nullptr) {
    redisAsyncContext* context = context_;
    context_ = nullptr;
    redisAsyncFree(context);  // pending callbacks run with no reply and answer nothing
  }
}

std::string RedisLink::LocalIp() const {
  if (context_ == nullptr) return {};
  sockaddr_storage addr{};
  socklen_t length = sizeof(addr);
  if (getsockname(context_->c.fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) return {};
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&addr)->sin_addr, text, sizeof(text));
    return text;
  }
  if (addr.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&addr)->sin6_addr, text, sizeof(text));
    return "[" + std::string(text) + "]";
  }
  return {};
}

void RedisLink::Start() {
  evtimer_add(watchdog_timer_.get(), &kWatchdogPeriod);
  Connect();
}

void RedisLink::Subscribe(std::string channel, std::function<void(std::string_view)> on_message) {
  channel_ = std::move(channel);
  on_message_ = std::move(on_message);
}

void RedisLink::SetState(State state) {
  bool was_up = up();
  state_ = state;
  if (was_up != up() && on_state_) on_state_(up());
}

void RedisLink::Connect() {
  SetState(State::kConnecting);
  connect_started_ = Clock::now();
  // hiredis resolves a host name with a blocking getaddrinfo: docs/fleet.md advises an IP.
  redisAsyncContext* context =
      redisAsyncConnect(config_.redis_host.c_str(), static_cast<int>(config_.redis_port));
  if (context == nullptr) return Fail("out of memory");
  if (context->err != 0) {
    std::string why = context->errstr;
    redisAsyncFree(context);
    return Fail(why);
  }
  context->data = this;
  context_ = context;
  redisLibeventAttach(context, base_);
  redisAsyncSetConnectCallback(context, &RedisLink::OnConnect);
  redisAsyncSetDisconnectCallback(context, &RedisLink::OnDisconnect);
}

void RedisLink::Fail(const std::string& why) {
  if (!logged_down_) {
    LOG_WARN("cluster: redis " + config_.redis_host + ":" + std::to_string(config_.redis_port) +
             " (" + name_ + "): " + why + "; retrying");
    logged_down_ = true;
  }
  sent_.clear();
  if (context_ != nullptr) {
    redisAsyncContext* context = context_;
    context_ = nullptr;
    redisAsyncFree(context);
  }
  SetState(State::kDown);
  timeval after = ToTimeval(backoff_);
  evtimer_add(retry_timer_.get(), &after);
  backoff_ = std::min(backoff_ * 2, config_.reconnect_max);
}

void RedisLink::OnConnect(const redisAsyncContext* context, int status) {
  auto* link = static_cast<RedisLink*>(context->data);
  if (link == nullptr || link->context_ != context) return;
  if (status != REDIS_OK) {
    // hiredis frees the context after this callback.
    link->context_ = nullptr;
    return link->Fail(context->errstr);
  }
  link->Handshake();
}

void RedisLink::OnDisconnect(const redisAsyncContext* context, int) {
  auto* link = static_cast<RedisLink*>(context->data);
  if (link == nullptr || link->context_ != context) return;
  link->context_ = nullptr;  // hiredis frees it after this callback
  link->Fail(context->err != 0 ? context->errstr : "connection closed");
}

void RedisLink::Handshake() {
  SetState(State::kHandshaking);
  auto check = [this](const char* what) {
    return [this, what](const redisReply* reply) {
      if (reply != nullptr && reply->type == REDIS_REPLY_ERROR) {
        Fail(std::string(what) + " failed: " + std::string(reply->str, reply->len));
      }
    };
  };
  if (!config_.password.empty()) Send({"AUTH", config_.password}, check("AUTH"), false);
  if (config_.redis_db != 0) {
    Send({"SELECT", std::to_string(config_.redis_db)}, check("SELECT"), false);
  }
  auto ready = [this](const redisReply* reply) {
    if (reply == nullptr || state_ != State::kHandshaking) return;
    if (reply->type == REDIS_REPLY_ERROR) {
      return Fail(std::string(reply->str, reply->len));
    }
    if (logged_down_) LOG_INFO("cluster: redis (" + name_ + ") is reachable again");
    logged_down_ = false;
    backoff_ = kFirstBackoff;
    SetState(State::kUp);
  };
  if (channel_.empty()) {
    Send({"PING"}, ready, false);
    return;
  }
  const char* argv[] = {"SUBSCRIBE", channel_.c_str()};
  size_t lengths[] = {9, channel_.size()};
  redisAsyncCommandArgv(context_, &RedisLink::OnMessage, this, 2, argv, lengths);
}

bool RedisLink::Command(const std::vector<std::string>& argv, Done done) {
  return Send(argv, std::move(done), true);
}

bool RedisLink::Send(const std::vector<std::string>& argv, Done done, bool require_up) {
  if (context_ == nullptr || (require_up && state_ != State::kUp)) return false;
  std::vector<const char*> args;
  std::vector<size_t> lengths;
  args.reserve(argv.size());
  lengths.reserve(argv.size());
  for (const std::string& arg : argv) {
    args.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  auto* pending = new Pending{this, std::move(done)};
  if (redisAsyncCommandArgv(context_, &RedisLink::OnReply, pending, static_cast<int>(args.size()),
                            args.data(), lengths.data()) != REDIS_OK) {
    delete pending;
    return false;
  }
  sent_.push_back(Clock::now());
  return true;
}

void RedisLink::OnReply(redisAsyncContext*, void* reply, void* privdata) {
  auto* pending = static_cast<Pending*>(privdata);
  RedisLink* link = pending->link;
  Done done = std::move(pending->done);
  delete pending;
  if (link->closing_) return;
  if (reply != nullptr) {
    if (!link->sent_.empty()) link->sent_.pop_front();
    link->last_reply_ = Clock::now();
  }
  if (done) done(static_cast<const redisReply*>(reply));
}

void RedisLink::OnMessage(redisAsyncContext* context, void* reply, void* privdata) {
  auto* link = static_cast<RedisLink*>(privdata);
  if (link->closing_ || reply == nullptr || link->context_ != context) return;
  const auto* r = static_cast<const redisReply*>(reply);
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
      r->element[0]->type != REDIS_REPLY_STRING) {
    return;
  }
  std::string_view kind(r->element[0]->str, r->element[0]->len);
  if (kind == "subscribe") {
    if (link->state_ == State::kHandshaking) {
      if (link->logged_down_) LOG_INFO("cluster: redis (" + link->name_ + ") is reachable again");
      link->logged_down_ = false;
      link->backoff_ = kFirstBackoff;
      link->SetState(State::kUp);
    }
    return;
  }
  if (kind == "message" && r->element[2]->type == REDIS_REPLY_STRING && link->on_message_) {
    link->on_message_(std::string_view(r->element[2]->str, r->element[2]->len));
  }
}

void RedisLink::OnRetry(evutil_socket_t, short, void* arg) {
  auto* link = static_cast<RedisLink*>(arg);
  if (link->context_ == nullptr) link->Connect();
}

void RedisLink::OnWatchdog(evutil_socket_t, short, void* arg) {
  auto* link = static_cast<RedisLink*>(arg);
  Clock::time_point now = Clock::now();
  if ((link->state_ == State::kConnecting || link->state_ == State::kHandshaking) &&
      now - link->connect_started_ > link->config_.connect_timeout) {
    return link->Fail("no connection within cluster.connect_timeout");
  }
  // Dead is silent: a Redis still answering a long pipeline is slow, not gone.
  if (!link->sent_.empty() &&
      now - std::max(link->sent_.front(), link->last_reply_) > link->config_.command_timeout) {
    link->Fail("no answer within cluster.command_timeout");
  }
}

}  // namespace wsgate
