// The connections API on the admin listener (docs/connections-api.md): list, inspect, push a
// message to and close any upgraded client connection, as API Gateway's @connections does.
//
// Runs on the main thread. A request is routed through the ConnectionIndex to the worker that
// owns the connection; the worker does the work on its own thread and posts the answer back, so
// no session is ever touched off its loop. Replies are sent asynchronously with evhttp.
#pragma once

#include <event2/http.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "metrics/metrics.h"
#include "proxy/connections/registry.h"
#include "proxy/core/event_loop.h"

namespace wsgate {

class Worker;

class ConnectionsApi {
 public:
  ConnectionsApi(EventLoop& main_loop, ConnectionIndex& index, std::vector<Worker*> workers)
      : main_loop_(main_loop), index_(index), workers_(std::move(workers)) {}

  // A request whose path splits into |parts| (parts[0] == "connections"). The token was checked.
  // |admin_alive| turns false if the admin server (and with it |request|) goes away.
  void Handle(evhttp_request* request, const std::vector<std::string>& parts,
              const std::shared_ptr<const bool>& admin_alive);

  void set_max_message_bytes(uint64_t bytes) { max_message_bytes_ = bytes; }
  // The admin server answered |request| 401 before it reached Handle().
  void CountUnauthorized(evhttp_request* request);

  // The API's own counters and the hooks' (main thread), for /metrics.
  metrics::ConnectionsApiSample MetricsSample() const;

 private:
  void HandleList(evhttp_request* request);
  // Answer on the main thread (now, or posted from a worker) and count it.
  void Finish(evhttp_request* request, const char* method, int status, const std::string& body);

  EventLoop& main_loop_;
  ConnectionIndex& index_;
  std::vector<Worker*> workers_;
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
