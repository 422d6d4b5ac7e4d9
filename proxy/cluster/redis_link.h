// One connection to Redis, kept up: it reconnects with backoff (100 ms doubling to
// cluster.reconnect_max), authenticates and selects the database, and treats Redis silent for
// cluster.command_timeout while commands wait as a dead link. Runs on one event loop (the main
// thread's).
//
// redis:// goes through hiredis's async context and its libevent adapter. rediss:// (TLS) goes
// through a libevent OpenSSL bufferevent, with hiredis formatting the commands and parsing the
// replies (redisFormatCommandArgv, redisReader): Debian 12's hiredis 0.14 has no TLS of its own.
#pragma once

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "proxy/core/libevent_ptr.h"
#include "proxy/tls/tls_context.h"

namespace wsgate {

class RedisLink {
 public:
  // |reply| is null when no answer came (the link went down or timed out).
  using Done = std::function<void(const redisReply* reply)>;

  // |name| is for logs ("registry", "subscriber"). |on_state| is told every change of up().
  RedisLink(event_base* base, const config::ClusterConfig& config, std::string name,
            std::function<void(bool up)> on_state);
  ~RedisLink();
  RedisLink(const RedisLink&) = delete;
  RedisLink& operator=(const RedisLink&) = delete;

  void Start();
  bool up() const { return state_ == State::kUp; }
  // This end's IP address on the connection to Redis ("" when not connected): the address the
  // other instances can most likely reach us at.
  std::string LocalIp() const;

  // Send |argv| (pipelined behind what is in flight). False, without calling |done|, when the
  // link is not up.
  bool Command(const std::vector<std::string>& argv, Done done);

  // A subscriber link: SUBSCRIBE |channel| on every connect; each message's payload goes to
  // |on_message|. The link counts as up once subscribed. Set before Start().
  void Subscribe(std::string channel, std::function<void(std::string_view)> on_message);

  using Clock = std::chrono::steady_clock;

 private:
  enum class State { kDown, kConnecting, kHandshaking, kUp };
  struct Pending {
    RedisLink* link;
    Done done;
  };

  void Connect();
  void ConnectTls();
  void Fail(const std::string& why);  // drop the context, retry after the backoff
  void Ready();                       // handshake answered: up
  // A reply in subscriber mode: a subscription's confirmation or a message.
  void HandleMessage(const redisReply* reply);
  // A reply to the command sent |sent_| ago.
  void Answer(const Done& done, const redisReply* reply);
  // TLS: what the bufferevent read, through hiredis's reply parser.
  void ReadTls();
  static void OnTlsRead(bufferevent* bev, void* arg);
  static void OnTlsEvent(bufferevent* bev, short what, void* arg);
  void SetState(State state);
  void Handshake();
  bool Send(const std::vector<std::string>& argv, Done done, bool require_up);
  static void OnConnect(const redisAsyncContext* context, int status);
  static void OnDisconnect(const redisAsyncContext* context, int status);
  static void OnReply(redisAsyncContext* context, void* reply, void* privdata);
  static void OnMessage(redisAsyncContext* context, void* reply, void* privdata);
  static void OnRetry(evutil_socket_t, short, void* arg);
  static void OnWatchdog(evutil_socket_t, short, void* arg);

  event_base* base_;
  const config::ClusterConfig config_;
  std::string name_;
  std::function<void(bool)> on_state_;
  std::string channel_;
  std::function<void(std::string_view)> on_message_;

  redisAsyncContext* context_ = nullptr;  // redis://
  // rediss://
  tls::ClientContextPtr tls_;
  BufferEventPtr bev_;
  redisReader* reader_ = nullptr;
  std::deque<Done> tls_waiting_;  // replies owed, in order
  bool connected() const { return context_ != nullptr || bev_ != nullptr; }
  State state_ = State::kDown;
  bool closing_ = false;  // in the destructor: answer nothing
  std::chrono::milliseconds backoff_{100};
  Clock::time_point connect_started_{};
  std::deque<Clock::time_point> sent_;  // when each command in flight was sent, oldest first
  Clock::time_point last_reply_{};
  bool logged_down_ = false;
  EventPtr retry_timer_;
  EventPtr watchdog_timer_;
};

}  // namespace wsgate
