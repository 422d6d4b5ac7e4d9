#include "proxy/connections/api.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>

#include "proxy/admin.h"
#include "proxy/connections/identity.h"
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
    case EVHTTP_REQ_PUT:
      return "PUT";
    default:
      return "other";
  }
}

std::string EntryJson(const ConnectionEntry& e) {
  return "{\"id\":" + JsonString(e.id) + ",\"client\":" + JsonString(e.client) +
         ",\"listener\":" + JsonString(e.listener) + ",\"route\":" + e.route +
         ",\"pool\":" + JsonString(e.pool) + ",\"backend\":" + JsonString(e.backend) +
         ",\"subprotocol\":" + JsonString(e.subprotocol) +
         ",\"connected_at_ms\":" + std::to_string(e.connected_at_ms) + ",\"user\":" +
         (e.identity.user.empty() ? std::string("null") : JsonString(e.identity.user)) +
         ",\"tags\":" + TagsJson(e.identity.tags) + "}";
}

// Push |payload| to |connection| without copying it: the message's evbuffer refers to the
// shared string, which lives until the last connection has sent it.
int PushShared(LiveConnection& connection, const std::shared_ptr<const std::string>& payload,
               bool text) {
  std::unique_ptr<evbuffer, decltype(&evbuffer_free)> message(evbuffer_new(), evbuffer_free);
  if (!message) return 503;
  if (payload && !payload->empty()) {
    auto* hold = new std::shared_ptr<const std::string>(payload);
    evbuffer_add_reference(
        message.get(), (*hold)->data(), (*hold)->size(),
        [](const void*, size_t, void* held) {
          delete static_cast<std::shared_ptr<const std::string>*>(held);
        },
        hold);
  }
  return connection.Push(message.get(), text);
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

bool ConnectionsApi::ParseConnectionAction(evhttp_request* request,
                                           const std::vector<std::string>& parts, Action* action,
                                           std::shared_ptr<evbuffer>* payload) {
  evhttp_cmd_type method = evhttp_request_get_command(request);
  const char* method_name = MethodName(method);
  if (parts.size() == 4 && parts[2] == "tags") {
    if (method != EVHTTP_REQ_PUT && method != EVHTTP_REQ_DELETE) {
      Finish(request, method_name, 405, ErrorJson("use PUT or DELETE"));
      return false;
    }
    if (std::string error = CheckTagName(parts[3]); !error.empty()) {
      Finish(request, method_name, 400, ErrorJson(error));
      return false;
    }
    *action = [tag = parts[3], present = method == EVHTTP_REQ_PUT](LiveConnection& session) {
      std::string tags;
      int status = session.SetTag(tag, present, &tags);
      std::string body = status == 200   ? "{\"tags\":" + tags + "}\n"
                         : status == 409 ? ErrorJson("the connection has 64 tags already")
                                         : ErrorJson("connection closing");
      return std::make_pair(status, body);
    };
    return true;
  }
  if (parts.size() != 2) {
    Finish(request, method_name, 404, ErrorJson("not found"));
    return false;
  }
  switch (method) {
    case EVHTTP_REQ_GET:
    case EVHTTP_REQ_HEAD:
      *action = [](LiveConnection& session) {
        return std::make_pair(200, session.InfoJson() + "\n");
      };
      return true;
    case EVHTTP_REQ_POST: {
      bool text = false;
      if (!ReadMessage(request, &text, payload)) return false;
      *action = [payload = *payload, text](LiveConnection& session) {
        int status = session.Push(payload.get(), text);
        const char* body = status == 200   ? "{\"queued\":true}\n"
                           : status == 429 ? "{\"error\":\"the client's send queue is full\"}\n"
                                           : "{\"error\":\"connection closing\"}\n";
        return std::make_pair(status, std::string(body));
      };
      return true;
    }
    case EVHTTP_REQ_DELETE: {
      uint16_t code = 0;
      std::string reason;
      if (!ReadClose(request, &code, &reason)) return false;
      *action = [code, reason](LiveConnection& session) {
        int status = session.CloseByApi(code, reason);
        const char* body = status == 200   ? "{\"closing\":true}\n"
                           : status == 409 ? "{\"error\":\"the upgrade is still in progress\"}\n"
                                           : "{\"error\":\"connection closing\"}\n";
        return std::make_pair(status, std::string(body));
      };
      return true;
    }
    default:
      Finish(request, method_name, 405, ErrorJson("use GET, POST or DELETE"));
      return false;
  }
}

bool ConnectionsApi::ReadMessage(evhttp_request* request, bool* text,
                                 std::shared_ptr<evbuffer>* payload) {
  const char* method_name = MethodName(evhttp_request_get_command(request));
  evbuffer* input = evhttp_request_get_input_buffer(request);
  size_t length = evbuffer_get_length(input);
  if (length > max_message_bytes_) {
    Finish(request, method_name, 413, ErrorJson("body is larger than limits.max_message_bytes"));
    return false;
  }
  *text = IsTextContentType(
      evhttp_find_header(evhttp_request_get_input_headers(request), "Content-Type"));
  if (*text && length > 0) {
    // Not a hot path: one linear view of the body for the UTF-8 check.
    const uint8_t* data = evbuffer_pullup(input, -1);
    if (data == nullptr || !ws::IsValidUtf8(data, length)) {
      Finish(request, method_name, 400, ErrorJson("text body is not valid UTF-8"));
      return false;
    }
  }
  // The request keeps its buffer until answered; the worker gets its own chain (moved).
  payload->reset(evbuffer_new(), evbuffer_free);
  if (!*payload) {
    Finish(request, method_name, 503, ErrorJson("out of memory"));
    return false;
  }
  evbuffer_add_buffer(payload->get(), input);
  return true;
}

bool ConnectionsApi::ReadClose(evhttp_request* request, uint16_t* code, std::string* reason) {
  AdminQuery query(request);
  std::string error = query.ok
                          ? ParseCloseRequest(query.Get("code"), query.Get("reason"), code, reason)
                          : "malformed query string";
  if (error.empty()) return true;
  Finish(request, MethodName(evhttp_request_get_command(request)), 400, ErrorJson(error));
  return false;
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
  const std::string& id = parts[1];
  bool id_ok = LooksLikeId(id);
  std::optional<ConnectionEntry> entry;
  if (id_ok) entry = index_.Find(id);
  if (entry && entry->worker >= workers_.size()) entry.reset();
  Action action;
  std::shared_ptr<evbuffer> payload;
  if (!ParseConnectionAction(request, parts, &action, &payload)) return;
  if (!entry) {
    // Another instance's connection? Never for a request another instance forwarded: the
    // owner answers for itself, so a stale registry cannot make requests loop.
    bool forwarded =
        evhttp_find_header(evhttp_request_get_input_headers(request), kForwardedHeader) != nullptr;
    if (id_ok && fleet_ != nullptr && !forwarded && !index_.RecentlyClosed(id)) {
      return ForwardToOwner(request, id, std::move(payload), admin_alive);
    }
    if (id_ok && index_.RecentlyClosed(id)) {
      return Finish(request, method_name, 410, ErrorJson("connection closed"));
    }
    return Finish(request, method_name, 404, ErrorJson("no such connection"));
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

void ConnectionsApi::ForwardToOwner(evhttp_request* request, const std::string& id,
                                    std::shared_ptr<evbuffer> payload,
                                    const std::shared_ptr<const bool>& admin_alive) {
  evhttp_cmd_type method = evhttp_request_get_command(request);
  const char* method_name = MethodName(method);
  const char* type = evhttp_find_header(evhttp_request_get_input_headers(request), "Content-Type");
  std::string content_type = type != nullptr ? type : "";
  std::string target = evhttp_request_get_uri(request);
  fleet_->FindOwner(id, [this, request, admin_alive, method, method_name, content_type, target,
                         payload =
                             std::move(payload)](const FleetLink::OwnerAnswer& owner) mutable {
    if (!*admin_alive) return;
    switch (owner.owner) {
      case FleetLink::Owner::kUnknown:
        return Finish(request, method_name, 404, ErrorJson("no such connection"));
      case FleetLink::Owner::kClosed:
        return Finish(request, method_name, 410, ErrorJson("connection closed"));
      case FleetLink::Owner::kDead:
        return Finish(request, method_name, 410,
                      ErrorJson("instance " + owner.instance + " holding the connection is gone"));
      case FleetLink::Owner::kUnavailable:
        return Unavailable(request, method_name);
      case FleetLink::Owner::kAlive:
        break;
    }
    if (owner.instance == fleet_->instance()) {
      // The registry still names us, but the connection is gone from here.
      return Finish(request, method_name, 410, ErrorJson("connection closed"));
    }
    fleet_->Forward(owner.url, method, target, content_type, std::move(payload),
                    [this, request, admin_alive, method_name](const FleetLink::Reply& reply) {
                      if (!*admin_alive) return;
                      if (reply.status == 0) {
                        return Finish(request, method_name, 502,
                                      ErrorJson("the instance holding the connection did not "
                                                "answer"));
                      }
                      Finish(request, method_name, reply.status, reply.body);
                    });
  });
}

void ConnectionsApi::Unavailable(evhttp_request* request, const char* method_name) {
  evhttp_add_header(evhttp_request_get_output_headers(request), "Retry-After", "1");
  Finish(request, method_name, 503, ErrorJson("the fleet registry (Redis) is unavailable"));
}

void ConnectionsApi::HandleGroup(evhttp_request* request, const std::vector<std::string>& parts,
                                 const std::shared_ptr<const bool>& admin_alive) {
  evhttp_cmd_type method = evhttp_request_get_command(request);
  const char* method_name = MethodName(method);
  GroupOp op;
  op.kind = parts[0] == "users" ? GroupOp::Kind::kUser : GroupOp::Kind::kTag;
  bool messages = parts.size() == 3 && parts[2] == "messages";
  if (parts.size() != 2 && !messages) {
    return Finish(request, method_name, 404, ErrorJson("not found"));
  }
  op.key = parts[1];
  std::string error =
      op.kind == GroupOp::Kind::kUser ? CheckUserName(op.key) : CheckTagName(op.key);
  if (!error.empty()) return Finish(request, method_name, 400, ErrorJson(error));
  if (messages) {
    if (method != EVHTTP_REQ_POST) return Finish(request, method_name, 405, ErrorJson("use POST"));
    std::shared_ptr<evbuffer> body;
    if (!ReadMessage(request, &op.text, &body)) return;
    std::string payload(evbuffer_get_length(body.get()), '\0');
    evbuffer_remove(body.get(), payload.data(), payload.size());
    op.action = GroupOp::Action::kPush;
    op.payload = std::make_shared<const std::string>(std::move(payload));
    return FinishGroup(request, method_name, op, admin_alive);
  }
  if (method == EVHTTP_REQ_DELETE) {
    if (!ReadClose(request, &op.code, &op.reason)) return;
    op.action = GroupOp::Action::kClose;
    return FinishGroup(request, method_name, op, admin_alive);
  }
  if (op.kind != GroupOp::Kind::kUser || (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD)) {
    return Finish(request, method_name, 405,
                  ErrorJson(op.kind == GroupOp::Kind::kUser ? "use GET or DELETE" : "use DELETE"));
  }
  auto answer = [this, request, method_name, user = op.key](long count) {
    if (count < 0) return Unavailable(request, method_name);
    Finish(request, method_name, 200,
           "{\"user\":" + JsonString(user) + ",\"connections\":" + std::to_string(count) + "}\n");
  };
  if (fleet_ == nullptr) return answer(static_cast<long>(index_.UserCount(op.key)));
  fleet_->CountUser(op.key, [answer, admin_alive](long count) {
    if (*admin_alive) answer(count);
  });
}

void ConnectionsApi::FinishGroup(evhttp_request* request, const char* method_name,
                                 const GroupOp& op,
                                 const std::shared_ptr<const bool>& admin_alive) {
  if (fleet_ != nullptr) {
    // Every instance (this one too) delivers to its own connections when the message arrives.
    fleet_->Publish(op, [this, request, method_name, admin_alive](long instances) {
      if (!*admin_alive) return;
      if (instances < 0) return Unavailable(request, method_name);
      Finish(request, method_name, 202, "{\"instances\":" + std::to_string(instances) + "}\n");
    });
    return;
  }
  DeliverGroup(op, [this, request, method_name, admin_alive](size_t matched) {
    if (*admin_alive) {
      Finish(request, method_name, 200, "{\"connections\":" + std::to_string(matched) + "}\n");
    }
  });
}

void ConnectionsApi::DeliverGroup(const GroupOp& op, std::function<void(size_t matched)> done) {
  struct Tally {
    size_t workers_left;
    size_t matched = 0;
    std::function<void(size_t)> done;
  };
  auto tally = std::make_shared<Tally>(Tally{workers_.size(), 0, std::move(done)});
  if (workers_.empty()) return tally->done(0);
  EventLoop* main_loop = &main_loop_;
  for (Worker* target : workers_) {
    target->Do([op, tally, main_loop](Worker& worker) {
      ConnectionDirectory& directory = worker.connections();
      std::vector<std::string> ids = op.kind == GroupOp::Kind::kUser ? directory.IdsOfUser(op.key)
                                                                     : directory.IdsWithTag(op.key);
      size_t matched = 0;
      for (const std::string& id : ids) {
        LiveConnection* connection = directory.Find(id);
        if (connection == nullptr || connection->ended()) continue;
        int status = op.action == GroupOp::Action::kPush
                         ? PushShared(*connection, op.payload, op.text)
                         : connection->CloseByApi(op.code, op.reason);
        if (status == 200) ++matched;
      }
      main_loop->Post([tally, matched] {
        tally->matched += matched;
        if (--tally->workers_left == 0) tally->done(tally->matched);
      });
    });
  }
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
  sample.revalidation_allowed = value(hooks.revalidation_allowed);
  sample.revalidation_revoked = value(hooks.revalidation_revoked);
  sample.revalidation_failed = value(hooks.revalidation_failed);
  return sample;
}

}  // namespace wsgate
