#include "proxy/cluster/fleet.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include <unordered_map>
#include <utility>

#include "proxy/cluster/registry_scripts.h"
#include "proxy/core/log.h"

namespace wsgate {
namespace {

using registry_scripts::Script;

// How long a closed id answers 410 rather than 404 on other instances. Each close leaves one
// small key for this long (at 1,000 closes/s, 60,000 keys).
constexpr int kClosedRememberSeconds = 60;

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
  flush_timer_.reset(evtimer_new(
      loop_.base(), [](evutil_socket_t, short, void* arg) { static_cast<Fleet*>(arg)->Flush(); },
      this));
}

Fleet::~Fleet() {
  *alive_ = false;
  // Freeing a connection drops its requests without calling back: their calls go with calls_.
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
    // Two live instances with one name would overwrite each other's registry: say so loudly.
    Ask({"GET", Key("instance:" + config_.instance)}, [this](const redisReply* reply) {
      std::string holder = ReplyText(reply);
      if (reply != nullptr && reply->type == REDIS_REPLY_STRING && holder != advertise_) {
        LOG_ERROR("cluster: another instance named " + config_.instance + " (at " + holder +
                  ") was alive a moment ago; give every instance its own cluster.instance");
      }
    });
    LoadScripts();  // first: every command after it may use them
    Heartbeat();    // alive again before anyone looks our entries up
    Resync();
  }
}

void Fleet::OnHeartbeatTimer(evutil_socket_t, short, void* arg) {
  static_cast<Fleet*>(arg)->Heartbeat();
}

void Fleet::Heartbeat() {
  ForgetIdlePeers();
  if (!registry_.up()) return;
  if (scripts_missing_) {
    LoadScripts();
    registry_synced_ = false;
    Resync();
  }
  Fire({"SET", Key("instance:" + config_.instance), advertise_, "PX",
        std::to_string(config_.heartbeat_ttl.count())});
  Fire({"SADD", Key("instances"), config_.instance});
  // Any live instance forgets the dead ones; the script is idempotent.
  Fire(Eval(Script::kForget, {}, {config_.key_prefix, config_.instance, "0"}));
}

void Fleet::Resync() {
  // Our old entries (from before a restart or an outage) go, then what we hold now is written.
  // Changes queued meanwhile are written after, in order, so the result is current.
  Fire(Eval(Script::kForget, {}, {config_.key_prefix, config_.instance, "1"}));
  for (const ConnectionEntry& entry : index_.Snapshot()) {
    Write(Change{Change::Kind::kAdd, entry.id, entry, {}, {}, 0});
  }
  user_counts_written_.clear();
  for (const auto& [user, count] : index_.UserCounts()) {
    user_counts_written_[user] = count;
    Write(Change{Change::Kind::kUser, {}, {}, {}, user, count});
  }
  metrics_.registry_writes[metrics::kRegistryResync].Add();
  registry_synced_ = true;
}

void Fleet::Fire(const std::vector<std::string>& argv) {
  bool sent = registry_.Command(argv, [this](const redisReply* reply) {
    if (reply == nullptr || reply->type == REDIS_REPLY_ERROR) {
      metrics_.registry_errors.Add();
      if (reply == nullptr) return;
      std::string error = ReplyText(reply);
      // The scripts were flushed (SCRIPT FLUSH, or a failover to a replica without them):
      // load them again and rewrite the registry at the next heartbeat.
      if (error.rfind("NOSCRIPT", 0) == 0) {
        if (!scripts_missing_) LOG_WARN("cluster: redis lost the registry scripts; reloading");
        scripts_missing_ = true;
        return;
      }
      LOG_WARN("cluster: redis refused a write: " + error);
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
    // Changes gather for kBatchWindow, then go out together: one write for many, and a
    // connection's add and its 101 update (or a short one's whole life) fold into one.
    loop_.Post([this, alive = alive_] {
      if (!*alive) return;
      timeval window = ToTimeval(kBatchWindow);
      evtimer_add(flush_timer_.get(), &window);
    });
  }
}

void Fleet::OnAdded(const ConnectionEntry& entry, bool first) {
  Enqueue(Change{first ? Change::Kind::kAdd : Change::Kind::kUpdate, entry.id, entry, {}, {}, 0});
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
  for (const Change& change : Fold(std::move(changes))) Write(change);
}

std::vector<Fleet::Change> Fleet::Fold(std::vector<Change> changes) {
  std::vector<Change> out;
  out.reserve(changes.size());
  std::unordered_map<std::string, size_t> added;  // id -> its kAdd in |out|
  std::unordered_map<std::string, size_t> users;  // user -> its kUser in |out|
  for (Change& change : changes) {
    auto add = added.find(change.id);
    const bool new_here = change.kind != Change::Kind::kUser && add != added.end();
    switch (change.kind) {
      case Change::Kind::kAdd:
        added[change.id] = out.size();
        break;
      case Change::Kind::kUpdate:
        if (new_here) {
          out[add->second].entry = std::move(change.entry);  // still an add, with the news
          continue;
        }
        break;
      case Change::Kind::kTags:
        if (new_here) {
          out[add->second].entry.identity.tags = std::move(change.tags);
          continue;
        }
        break;
      case Change::Kind::kRemove:
        if (new_here) {
          out[add->second].kind = Change::Kind::kNone;  // born and gone within the window
          added.erase(add);
          continue;
        }
        break;
      case Change::Kind::kUser: {
        auto [user, inserted] = users.emplace(change.user, out.size());
        if (!inserted) {
          out[user->second].count = change.count;  // absolute: the last one holds
          continue;
        }
        break;
      }
      case Change::Kind::kNone:
        continue;
    }
    out.push_back(std::move(change));
  }
  // A user whose count ends where Redis already has it needs no write.
  std::erase_if(out, [this](const Change& change) {
    if (change.kind == Change::Kind::kNone) return true;
    if (change.kind != Change::Kind::kUser) return false;
    auto written = user_counts_written_.find(change.user);
    uint64_t before = written != user_counts_written_.end() ? written->second : 0;
    if (before == change.count) return true;
    if (change.count == 0) {
      user_counts_written_.erase(written);
    } else {
      user_counts_written_[change.user] = change.count;
    }
    return false;
  });
  return out;
}

void Fleet::Write(const Change& change) {
  const std::string& me = config_.instance;
  switch (change.kind) {
    case Change::Kind::kNone:
      return;
    case Change::Kind::kAdd: {
      const ConnectionEntry& e = change.entry;
      Fire(Eval(
          Script::kAdd, {Key("conn:" + e.id), Key("instance:" + me + ":conns")},
          {e.id, "instance", me, "pool", e.pool, "backend", e.backend, "client", e.client,
           "listener", e.listener, "subprotocol", e.subprotocol, "user", e.identity.user, "tags",
           JoinTags(e.identity.tags), "connected_at_ms", std::to_string(e.connected_at_ms)}));
      metrics_.registry_writes[metrics::kRegistryAdd].Add();
      return;
    }
    case Change::Kind::kUpdate: {
      const ConnectionEntry& e = change.entry;
      Fire(Eval(Script::kUpdate, {Key("conn:" + e.id)},
                {"pool", e.pool, "backend", e.backend, "subprotocol", e.subprotocol}));
      metrics_.registry_writes[metrics::kRegistryUpdate].Add();
      return;
    }
    case Change::Kind::kRemove:
      Fire(Eval(
          Script::kRemove,
          {Key("conn:" + change.id), Key("instance:" + me + ":conns"), Key("closed:" + change.id)},
          {change.id, me, std::to_string(kClosedRememberSeconds)}));
      metrics_.registry_writes[metrics::kRegistryRemove].Add();
      return;
    case Change::Kind::kTags:
      Fire(Eval(Script::kUpdate, {Key("conn:" + change.id)}, {"tags", JoinTags(change.tags)}));
      metrics_.registry_writes[metrics::kRegistryTags].Add();
      return;
    case Change::Kind::kUser:
      Fire(Eval(Script::kUserCount, {Key("user:" + change.user), Key("instance:" + me + ":users")},
                {me, change.user, std::to_string(change.count)}));
      metrics_.registry_writes[metrics::kRegistryUser].Add();
      return;
  }
}

std::vector<std::string> Fleet::Eval(Script script, std::vector<std::string> keys,
                                     const std::vector<std::string>& args) {
  std::vector<std::string> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.emplace_back("EVALSHA");
  argv.push_back(registry_scripts::Sha1(script));
  argv.push_back(std::to_string(keys.size()));
  for (std::string& key : keys) argv.push_back(std::move(key));
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

void Fleet::LoadScripts() {
  for (size_t i = 0; i < static_cast<size_t>(Script::kCount); ++i) {
    Fire({"SCRIPT", "LOAD", registry_scripts::Text(static_cast<Script>(i))});
  }
  scripts_missing_ = false;
}

// ---------------------------------------------------------------------------------------------
// The connections API's questions.

void Fleet::FindOwner(const std::string& id, std::function<void(OwnerAnswer)> done) {
  bool sent =
      Ask(Eval(Script::kOwner, {Key("conn:" + id), Key("closed:" + id)}, {config_.key_prefix}),
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
  Peer peer;
  peer.connection = connection;
  peer.path_prefix = path != nullptr ? path : "";
  peer.host_field =
      std::string(host != nullptr ? host : "") + ":" + std::to_string(port < 0 ? 80 : port);
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
  Peer& peer = peers_[url];
  ++peer.pending;
  peer.last_used = std::chrono::steady_clock::now();
  auto owned = std::make_unique<ForwardCall>(
      ForwardCall{this, url, std::move(done), std::chrono::steady_clock::now()});
  ForwardCall* call = owned.get();
  calls_.emplace(call, std::move(owned));
  evhttp_request* request = evhttp_request_new(
      [](evhttp_request* response, void* arg) {
        auto* call = static_cast<ForwardCall*>(arg);
        Reply reply;
        if (response != nullptr) {
          reply.status = evhttp_request_get_response_code(response);
          evbuffer* input = evhttp_request_get_input_buffer(response);
          reply.body.resize(evbuffer_get_length(input));
          evbuffer_remove(input, reply.body.data(), reply.body.size());
        }
        call->fleet->FinishForward(call, std::move(reply));
      },
      call);
  if (request == nullptr) return FinishForward(call, Reply{});
  evkeyvalq* headers = evhttp_request_get_output_headers(request);
  evhttp_add_header(headers, "Host", peer.host_field.c_str());
  if (!admin_token_.empty()) {
    evhttp_add_header(headers, "Authorization", ("Bearer " + admin_token_).c_str());
  }
  evhttp_add_header(headers, kForwardedHeader, config_.instance.c_str());
  if (!content_type.empty()) evhttp_add_header(headers, "Content-Type", content_type.c_str());
  if (body) evbuffer_add_buffer(evhttp_request_get_output_buffer(request), body.get());
  // Requests on one connection go out one after another, in order: pushes stay ordered.
  if (evhttp_make_request(connection, request, method, (path_prefix + target).c_str()) != 0) {
    FinishForward(call, Reply{});  // evhttp freed the request and will call nothing
  }
}

void Fleet::FinishForward(ForwardCall* call, Reply reply) {
  std::unique_ptr<ForwardCall> owned = std::move(calls_.at(call));
  calls_.erase(call);
  if (auto peer = peers_.find(owned->url); peer != peers_.end()) --peer->second.pending;
  metrics_.forwards[reply.status != 0 ? metrics::kForwardOk : metrics::kForwardError].Add();
  metrics_.forward_seconds.Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - owned->started).count());
  owned->done(std::move(reply));
}

void Fleet::ForgetIdlePeers() {
  // Instances come and go (pods get new addresses): keep a connection to each peer in use, not
  // one to every address ever seen. A peer with requests out is kept (freeing its connection
  // would drop them without an answer).
  constexpr size_t kPeersKept = 32;
  constexpr std::chrono::minutes kIdle{5};
  if (peers_.size() <= kPeersKept) return;
  auto now = std::chrono::steady_clock::now();
  for (auto it = peers_.begin(); it != peers_.end();) {
    if (it->second.pending > 0 || now - it->second.last_used < kIdle) {
      ++it;
      continue;
    }
    evhttp_connection_free(it->second.connection);
    it = peers_.erase(it);
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
  bool sent = Ask(Eval(Script::kCountUser, {Key("user:" + user)}, {config_.key_prefix}),
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
    bool sent = Ask(Eval(Script::kAdmitUser, {Key("user:" + user)},
                         {config_.key_prefix, config_.instance, std::to_string(local),
                          std::to_string(cap), user}),
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
