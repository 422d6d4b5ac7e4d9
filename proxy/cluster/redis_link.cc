#include "proxy/cluster/redis_link.h"

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <hiredis/adapters/libevent.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

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
  if (config_.tls.enabled) {
    config::ConfigErrors errors;  // the files were checked at load: this only fails on memory
    tls_ = tls::ClientContext::Build(config_.tls, &errors);
  }
  watchdog_timer_.reset(event_new(base_, -1, EV_PERSIST, &RedisLink::OnWatchdog, this));
}

RedisLink::~RedisLink() {
  closing_ = true;
  bev_.reset();
  if (reader_ != nullptr) redisReaderFree(reader_);
  if (context_ != nullptr) {
    redisAsyncContext* context = context_;
    context_ = nullptr;
    redisAsyncFree(context);  // pending callbacks run with no reply and answer nothing
  }
}

std::string RedisLink::LocalIp() const {
  evutil_socket_t fd = context_ != nullptr ? context_->c.fd
                       : bev_ != nullptr   ? bufferevent_getfd(bev_.get())
                                           : -1;
  if (fd < 0) return {};
  sockaddr_storage addr{};
  socklen_t length = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) return {};
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
  if (config_.tls.enabled) return ConnectTls();
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
  if (bev_ != nullptr) {
    bev_.reset();
    redisReaderFree(reader_);
    reader_ = nullptr;
    // As hiredis does for its own context: every command still owed an answer gets none.
    std::deque<Done> waiting;
    waiting.swap(tls_waiting_);
    for (Done& done : waiting) {
      if (done) done(nullptr);
    }
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
    Ready();
  };
  if (channel_.empty()) {
    Send({"PING"}, ready, false);
    return;
  }
  const char* argv[] = {"SUBSCRIBE", channel_.c_str()};
  size_t lengths[] = {9, channel_.size()};
  if (bev_ != nullptr) {
    // Its confirmation and every message after it come as subscriber-mode replies.
    char* command = nullptr;
    int length = redisFormatCommandArgv(&command, 2, argv, lengths);
    if (length > 0) bufferevent_write(bev_.get(), command, static_cast<size_t>(length));
    redisFreeCommand(command);
    return;
  }
  redisAsyncCommandArgv(context_, &RedisLink::OnMessage, this, 2, argv, lengths);
}

void RedisLink::Ready() {
  if (logged_down_) LOG_INFO("cluster: redis (" + name_ + ") is reachable again");
  logged_down_ = false;
  backoff_ = kFirstBackoff;
  SetState(State::kUp);
}

bool RedisLink::Command(const std::vector<std::string>& argv, Done done) {
  return Send(argv, std::move(done), true);
}

bool RedisLink::Send(const std::vector<std::string>& argv, Done done, bool require_up) {
  if (!connected() || (require_up && state_ != State::kUp)) return false;
  std::vector<const char*> args;
  std::vector<size_t> lengths;
  args.reserve(argv.size());
  lengths.reserve(argv.size());
  for (const std::string& arg : argv) {
    args.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  if (bev_ != nullptr) {
    char* command = nullptr;
    int length = redisFormatCommandArgv(&command, static_cast<int>(args.size()), args.data(),
                                        lengths.data());
    if (length < 0) return false;
    bufferevent_write(bev_.get(), command, static_cast<size_t>(length));
    redisFreeCommand(command);
    tls_waiting_.push_back(std::move(done));
    sent_.push_back(Clock::now());
    return true;
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
  link->Answer(done, static_cast<const redisReply*>(reply));
}

void RedisLink::Answer(const Done& done, const redisReply* reply) {
  if (reply != nullptr) {
    if (!sent_.empty()) sent_.pop_front();
    last_reply_ = Clock::now();
  }
  if (done) done(reply);
}

void RedisLink::OnMessage(redisAsyncContext* context, void* reply, void* privdata) {
  auto* link = static_cast<RedisLink*>(privdata);
  if (link->closing_ || reply == nullptr || link->context_ != context) return;
  link->HandleMessage(static_cast<const redisReply*>(reply));
}

void RedisLink::HandleMessage(const redisReply* r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
      r->element[0]->type != REDIS_REPLY_STRING) {
    return;
  }
  std::string_view kind(r->element[0]->str, r->element[0]->len);
  if (kind == "subscribe") {
    if (state_ == State::kHandshaking) Ready();
    return;
  }
  if (kind == "message" && r->element[2]->type == REDIS_REPLY_STRING && on_message_) {
    on_message_(std::string_view(r->element[2]->str, r->element[2]->len));
  }
}

// ---------------------------------------------------------------------------------------------
// rediss://: a TLS bufferevent, hiredis's formatter and reply parser.

void RedisLink::ConnectTls() {
  if (!tls_) return Fail("no TLS context (out of memory?)");
  std::string address = config_.redis_host.find(':') != std::string::npos
                            ? "[" + config_.redis_host + "]:" + std::to_string(config_.redis_port)
                            : config_.redis_host + ":" + std::to_string(config_.redis_port);
  bev_ = tls_->Connect(base_, address);
  if (!bev_) return Fail("cannot set up TLS for " + address);
  reader_ = redisReaderCreate();
  bufferevent_setcb(bev_.get(), &RedisLink::OnTlsRead, nullptr, &RedisLink::OnTlsEvent, this);
  bufferevent_enable(bev_.get(), EV_READ | EV_WRITE);
  // Like hiredis for redis://, a host name is resolved here (blocking): use an IP address.
  if (bufferevent_socket_connect_hostname(bev_.get(), nullptr, AF_UNSPEC,
                                          config_.redis_host.c_str(), config_.redis_port) != 0) {
    Fail("cannot connect to " + address);
  }
}

void RedisLink::OnTlsEvent(bufferevent* bev, short what, void* arg) {
  auto* link = static_cast<RedisLink*>(arg);
  if (link->bev_.get() != bev) return;
  if ((what & BEV_EVENT_CONNECTED) != 0) return link->Handshake();
  std::string why = (what & BEV_EVENT_EOF) != 0 ? "connection closed" : "connection failed";
  if (SSL* ssl = bufferevent_openssl_get_ssl(bev)) {
    unsigned long error = bufferevent_get_openssl_error(bev);
    if (error != 0) {
      char text[256];
      ERR_error_string_n(error, text, sizeof(text));
      why = std::string("TLS: ") + text;
    } else if (SSL_get_verify_result(ssl) != X509_V_OK) {
      why = std::string("TLS: ") + X509_verify_cert_error_string(SSL_get_verify_result(ssl));
    }
  }
  link->Fail(why);
}

void RedisLink::OnTlsRead(bufferevent* bev, void* arg) {
  auto* link = static_cast<RedisLink*>(arg);
  if (link->bev_.get() == bev) link->ReadTls();
}

void RedisLink::ReadTls() {
  evbuffer* input = bufferevent_get_input(bev_.get());
  while (evbuffer_get_length(input) > 0 && reader_ != nullptr) {
    auto chunk = static_cast<ssize_t>(evbuffer_get_contiguous_space(input));
    redisReaderFeed(reader_, reinterpret_cast<const char*>(evbuffer_pullup(input, chunk)),
                    static_cast<size_t>(chunk));
    evbuffer_drain(input, chunk);
  }
  // Each complete reply in order; a callback may end the link (Fail frees the reader).
  while (reader_ != nullptr) {
    void* parsed = nullptr;
    if (redisReaderGetReply(reader_, &parsed) != REDIS_OK) return Fail("malformed reply");
    if (parsed == nullptr) return;
    auto* reply = static_cast<redisReply*>(parsed);
    std::string_view kind = reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                                    reply->element[0]->type == REDIS_REPLY_STRING
                                ? std::string_view(reply->element[0]->str, reply->element[0]->len)
                                : std::string_view();
    if (!channel_.empty() && (kind == "message" || kind == "subscribe")) {
      HandleMessage(reply);
    } else if (!tls_waiting_.empty()) {
      Done done = std::move(tls_waiting_.front());
      tls_waiting_.pop_front();
      Answer(done, reply);
    }
    freeReplyObject(reply);
  }
}

void RedisLink::OnRetry(evutil_socket_t, short, void* arg) {
  auto* link = static_cast<RedisLink*>(arg);
  if (!link->connected()) link->Connect();
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
