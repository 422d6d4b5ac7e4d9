// cluster: this instance's part in a fleet sharing one connection registry on Redis
// (docs/fleet.md). Runs on the main thread, beside the connections API it serves.
//
// * Registry: every change of the ConnectionIndex (any thread) is queued and written once per
//   main-loop pass, pipelined on the registry link; a handshake never waits for Redis.
// * Heartbeat: P instance:NAME holds the advertised URL with a TTL; an instance whose key has
//   expired is dead, and the others ignore its entries at once and delete them.
// * After every (re)connect the instance writes its whole registry again (resync).
// * Connections API: the owner of an id is looked up in Redis and the request forwarded over
//   HTTP to its advertised URL, one keep-alive connection per peer, so pushes keep their order.
// * User and tag operations are published on P fanout; every instance, this one too, runs them
//   on its own connections.
#pragma once

#include <event2/http.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "metrics/metrics.h"
#include "proxy/cluster/redis_link.h"
#include "proxy/cluster/registry_scripts.h"
#include "proxy/connections/fleet_link.h"
#include "proxy/connections/registry.h"
#include "proxy/core/event_loop.h"

namespace wsgate {

class Fleet final : public FleetLink, public ConnectionIndexObserver, public UserGate {
 public:
  // |advertise| is this instance's admin URL as others reach it; with a wildcard host
  // (http://0.0.0.0:PORT, http://[::]:PORT) the host becomes the address this instance reaches
  // Redis from. |admin_token| authenticates forwarded requests (the same on every instance).
  Fleet(EventLoop& loop, const config::ClusterConfig& config, std::string advertise,
        std::string admin_token, ConnectionIndex& index);
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Connect; |deliver| runs every published user/tag operation on this instance.
  void Start(std::function<void(const GroupOp&)> deliver);
  void set_admin_token(std::string token) { admin_token_ = std::move(token); }

  bool redis_up() const { return registry_.up() && subscriber_.up(); }
  const metrics::FleetMetrics& metrics() const { return metrics_; }

  // FleetLink.
  const std::string& instance() const override { return config_.instance; }
  void FindOwner(const std::string& id, std::function<void(OwnerAnswer)> done) override;
  void Forward(const std::string& url, evhttp_cmd_type method, const std::string& target,
               const std::string& content_type, std::shared_ptr<evbuffer> body,
               std::function<void(Reply)> done) override;
  void Publish(const GroupOp& op, std::function<void(long instances)> done) override;
  void CountUser(const std::string& user, std::function<void(long count)> done) override;

  // UserGate (any thread). Without Redis it admits: local traffic never waits on an outage.
  void Admit(const std::string& user, uint64_t local, uint64_t cap, EventLoop& reply_loop,
             std::function<void(bool admit)> done) override;

  // ConnectionIndexObserver (any thread).
  void OnAdded(const ConnectionEntry& entry, bool first) override;
  void OnRemoved(const ConnectionEntry& entry) override;
  void OnTagsChanged(const std::string& id, const std::vector<std::string>& tags) override;
  void OnUserCount(const std::string& user, uint64_t count) override;

  // The Redis keys (public for the tests).
  std::string Key(const std::string& suffix) const { return config_.key_prefix + suffix; }

 private:
  struct Change {
    enum class Kind { kAdd, kUpdate, kRemove, kTags, kUser, kNone } kind;
    std::string id;                 // kAdd, kRemove, kTags
    ConnectionEntry entry;          // kAdd
    std::vector<std::string> tags;  // kTags
    std::string user;               // kUser
    uint64_t count = 0;             // kUser
  };
  void Enqueue(Change change);
  // How long changes gather before they are written (one pipelined write for all of them).
  static constexpr std::chrono::milliseconds kBatchWindow{2};
  void Flush();  // main thread: write the queued changes
  // The same changes, fewer writes: a new entry's later changes fold into its add, an entry
  // added and removed in one batch is never written, a user's counts become the last one.
  std::vector<Change> Fold(std::vector<Change> changes);
  void Write(const Change& change);
  void Resync();
  // EVALSHA of |script| with |keys| and |args|.
  static std::vector<std::string> Eval(registry_scripts::Script script,
                                       std::vector<std::string> keys,
                                       const std::vector<std::string>& args);
  void LoadScripts();
  void Heartbeat();
  void OnLinkState();
  // A command whose answer is not needed beyond counting a failure.
  void Fire(const std::vector<std::string>& argv);
  // A command whose answer is waited for; its round trip is measured.
  bool Ask(const std::vector<std::string>& argv, RedisLink::Done done);
  evhttp_connection* PeerConnection(const std::string& url, std::string* target_prefix);
  // A forwarded request waiting for its answer.
  struct ForwardCall {
    Fleet* fleet;
    std::string url;
    std::function<void(Reply)> done;
    std::chrono::steady_clock::time_point started;
  };
  void FinishForward(ForwardCall* call, Reply reply);
  void ForgetIdlePeers();
  static void OnHeartbeatTimer(evutil_socket_t, short, void* arg);

  EventLoop& loop_;
  const config::ClusterConfig config_;
  const std::string advertise_template_;
  std::string advertise_;  // the template with its wildcard host filled in
  std::string admin_token_;
  ConnectionIndex& index_;
  metrics::FleetMetrics metrics_;
  std::function<void(const GroupOp&)> deliver_;
  RedisLink registry_;
  RedisLink subscriber_;
  bool registry_synced_ = false;  // written whole since the link last came up
  bool scripts_missing_ = false;  // Redis answered NOSCRIPT: reload and resync
  EventPtr heartbeat_timer_;
  EventPtr flush_timer_;
  std::unordered_map<std::string, uint64_t> user_counts_written_;  // what Redis has (non-zero)
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

  std::mutex queue_mutex_;
  std::vector<Change> queue_;  // guarded by queue_mutex_
  bool flush_posted_ = false;  // guarded by queue_mutex_

  struct Peer {
    evhttp_connection* connection = nullptr;
    std::string path_prefix;  // the advertised URL's path, if any
    std::string host_field;   // the Host header it is asked with
    size_t pending = 0;       // forwarded requests not answered yet
    std::chrono::steady_clock::time_point last_used{};
  };
  std::map<std::string, Peer> peers_;  // by advertised URL
  std::map<ForwardCall*, std::unique_ptr<ForwardCall>> calls_;
};

}  // namespace wsgate
