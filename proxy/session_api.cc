// Session's parts for the connections API and the hooks (docs/connections-api.md), kept apart
// from session.cc: registration, pushes, API close and info, auth ($connect), on_disconnect.
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include <cstring>

#include "proxy/connections/disconnect_hook.h"
#include "proxy/core/json.h"
#include "proxy/core/log.h"
#include "proxy/session.h"
#include "proxy/ws/frame.h"

namespace wsgate {

// ---------------------------------------------------------------------------------------------
// auth ($connect).

void Session::StartAuth(const HeaderList& headers, std::string cache_key) {
  if (config().auth.revalidate_interval.count() > 0 && !revalidation_) {
    revalidation_ = std::make_unique<Revalidation>();  // asked again with the same headers
    revalidation_->headers = headers;
  }
  const config::AuthConfig& auth = config().auth;
  HookCounters& counters = context_.connections->index()->hook_counters();
  if (!cache_key.empty()) {
    if (const AuthDecision* cached =
            context_.connections->auth_cache().Find(cache_key, std::chrono::steady_clock::now())) {
      counters.auth_cache_hits.fetch_add(1, std::memory_order_relaxed);
      ApplyAuthDecision(*cached);
      return;
    }
  }
  state_ = State::kAuthorizing;
  handshake_->auth_cache_key = std::move(cache_key);
  ArmTimer(auth.timeout + std::chrono::seconds(1));
  std::string error;
  handshake_->auth_call = HookCall::Start(
      context_.loop.base(), auth.url, EVHTTP_REQ_GET, headers, {}, auth.timeout,
      [this](evhttp_request* response) {
        // A session rejected meanwhile (timer, drain) ignores the late answer.
        if (state_ == State::kAuthorizing) OnAuthAnswer(response);
      },
      &error);
  if (!handshake_->auth_call) {
    LOG_WARN("auth: " + error);
    counters.auth_failed.fetch_add(1, std::memory_order_relaxed);
    Reject(503, "the auth service is unavailable", "Retry-After: 1\r\n");
  }
}

void Session::OnAuthAnswer(evhttp_request* response) {
  context_.loop.DeferDelete(std::move(handshake_->auth_call));  // we are inside its callback
  HookCounters& counters = context_.connections->index()->hook_counters();
  int status = response != nullptr ? evhttp_request_get_response_code(response) : 0;
  AuthDecision decision;
  decision.status = status;
  evkeyvalq* answer = response != nullptr ? evhttp_request_get_input_headers(response) : nullptr;
  if (status >= 200 && status < 300) {
    for (const std::string& name : config().auth.copy_headers) {
      const char* value = evhttp_find_header(answer, name.c_str());
      if (value != nullptr && std::strpbrk(value, "\r\n") == nullptr) {
        decision.copy_headers.emplace_back(name, value);
      }
    }
    std::string error = ParseIdentity(
        evhttp_find_header(answer, "X-Wsgate-User"), evhttp_find_header(answer, "X-Wsgate-Tags"),
        evhttp_find_header(answer, "X-Wsgate-Expires"), &decision.identity);
    if (!error.empty()) {
      // A malformed identity is the auth service's fault: fail closed, as for a 5xx.
      counters.auth_failed.fetch_add(1, std::memory_order_relaxed);
      LOG_WARN("auth: the auth service's answer is unusable: " + error);
      Reject(503, "the auth service is unavailable", "Retry-After: 1\r\n");
      return;
    }
  } else if (status == 401 || status == 403) {
    const char* challenge = evhttp_find_header(answer, "WWW-Authenticate");
    if (challenge != nullptr && std::strpbrk(challenge, "\r\n") == nullptr) {
      decision.www_authenticate = challenge;
    }
  } else {
    counters.auth_failed.fetch_add(1, std::memory_order_relaxed);
    LOG_WARN("auth: " + (status == 0 ? std::string("no answer from the auth service")
                                     : "the auth service answered " + std::to_string(status)));
    Reject(503, "the auth service is unavailable", "Retry-After: 1\r\n");
    return;
  }
  const config::AuthConfig& auth = config().auth;
  if (!handshake_->auth_cache_key.empty()) {
    context_.connections->auth_cache().Put(handshake_->auth_cache_key, decision,
                                           std::chrono::steady_clock::now() + auth.cache_ttl,
                                           static_cast<size_t>(auth.cache_size));
  }
  ApplyAuthDecision(decision);
}

void Session::ApplyAuthDecision(const AuthDecision& decision) {
  HookCounters& counters = context_.connections->index()->hook_counters();
  if (decision.status < 200 || decision.status >= 300) {
    counters.auth_denied.fetch_add(1, std::memory_order_relaxed);
    std::string extra;
    if (!decision.www_authenticate.empty()) {
      extra = "WWW-Authenticate: " + decision.www_authenticate + "\r\n";
    }
    Reject(decision.status, "denied by the auth service", extra);
    return;
  }
  const ConnectionIdentity& identity = decision.identity;
  if (identity.expires_at != 0 &&
      identity.expires_at <= std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count()) {
    counters.auth_denied.fetch_add(1, std::memory_order_relaxed);
    Reject(401, "credentials expired");
    return;
  }
  if (!identity.empty()) identity_ = std::make_unique<ConnectionIdentity>(identity);
  std::string lines = IdentityHeaderLines(identity);
  for (const auto& [name, value] : decision.copy_headers) lines += name + ": " + value + "\r\n";
  handshake_->upstream_request.insert(handshake_->upstream_request.size() - 2,
                                      lines);  // before the final CRLF
  counters.auth_allowed.fetch_add(1, std::memory_order_relaxed);
  AdmitUserThenConnect();
}

// ---------------------------------------------------------------------------------------------
// auth.revalidate_interval.

int64_t Session::UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t Session::RevalidateSeconds() const {
  return std::max<int64_t>(
      1,
      std::chrono::duration_cast<std::chrono::seconds>(config().auth.revalidate_interval).count());
}

void Session::Revalidate() {
  if (!revalidation_ || state_ == State::kFinished) return;
  if (state_ != State::kSpliced || tunnel_->closing()) {
    if (state_ != State::kSpliced) {
      context_.connections->ScheduleRevalidation(id_, UnixNow() + 1);  // still upgrading
    }
    return;
  }
  context_.connections->ScheduleRevalidation(id_, UnixNow() + RevalidateSeconds());
  if (revalidation_->call) return;  // the last one is still out; its timeout bounds it
  const config::AuthConfig& auth = config().auth;
  std::string error;
  revalidation_->call = HookCall::Start(
      context_.loop.base(), auth.url, EVHTTP_REQ_GET, revalidation_->headers, {}, auth.timeout,
      [this](evhttp_request* response) { OnRevalidated(response); }, &error);
  if (!revalidation_->call) {
    context_.connections->index()->hook_counters().revalidation_failed.fetch_add(1);
    LOG_WARN("auth: revalidation: " + error);
  }
}

void Session::OnRevalidated(evhttp_request* response) {
  context_.loop.DeferDelete(std::move(revalidation_->call));  // we are inside its callback
  HookCounters& counters = context_.connections->index()->hook_counters();
  int status = response != nullptr ? evhttp_request_get_response_code(response) : 0;
  if (state_ != State::kSpliced) return;
  if (status == 401 || status == 403) {
    counters.revalidation_revoked.fetch_add(1, std::memory_order_relaxed);
    CloseByApi(ws::kPolicyViolation, "credentials revoked");
    return;
  }
  if (status < 200 || status >= 300) {
    // The hook being away must not close every connection: they stay, and it is asked again.
    counters.revalidation_failed.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  counters.revalidation_allowed.fetch_add(1, std::memory_order_relaxed);
  // A new expiry (renewed credentials) replaces the old one.
  const char* expires =
      evhttp_find_header(evhttp_request_get_input_headers(response), "X-Wsgate-Expires");
  ConnectionIdentity renewed;
  if (expires != nullptr && ParseIdentity(nullptr, nullptr, expires, &renewed).empty() &&
      identity_ && renewed.expires_at != identity_->expires_at) {
    identity_->expires_at = renewed.expires_at;
    context_.connections->ScheduleExpiry(id_, renewed.expires_at);
  }
}

void Session::AdmitUserThenConnect() {
  ConnectionDirectory* directory = context_.connections;
  if (!identity_ || identity_->user.empty() || directory == nullptr) return ConnectUpstream();
  const uint64_t cap = config().limits.max_connections_per_user;
  uint64_t local = 0;
  if (!directory->index()->AddUser(identity_->user, cap, &local)) return RejectOverUserLimit();
  user_counted_ = true;
  UserGate* gate = directory->index()->user_gate();
  if (gate == nullptr || cap == 0) return ConnectUpstream();
  // The fleet-wide count lives in Redis: wait for its answer (bounded by the timer).
  state_ = State::kAuthorizing;
  ArmTimer(config().cluster.command_timeout + std::chrono::seconds(1));
  handshake_->gate_token = std::make_shared<int>(0);
  std::weak_ptr<int> waiting = handshake_->gate_token;
  gate->Admit(identity_->user, local, cap, context_.loop, [this, waiting](bool admit) {
    // The session (and its handshake with the token) may have ended meanwhile.
    if (waiting.expired() || state_ != State::kAuthorizing) return;
    if (!admit) return RejectOverUserLimit();
    ConnectUpstream();
  });
}

void Session::RejectOverUserLimit() {
  ReleaseUser();
  meters_.OverrideRefusal(metrics::kUserLimit);
  Reject(429, "too many connections for this user");
}

void Session::ReleaseUser() {
  if (!user_counted_) return;
  user_counted_ = false;
  context_.connections->index()->RemoveUser(identity_->user);
}

// ---------------------------------------------------------------------------------------------
// Connections API.

void Session::RegisterConnection() {
  ConnectionDirectory* directory = context_.connections;
  if (directory == nullptr || directory->index() == nullptr) return;
  const bool first = !registered_;
  if (first) connected_at_ = std::chrono::system_clock::now();
  if (first && revalidation_) {
    directory->ScheduleRevalidation(id_, UnixNow() + RevalidateSeconds());
  }
  // The API lives on the admin listener: without one, nobody could use the index entry; the
  // worker still finds a connection with an expiry or revalidation in its directory.
  if (!config().admin.enabled) {
    if (first && (identity_ || revalidation_)) {
      directory->Add(id_, this, identity_.get());
      registered_ = true;
      directory_only_ = true;
    }
    return;
  }
  ConnectionEntry entry;
  entry.id = id_;
  entry.worker = directory->worker();
  entry.client = peer_text();
  entry.listener = listener_name_;
  entry.route = std::to_string(upstream_.route_index());
  entry.pool = pool().name;
  entry.backend = chosen_backend_->address;
  entry.subprotocol = subprotocol_;
  entry.connected_at_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(connected_at_.time_since_epoch())
          .count();
  if (identity_) entry.identity = *identity_;
  directory->index()->Add(std::move(entry));
  directory->Add(id_, this, identity_.get());
  registered_ = true;
}

void Session::UnregisterConnection() {
  if (!registered_) return;
  registered_ = false;
  context_.connections->Remove(id_, identity_.get());
  if (!directory_only_) context_.connections->index()->Remove(id_);
}

void Session::NotifyDisconnect(const AccessRecord& r) {
  const config::DisconnectHookConfig& hook = config().on_disconnect;
  if (!hook.enabled) return;
  std::string body = "{\"id\":" + JsonString(id_) + ",\"pool\":" + JsonString(r.pool) +
                     ",\"backend\":" + JsonString(r.backend) +
                     ",\"listener\":" + JsonString(r.listener) +
                     ",\"client\":" + JsonString(r.client) + ",\"path\":" + JsonString(r.path) +
                     ",\"duration_seconds\":" + std::to_string(r.duration_seconds) +
                     ",\"close_code\":" + std::to_string(r.close_code) +
                     ",\"close_reason\":" + JsonString(r.reason) +
                     ",\"initiator\":" + JsonString(ClosedByName(r.closed_by)) +
                     ",\"bytes_from_client\":" + std::to_string(r.bytes_in) +
                     ",\"bytes_to_client\":" + std::to_string(r.bytes_out) +
                     ",\"messages_from_client\":" + std::to_string(r.messages_in) +
                     ",\"messages_to_client\":" + std::to_string(r.messages_out) +
                     ",\"pushed_messages\":" + std::to_string(r.messages_pushed) + "}";
  context_.connections->disconnect_hook(context_.loop).Send(hook, std::move(body));
}

int Session::Push(evbuffer* payload, bool text) {
  if (state_ == State::kSpliced) return tunnel_->Push(payload, text);
  // During the upgrade the message waits for the 101 (it is dropped if the upgrade fails).
  if (state_ != State::kUpstream || !client_.open()) return 410;
  PushQueue& pushes = handshake_->pushes;
  if (pushes.queued_bytes() >= high_watermark()) return 429;
  return pushes.Add(payload, text) ? 200 : 503;
}

int Session::CloseByApi(uint16_t code, const std::string& reason) {
  if (state_ == State::kUpstream) return 409;  // no close frame can be sent yet
  if (state_ != State::kSpliced) return 410;
  return tunnel_->CloseByApi(code, reason);
}

int Session::SetTag(const std::string& tag, bool present, std::string* tags_json) {
  if (state_ != State::kSpliced && state_ != State::kUpstream) return 410;
  if (!identity_) identity_ = std::make_unique<ConnectionIdentity>();
  if (present && !identity_->HasTag(tag) && identity_->tags.size() >= kMaxTags) return 409;
  if (identity_->SetTag(tag, present) && registered_) {
    context_.connections->SetTag(id_, tag, present);
    context_.connections->index()->SetTags(id_, identity_->tags);
  }
  *tags_json = TagsJson(identity_->tags);
  return 200;
}

const char* Session::StateName() const {
  if (state_ != State::kSpliced) return "upgrading";
  return tunnel_->closing() ? "closing" : "open";
}

std::string Session::InfoJson() const {
  auto now_steady = std::chrono::steady_clock::now();
  auto last_active = tunnel_ ? std::max(tunnel_->last_activity(), started_at_) : started_at_;
  auto last_activity =
      std::chrono::system_clock::now() -
      std::chrono::duration_cast<std::chrono::system_clock::duration>(now_steady - last_active);
  auto ms = [](std::chrono::system_clock::time_point t) {
    return std::to_string(
        std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count());
  };
  AccessRecord counts = MakeAccessRecord(true);
  return "{\"id\":" + JsonString(id_) + ",\"client\":" + JsonString(peer_text()) +
         ",\"listener\":" + JsonString(listener_name_) +
         ",\"route\":" + std::to_string(upstream_.route_index()) +
         ",\"pool\":" + JsonString(upstream_.pool().name) +
         ",\"backend\":" + JsonString(chosen_backend_ ? chosen_backend_->address : last_backend_) +
         ",\"path\":" + JsonString(path_) + ",\"subprotocol\":" + JsonString(subprotocol_) +
         ",\"state\":\"" + StateName() + "\",\"connected_at_ms\":" + ms(connected_at_) +
         ",\"user\":" +
         (identity_ && !identity_->user.empty() ? JsonString(identity_->user) : "null") +
         ",\"tags\":" + TagsJson(identity_ ? identity_->tags : std::vector<std::string>{}) +
         ",\"expires_at\":" +
         (identity_ && identity_->expires_at != 0 ? std::to_string(identity_->expires_at)
                                                  : "null") +
         ",\"instance\":" +
         (config().cluster.enabled ? JsonString(config().cluster.instance) : "null") +
         ",\"last_activity_ms\":" + ms(last_activity) +
         ",\"bytes_from_client\":" + std::to_string(counts.bytes_in) +
         ",\"bytes_to_client\":" + std::to_string(counts.bytes_out) +
         ",\"messages_from_client\":" + std::to_string(counts.messages_in) +
         ",\"messages_to_client\":" + std::to_string(counts.messages_out) +
         ",\"pushed_messages\":" + std::to_string(counts.messages_pushed) + "}";
}

}  // namespace wsgate
