// The connections API on the admin listener (docs/connections-api.md): list, inspect, push a
// message to and close any upgraded client connection, as API Gateway's @connections does.
//
// Runs on the main thread. A request is routed through the ConnectionIndex to the worker that
// owns the connection; the worker does the work on its own thread and posts the answer back, so
// no session is ever touched off its loop. Replies are sent asynchronously with evhttp.
#pragma once

#include <event2/http.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "metrics/metrics.h"
#include "proxy/connections/fleet_link.h"
#include "proxy/connections/group_op.h"
#include "proxy/connections/registry.h"
#include "proxy/core/event_loop.h"

namespace wsgate {

class LiveConnection;
class Worker;

class ConnectionsApi {
 public:
  ConnectionsApi(EventLoop& main_loop, ConnectionIndex& index, std::vector<Worker*> workers)
      : main_loop_(main_loop), index_(index), workers_(std::move(workers)) {}

  // A request whose path splits into |parts| (parts[0] == "connections"). The token was checked.
  // |admin_alive| turns false if the admin server (and with it |request|) goes away.
  void Handle(evhttp_request* request, const std::vector<std::string>& parts,
              const std::shared_ptr<const bool>& admin_alive);
  // /users/... and /tags/... (parts[0] is "users" or "tags"): push to, close or count every
  // connection of a user or with a tag, on every instance of the fleet.
  void HandleGroup(evhttp_request* request, const std::vector<std::string>& parts,
                   const std::shared_ptr<const bool>& admin_alive);
  // Run |op| on this instance's matching connections; |done| (main thread) gets how many took
  // it. The fleet calls it for every published operation.
  void DeliverGroup(const GroupOp& op, std::function<void(size_t matched)> done);

  // Set once at start with `cluster`; null = a single instance.
  void set_fleet(FleetLink* fleet) { fleet_ = fleet; }

  void set_max_message_bytes(uint64_t bytes) { max_message_bytes_ = bytes; }
  // The admin server answered |request| 401 before it reached Handle().
  void CountUnauthorized(evhttp_request* request);

  // The API's own counters and the hooks' (main thread), for /metrics.
  metrics::ConnectionsApiSample MetricsSample() const;

 private:
  using Action = std::function<std::pair<int, std::string>(LiveConnection&)>;
  void HandleList(evhttp_request* request);
  // The action |request| asks of connection |parts[1]|, or false after answering an error.
  // A POST's body moves into |*payload|.
  bool ParseConnectionAction(evhttp_request* request, const std::vector<std::string>& parts,
                             Action* action, std::shared_ptr<evbuffer>* payload);
  // Ask the instance that owns |id| (looked up in Redis) and relay its answer.
  void ForwardToOwner(evhttp_request* request, const std::string& id,
                      std::shared_ptr<evbuffer> payload,
                      const std::shared_ptr<const bool>& admin_alive);
  // A POST's body as one message (413 over the limit, 400 for text that is not UTF-8).
  bool ReadMessage(evhttp_request* request, bool* text, std::shared_ptr<evbuffer>* payload);
  // A DELETE's ?code=&reason= (400 when invalid).
  bool ReadClose(evhttp_request* request, uint16_t* code, std::string* reason);
  // 503 with Retry-After: the fleet cannot be asked now.
  void Unavailable(evhttp_request* request, const char* method_name);
  void FinishGroup(evhttp_request* request, const char* method, const GroupOp& op,
                   const std::shared_ptr<const bool>& admin_alive);
  // Answer on the main thread (now, or posted from a worker) and count it.
  void Finish(evhttp_request* request, const char* method, int status, const std::string& body);

  EventLoop& main_loop_;
  ConnectionIndex& index_;
  std::vector<Worker*> workers_;
  FleetLink* fleet_ = nullptr;
  uint64_t max_message_bytes_ = 16 * 1024 * 1024;
  std::map<std::pair<std::string, int>, uint64_t> answered_;  // (method, status) -> count
};

// Parse and validate a DELETE's close code and reason (RFC 6455 §7.4, §5.5: a code that may be
// sent, a UTF-8 reason of at most 123 bytes). Empty |code_text| means 1000. Returns an error
// message, or empty when valid.
std::string ParseCloseRequest(const char* code_text, const char* reason_text, uint16_t* code,
                              std::string* reason);

// True for the body types sent as a text message: text/* and application/json.
bool IsTextContentType(const char* content_type);

}  // namespace wsgate
