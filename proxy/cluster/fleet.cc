#include "proxy/cluster/fleet.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include <utility>

#include "proxy/core/log.h"

namespace wsgate {
namespace {

// KEYS: conn:ID, closed:ID. ARGV: prefix. Who holds a connection, and whether it lives.
constexpr const char* kOwnerScript = R"lua(
local instance = redis.call('HGET', KEYS[1], 'instance')
if not instance then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'closed'} end
  return {'unknown'}
end
local url = redis.call('GET', ARGV[1] .. 'instance:' .. instance)
if not url then return {'dead', instance} end
return {'alive', instance, url}
)lua";

// KEYS: user:U. ARGV: prefix. The user's connections on live instances.
constexpr const char* kCountUserScript = R"lua(
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  if redis.call('EXISTS', ARGV[1] .. 'instance:' .. fields[i]) == 1 then
    total = total + tonumber(fields[i + 1])
  end
end
return total
)lua";

// KEYS: user:U. ARGV: prefix, instance, this instance's count (the new one included), cap,
// user. Admits and records our count atomically, so two instances cannot both take the last
// place.
constexpr const char* kAdmitUserScript = R"lua(
local prefix, me, mine, cap = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local fields = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #fields, 2 do
  if fields[i] ~= me and redis.call('EXISTS', prefix .. 'instance:' .. fields[i]) == 1 then
    others = others + tonumber(fields[i + 1])
  end
end
if others + mine > cap then return 0 end
redis.call('HSET', KEYS[1], me, mine)
redis.call('SADD', prefix .. 'instance:' .. me .. ':users', ARGV[5])
return 1
)lua";

// ARGV: prefix, instance, only_self ("1": forget this instance's old entries; "0": every
// dead instance's). Deletes their connection hashes and per-user counts.
constexpr const char* kForgetScript = R"lua(
local prefix, me, only_self = ARGV[1], ARGV[2], ARGV[3] == '1'
local function forget(name)
  local conns = prefix .. 'instance:' .. name .. ':conns'
  for _, id in ipairs(redis.call('SMEMBERS', conns)) do
    redis.call('DEL', prefix .. 'conn:' .. id)
  end
  local users = prefix .. 'instance:' .. name .. ':users'
  for _, user in ipairs(redis.call('SMEMBERS', users)) do
    redis.call('HDEL', prefix .. 'user:' .. user, name)
  end
  redis.call('DEL', conns, users)
end
if only_self then
  forget(me)
  return 1
end
local forgotten = 0
for _, name in ipairs(redis.call('SMEMBERS', prefix .. 'instances')) do
  if name ~= me and redis.call('EXISTS', prefix .. 'instance:' .. name) == 0 then
    forget(name)
    redis.call('SREM', prefix .. 'instances', name)
    forgotten = forgotten + 1
  end
end
return forgotten
)lua";

constexpr int kClosedRememberSeconds = 600;

std::string JoinTags(const std::vector<std::string>& tags) {
  std::string joined;
  for (const std::string& tag : tags) {
    if (!joined.empty()) joined.push_back(',');
    joined += tag;
  }
  return joined;
}

std::string ReplyText(const redisReply* reply) {
  return reply != nullptr && (reply->type == REDIS_REPLY_STRING ||
                              reply->type == REDIS_REPLY_STATUS || reply->type == REDIS_REPLY_ERROR)
             ? std::string(reply->str, reply->len)
             : std::string();
}

}  // namespace

Fleet::Fleet(EventLoop& loop, const config::ClusterConfig& config, std::string advertise,
             std::string admin_token, ConnectionIndex& index)
    : loop_(loop),
      config_(config),
      advertise_template_(advertise),
      advertise_(std::move(advertise)),
      admin_token_(std::move(admin_token)),
      index_(index),
      registry_(loop.base(), config, "registry", [this](bool) { OnLinkState(); }),
      subscriber_(loop.base(), config, "subscriber", [this](bool) { OnLinkState(); }) {
  heartbeat_timer_.reset(event_new(loop_.base(), -1, EV_PERSIST, &Fleet::OnHeartbeatTimer, this));
}

Fleet::~Fleet() {
  *alive_ = false;
  for (auto& [url, peer] : peers_) evhttp_connection_free(peer.connection);
}

void Fleet::Start(std::function<void(const GroupOp&)> deliver) {
  deliver_ = std::move(deliver);
  subscriber_.Subscribe(Key("fanout"), [this](std::string_view message) {
    metrics_.fanout_received.Add();
    std::optional<GroupOp> op = DecodeGroupOp(message);
    if (!op) {
      LOG_WARN("cluster: ignored a malformed message on " + Key("fanout"));
      return;
    }
    if (deliver_) deliver_(*op);
  });
  registry_.Start();
  subscriber_.Start();
  timeval every = ToTimeval(config_.heartbeat_interval);
  evtimer_add(heartbeat_timer_.get(), &every);
  LOG_INFO("cluster: instance " + config_.instance + " advertises " + advertise_ + ", redis " +
           config_.redis_host + ":" + std::to_string(config_.redis_port));
}

void Fleet::OnLinkState() {
  metrics_.redis_up.Set(redis_up() ? 1 : 0);
  if (!registry_.up()) {
    registry_synced_ = false;
    return;
  }
  for (const char* wildcard : {"http://0.0.0.0:", "http://[::]:"}) {
    std::string_view prefix(wildcard);
    std::string ip = registry_.LocalIp();
    if (advertise_template_.rfind(prefix, 0) == 0 && !ip.empty()) {
      std::string filled = "http://" + ip + ":" + advertise_template_.substr(prefix.size());
      if (filled != advertise_) LOG_INFO("cluster: advertising " + filled);
      advertise_ = std::move(filled);
    }
  }
  if (!registry_synced_) {
    Heartbeat();  // alive again before anyone looks our entries up
    Resync();
  }
}

void Fleet::OnHeartbeatTimer(evutil_socket_t, short, void* arg) {
  static_cast<Fleet*>(arg)->Heartbeat();
}

void Fleet::Heartbeat() {
  if (!registry_.up()) return;
  Fire({"SET", Key("instance:" + config_.instance), advertise_, "PX",
        std::to_string(config_.heartbeat_ttl.count())});
  Fire({"SADD", Key("instances"), config_.instance});
  // Any live instance forgets the dead ones; the script is idempotent.
  Fire({"EVAL", kForgetScript, "0", config_.key_prefix, config_.instance, "0"});
}

void Fleet::Resync() {
  // Our old entries (from before a restart or an outage) go, then what we hold now is written.
  // Changes queued meanwhile are written after, in order, so the result is current.
  Fire({"EVAL", kForgetScript, "0", config_.key_prefix, config_.instance, "1"});
  for (const ConnectionEntry& entry : index_.Snapshot()) {
    Write(Change{Change::Kind::kAdd, entry.id, entry, {}, {}, 0});
  }
  for (const auto& [user, count] : index_.UserCounts()) {
    Write(Change{Change::Kind::kUser, {}, {}, {}, user, count});
  }
  metrics_.registry_writes[metrics::kRegistryResync].Add();
  registry_synced_ = true;
}

void Fleet::Fire(const std::vector<std::string>& argv) {
  bool sent = registry_.Command(argv, [this](const redisReply* reply) {
    if (reply == nullptr || reply->type == REDIS_REPLY_ERROR) {
      metrics_.registry_errors.Add();
      if (reply != nullptr) LOG_WARN("cluster: redis refused a write: " + ReplyText(reply));
    }
  });
  if (!sent) metrics_.registry_errors.Add();
}

bool Fleet::Ask(const std::vector<std::string>& argv, RedisLink::Done done) {
  auto started = std::chrono::steady_clock::now();
  return registry_.Command(argv, [this, started, done = std::move(done)](const redisReply* reply) {
    if (reply != nullptr) {
      metrics_.command_seconds.Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
    done(reply);
  });
}

// ---------------------------------------------------------------------------------------------
// The registry: changes from any thread, written on the main thread once per loop pass.

void Fleet::Enqueue(Change change) {
  bool post = false;
  {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    queue_.push_back(std::move(change));
    post = !flush_posted_;
    flush_posted_ = true;
  }
  if (post) {
    loop_.Post([this, alive = alive_] {
      if (*alive) Flush();
    });
  }
}

void Fleet::OnAdded(const ConnectionEntry& entry) {
  Enqueue(Change{Change::Kind::kAdd, entry.id, entry, {}, {}, 0});
}

void Fleet::OnRemoved(const ConnectionEntry& entry) {
  Enqueue(Change{Change::Kind::kRemove, entry.id, {}, {}, {}, 0});
}

void Fleet::OnTagsChanged(const std::string& id, const std::vector<std::string>& tags) {
  Enqueue(Change{Change::Kind::kTags, id, {}, tags, {}, 0});
}

void Fleet::OnUserCount(const std::string& user, uint64_t count) {
  Enqueue(Change{Change::Kind::kUser, {}, {}, {}, user, count});
}

void Fleet::Flush() {
  std::vector<Change> changes;
  {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    changes.swap(queue_);
    flush_posted_ = false;
  }
  // While Redis is away nothing is written: the resync after reconnecting writes it all.
  if (!registry_.up() || !registry_synced_) return;
  for (const Change& change : changes) Write(change);
}

void Fleet::Write(const Change& change) {
  const std::string& me = config_.instance;
  switch (change.kind) {
    case Change::Kind::kAdd: {
      const ConnectionEntry& e = change.entry;
      Fire({"HSET",
            Key("conn:" + e.id),
            "instance",
            me,
            "pool",
            e.pool,
            "backend",
            e.backend,
            "client",
            e.client,
            "listener",
            e.listener,
            "subprotocol",
            e.subprotocol,
            "user",
            e.identity.user,
            "tags",
            JoinTags(e.identity.tags),
            "connected_at_ms",
            std::to_string(e.connected_at_ms)});
      Fire({"SADD", Key("instance:" + me + ":conns"), e.id});
      metrics_.registry_writes[metrics::kRegistryAdd].Add();
      return;
    }
    case Change::Kind::kRemove:
      Fire({"DEL", Key("conn:" + change.id)});
      Fire({"SREM", Key("instance:" + me + ":conns"), change.id});
      Fire({"SET", Key("closed:" + change.id), me, "EX", std::to_string(kClosedRememberSeconds)});
      metrics_.registry_writes[metrics::kRegistryRemove].Add();
      return;
    case Change::Kind::kTags:
      // Only a connection still registered: HSET on a deleted hash would resurrect it.
      Fire({"EVAL",
            "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'tags', "
            "ARGV[1]) end return 0",
            "1", Key("conn:" + change.id), JoinTags(change.tags)});
      metrics_.registry_writes[metrics::kRegistryTags].Add();
      return;
    case Change::Kind::kUser:
      if (change.count > 0) {
        Fire({"HSET", Key("user:" + change.user), me, std::to_string(change.count)});
        Fire({"SADD", Key("instance:" + me + ":users"), change.user});
      } else {
        Fire({"HDEL", Key("user:" + change.user), me});
        Fire({"SREM", Key("instance:" + me + ":users"), change.user});
      }
      metrics_.registry_writes[metrics::kRegistryUser].Add();
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// The connections API's questions.

void Fleet::FindOwner(const std::string& id, std::function<void(OwnerAnswer)> done) {
  bool sent =
      Ask({"EVAL", kOwnerScript, "2", Key("conn:" + id), Key("closed:" + id), config_.key_prefix},
          [done](const redisReply* reply) {
            OwnerAnswer answer;
            if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
              return done(answer);  // kUnavailable
            }
            std::string state = ReplyText(reply->element[0]);
            if (reply->elements > 1) answer.instance = ReplyText(reply->element[1]);
            if (reply->elements > 2) answer.url = ReplyText(reply->element[2]);
            answer.owner = state == "alive"    ? Owner::kAlive
                           : state == "dead"   ? Owner::kDead
                           : state == "closed" ? Owner::kClosed
                                               : Owner::kUnknown;
            done(answer);
          });
  if (!sent) {
    metrics_.forwards[metrics::kForwardUnavailable].Add();
    done(OwnerAnswer{});
  }
}

evhttp_connection* Fleet::PeerConnection(const std::string& url, std::string* path_prefix) {
  auto found = peers_.find(url);
  if (found != peers_.end()) {
    *path_prefix = found->second.path_prefix;
    return found->second.connection;
  }
  evhttp_uri* uri = evhttp_uri_parse(url.c_str());
  if (uri == nullptr) return nullptr;
  const char* scheme = evhttp_uri_get_scheme(uri);
  const char* host = evhttp_uri_get_host(uri);
  int port = evhttp_uri_get_port(uri);
  const char* path = evhttp_uri_get_path(uri);
  evhttp_connection* connection = nullptr;
  // Plain HTTP between instances (an https advertise URL would need a TLS client here).
  if (scheme != nullptr && std::string(scheme) == "http" && host != nullptr) {
    connection = evhttp_connection_base_new(loop_.base(), nullptr, host, port < 0 ? 80 : port);
  }
  Peer peer{connection, path != nullptr ? path : "",
            std::string(host != nullptr ? host : "") + ":" + std::to_string(port < 0 ? 80 : port)};
  while (!peer.path_prefix.empty() && peer.path_prefix.back() == '/') peer.path_prefix.pop_back();
  evhttp_uri_free(uri);
  if (connection == nullptr) return nullptr;
  auto timeout = ToTimeval(config_.connect_timeout + config_.command_timeout);
  evhttp_connection_set_timeout_tv(connection, &timeout);
  evhttp_connection_set_retries(connection, 0);  // a retried POST could push twice
  *path_prefix = peer.path_prefix;
  peers_.emplace(url, std::move(peer));
  return connection;
}

void Fleet::Forward(const std::string& url, evhttp_cmd_type method, const std::string& target,
                    const std::string& content_type, std::shared_ptr<evbuffer> body,
                    std::function<void(Reply)> done) {
  std::string path_prefix;
  evhttp_connection* connection = PeerConnection(url, &path_prefix);
  if (connection == nullptr) {
    LOG_WARN("cluster: cannot reach advertised URL " + url);
    metrics_.forwards[metrics::kForwardError].Add();
    return done(Reply{});
  }
  struct Call {
    Fleet* fleet;
    std::shared_ptr<bool> alive;
    std::function<void(Reply)> done;
    std::chrono::steady_clock::time_point started;
  };
  auto* call = new Call{this, alive_, std::move(done), std::chrono::steady_clock::now()};
  evhttp_request* request = evhttp_request_new(
      [](evhttp_request* response, void* arg) {
        std::unique_ptr<Call> call(static_cast<Call*>(arg));
        if (!*call->alive) return;
        Reply reply;
        if (response != nullptr) {
          reply.status = evhttp_request_get_response_code(response);
          evbuffer* input = evhttp_request_get_input_buffer(response);
          reply.body.resize(evbuffer_get_length(input));
          evbuffer_remove(input, reply.body.data(), reply.body.size());
        }
        metrics::FleetMetrics& m = call->fleet->metrics_;
        m.forwards[reply.status != 0 ? metrics::kForwardOk : metrics::kForwardError].Add();
        m.forward_seconds.Observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - call->started)
                .count());
        call->done(std::move(reply));
      },
      call);
  if (request == nullptr) {
    std::unique_ptr<Call> owned(call);
    metrics_.forwards[metrics::kForwardError].Add();
    return owned->done(Reply{});
  }
  evkeyvalq* headers = evhttp_request_get_output_headers(request);
  evhttp_add_header(headers, "Host", peers_[url].host_field.c_str());
  if (!admin_token_.empty()) {
    evhttp_add_header(headers, "Authorization", ("Bearer " + admin_token_).c_str());
  }
  evhttp_add_header(headers, kForwardedHeader, config_.instance.c_str());
  if (!content_type.empty()) evhttp_add_header(headers, "Content-Type", content_type.c_str());
  if (body) evbuffer_add_buffer(evhttp_request_get_output_buffer(request), body.get());
  // Requests on one connection go out one after another, in order: pushes stay ordered.
  if (evhttp_make_request(connection, request, method, (path_prefix + target).c_str()) != 0) {
    // evhttp freed the request and called nothing.
    std::unique_ptr<Call> owned(call);
    metrics_.forwards[metrics::kForwardError].Add();
    owned->done(Reply{});
  }
}

void Fleet::Publish(const GroupOp& op, std::function<void(long instances)> done) {
  bool sent = Ask({"PUBLISH", Key("fanout"), EncodeGroupOp(op, config_.instance)},
                  [this, done](const redisReply* reply) {
                    if (reply == nullptr || reply->type != REDIS_REPLY_INTEGER) {
                      metrics_.publishes[metrics::kForwardUnavailable].Add();
                      return done(-1);
                    }
                    metrics_.publishes[metrics::kForwardOk].Add();
                    done(static_cast<long>(reply->integer));
                  });
  if (!sent) {
    metrics_.publishes[metrics::kForwardUnavailable].Add();
    done(-1);
  }
}

void Fleet::CountUser(const std::string& user, std::function<void(long count)> done) {
  bool sent = Ask({"EVAL", kCountUserScript, "1", Key("user:" + user), config_.key_prefix},
                  [done](const redisReply* reply) {
                    if (reply == nullptr || reply->type != REDIS_REPLY_INTEGER) return done(-1);
                    done(static_cast<long>(reply->integer));
                  });
  if (!sent) done(-1);
}

void Fleet::Admit(const std::string& user, uint64_t local, uint64_t cap, EventLoop& reply_loop,
                  std::function<void(bool admit)> done) {
  EventLoop* reply = &reply_loop;
  loop_.Post([this, alive = alive_, user, local, cap, reply, done = std::move(done)]() mutable {
    auto answer = [reply, done](bool admit) { reply->Post([done, admit] { done(admit); }); };
    if (!*alive) return answer(true);
    bool sent = Ask({"EVAL", kAdmitUserScript, "1", Key("user:" + user), config_.key_prefix,
                     config_.instance, std::to_string(local), std::to_string(cap), user},
                    [this, answer](const redisReply* reply_value) {
                      if (reply_value == nullptr || reply_value->type != REDIS_REPLY_INTEGER) {
                        metrics_.user_gate[metrics::kForwardUnavailable].Add();
                        return answer(true);
                      }
                      metrics_.user_gate[metrics::kForwardOk].Add();
                      answer(reply_value->integer == 1);
                    });
    if (!sent) {
      metrics_.user_gate[metrics::kForwardUnavailable].Add();
      answer(true);
    }
  });
}

}  // namespace wsgate
