#include "proxy/connections/api.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>

#include "proxy/admin.h"
#include "proxy/connections/live_connection.h"
#include "proxy/core/json.h"
#include "proxy/worker.h"
#include "proxy/ws/frame.h"

namespace wsgate {
namespace {

constexpr size_t kDefaultPageSize = 100;
constexpr size_t kMaxPageSize = 1000;
constexpr size_t kIdLength = 22;  // NewConnectionId()

std::string ErrorJson(const std::string& message) {
  return "{\"error\":" + JsonString(message) + "}\n";
}

bool LooksLikeId(const std::string& id) {
  if (id.size() != kIdLength) return false;
  for (char c : id) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

const char* MethodName(evhttp_cmd_type method) {
  switch (method) {
    case EVHTTP_REQ_GET:
      return "GET";
    case EVHTTP_REQ_HEAD:
      return "HEAD";
    case EVHTTP_REQ_POST:
      return "POST";
    case EVHTTP_REQ_DELETE:
      return "DELETE";
    default:
      return "other";
  }
}

std::string EntryJson(const ConnectionEntry& e) {
  return "{\"id\":" + JsonString(e.id) + ",\"client\":" + JsonString(e.client) +
         ",\"listener\":" + JsonString(e.listener) + ",\"route\":" + e.route +
         ",\"pool\":" + JsonString(e.pool) + ",\"backend\":" + JsonString(e.backend) +
         ",\"subprotocol\":" + JsonString(e.subprotocol) +
         ",\"connected_at_ms\":" + std::to_string(e.connected_at_ms) + "}";
}

}  // namespace

bool IsTextContentType(const char* content_type) {
  if (content_type == nullptr) return false;
  std::string_view type(content_type);
  while (!type.empty() && type.front() == ' ') type.remove_prefix(1);
  auto starts = [&](std::string_view prefix) {
    if (type.size() < prefix.size()) return false;
    for (size_t i = 0; i < prefix.size(); ++i) {
      char c = type[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      if (c != prefix[i]) return false;
    }
    return true;
  };
  if (starts("text/")) return true;
  if (!starts("application/json")) return false;
  std::string_view rest = type.substr(16);
  return rest.empty() || rest.front() == ';' || rest.front() == ' ';
}

std::string ParseCloseRequest(const char* code_text, const char* reason_text, uint16_t* code,
                              std::string* reason) {
  *code = ws::kNormal;
  if (code_text != nullptr && *code_text != '\0') {
    size_t length = std::strlen(code_text);
    if (length > 4) return "code must be a close code (1000-4999)";
    unsigned value = 0;
    for (size_t i = 0; i < length; ++i) {
      if (code_text[i] < '0' || code_text[i] > '9') return "code must be a number";
      value = value * 10 + static_cast<unsigned>(code_text[i] - '0');
    }
    if (value > 4999 || !ws::IsValidWireCloseCode(static_cast<uint16_t>(value))) {
      return "code " + std::to_string(value) + " may not be sent in a close frame";
    }
    *code = static_cast<uint16_t>(value);
  }
  reason->assign(reason_text != nullptr ? reason_text : "");
  if (reason->size() > ws::kMaxControlPayload - 2) return "reason is longer than 123 bytes";
  if (!ws::IsValidUtf8(reinterpret_cast<const uint8_t*>(reason->data()), reason->size())) {
    return "reason is not valid UTF-8";
  }
  return {};
}

void ConnectionsApi::CountUnauthorized(evhttp_request* request) {
  ++answered_[{MethodName(evhttp_request_get_command(request)), 401}];
}

void ConnectionsApi::Finish(evhttp_request* request, const char* method, int status,
                            const std::string& body) {
  ++answered_[{method, status}];
  AdminReply(request, status, body);
}

void ConnectionsApi::Handle(evhttp_request* request, const std::vector<std::string>& parts,
                            const std::shared_ptr<const bool>& admin_alive) {
  evhttp_cmd_type method = evhttp_request_get_command(request);
  const char* method_name = MethodName(method);
  if (parts.size() == 1) {
    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
      return Finish(request, method_name, 405, ErrorJson("use GET"));
    }
    return HandleList(request);
  }
  if (parts.size() != 2) return Finish(request, method_name, 404, ErrorJson("not found"));
  const std::string& id = parts[1];
  std::optional<ConnectionEntry> entry;
  if (LooksLikeId(id)) entry = index_.Find(id);
  if (!entry) {
    if (LooksLikeId(id) && index_.RecentlyClosed(id)) {
      return Finish(request, method_name, 410, ErrorJson("connection closed"));
    }
    return Finish(request, method_name, 404, ErrorJson("no such connection"));
  }
  if (entry->worker >= workers_.size()) {
    return Finish(request, method_name, 404, ErrorJson("no such connection"));
  }

  // What the owning worker does; it returns (status, body) and never outlives the session
  // lookup it starts with.
  std::function<std::pair<int, std::string>(LiveConnection&)> action;
  switch (method) {
    case EVHTTP_REQ_GET:
    case EVHTTP_REQ_HEAD:
      action = [](LiveConnection& session) {
        return std::make_pair(200, session.InfoJson() + "\n");
      };
      break;
    case EVHTTP_REQ_POST: {
      evbuffer* input = evhttp_request_get_input_buffer(request);
      size_t length = evbuffer_get_length(input);
      if (length > max_message_bytes_) {
        return Finish(request, method_name, 413,
                      ErrorJson("body is larger than limits.max_message_bytes"));
      }
      const char* type =
          evhttp_find_header(evhttp_request_get_input_headers(request), "Content-Type");
      bool text = IsTextContentType(type);
      if (text && length > 0) {
        // Not a hot path: one linear view of the body for the UTF-8 check.
        const uint8_t* data = evbuffer_pullup(input, -1);
        if (data == nullptr || !ws::IsValidUtf8(data, length)) {
          return Finish(request, method_name, 400, ErrorJson("text body is not valid UTF-8"));
        }
      }
      // The request keeps its buffer until answered; the worker gets its own chain (moved).
      std::shared_ptr<evbuffer> payload(evbuffer_new(), evbuffer_free);
      if (!payload) return Finish(request, method_name, 503, ErrorJson("out of memory"));
      evbuffer_add_buffer(payload.get(), input);
      action = [payload, text](LiveConnection& session) {
        int status = session.Push(payload.get(), text);
        const char* body = status == 200   ? "{\"queued\":true}\n"
                           : status == 429 ? "{\"error\":\"the client's send queue is full\"}\n"
                                           : "{\"error\":\"connection closing\"}\n";
        return std::make_pair(status, std::string(body));
      };
      break;
    }
    case EVHTTP_REQ_DELETE: {
      AdminQuery query(request);
      uint16_t code = 0;
      std::string reason;
      std::string error =
          query.ok ? ParseCloseRequest(query.Get("code"), query.Get("reason"), &code, &reason)
                   : "malformed query string";
      if (!error.empty()) return Finish(request, method_name, 400, ErrorJson(error));
      action = [code, reason](LiveConnection& session) {
        int status = session.CloseByApi(code, reason);
        const char* body = status == 200   ? "{\"closing\":true}\n"
                           : status == 409 ? "{\"error\":\"the upgrade is still in progress\"}\n"
                                           : "{\"error\":\"connection closing\"}\n";
        return std::make_pair(status, std::string(body));
      };
      break;
    }
    default:
      return Finish(request, method_name, 405, ErrorJson("use GET, POST or DELETE"));
  }

  EventLoop* main_loop = &main_loop_;
  workers_[entry->worker]->Do([this, main_loop, request, admin_alive, id, method_name,
                               action = std::move(action)](Worker& worker) {
    LiveConnection* session = worker.connections().Find(id);
    std::pair<int, std::string> answer = session != nullptr && !session->ended()
                                             ? action(*session)
                                             : std::make_pair(410, ErrorJson("connection closed"));
    main_loop->Post([this, request, admin_alive, method_name, answer = std::move(answer)] {
      // The admin server (and the request with it) may have been replaced by a reload.
      if (*admin_alive) Finish(request, method_name, answer.first, answer.second);
    });
  });
}

void ConnectionsApi::HandleList(evhttp_request* request) {
  AdminQuery query(request);
  if (!query.ok) return Finish(request, "GET", 400, ErrorJson("malformed query string"));
  size_t limit = kDefaultPageSize;
  if (const char* text = query.Get("limit")) {
    char* end = nullptr;
    long value = std::strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || value < 1 || value > static_cast<long>(kMaxPageSize)) {
      return Finish(request, "GET", 400,
                    ErrorJson("limit must be 1-" + std::to_string(kMaxPageSize)));
    }
    limit = static_cast<size_t>(value);
  }
  const char* pool = query.Get("pool");
  const char* backend = query.Get("backend");
  const char* cursor = query.Get("cursor");
  bool more = false;
  std::vector<ConnectionEntry> page =
      index_.List(pool != nullptr ? pool : "", backend != nullptr ? backend : "",
                  cursor != nullptr ? cursor : "", limit, &more);
  std::string body = "{\"connections\":[";
  for (size_t i = 0; i < page.size(); ++i) {
    if (i > 0) body.push_back(',');
    body += EntryJson(page[i]);
  }
  body += "],\"next_cursor\":";
  body += more ? JsonString(page.back().id) : "null";
  body += "}\n";
  Finish(request, "GET", 200, body);
}

metrics::ConnectionsApiSample ConnectionsApi::MetricsSample() const {
  metrics::ConnectionsApiSample sample;
  sample.requests = answered_;
  sample.connections = index_.size();
  const HookCounters& hooks = index_.hook_counters();
  auto value = [](const std::atomic<uint64_t>& counter) {
    return counter.load(std::memory_order_relaxed);
  };
  sample.disconnect_delivered = value(hooks.disconnect_delivered);
  sample.disconnect_retried = value(hooks.disconnect_retried);
  sample.disconnect_failed = value(hooks.disconnect_failed);
  sample.disconnect_dropped = value(hooks.disconnect_dropped);
  sample.auth_allowed = value(hooks.auth_allowed);
  sample.auth_denied = value(hooks.auth_denied);
  sample.auth_failed = value(hooks.auth_failed);
  sample.auth_cache_hits = value(hooks.auth_cache_hits);
  return sample;
}

}  // namespace wsgate
