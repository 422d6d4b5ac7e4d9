#include "proxy/connections/auth_hook.h"

namespace wsgate {
namespace {

// Every value of every auth.forward_headers field, in order: what the hook is asked about and
// what the cache key covers come from this one walk, so the two cannot disagree.
template <typename Fn>
void ForEachForwardedValue(const http::HeadView& request, const config::AuthConfig& auth, Fn fn) {
  const http::HeadParser& head = request.parser();
  for (const std::string& name : auth.forward_headers) {
    for (const auto& field : head.fields()) {
      if (http::EqualsIgnoreCase(request.Get(field.name), name)) fn(name, request.Get(field.value));
    }
  }
}

}  // namespace

HeaderList AuthRequestHeaders(const http::HeadView& request, const config::AuthConfig& auth,
                              const std::string& client_ip, const std::string& connection_id,
                              std::string_view target) {
  HeaderList headers;
  ForEachForwardedValue(request, auth, [&headers](const std::string& name, std::string_view value) {
    headers.emplace_back(name, std::string(value));
  });
  const http::HeadParser& head = request.parser();
  headers.emplace_back("X-Original-Uri", std::string(target));
  headers.emplace_back("X-Original-Method", std::string(request.Get(head.method())));
  headers.emplace_back("X-Forwarded-For", client_ip);
  headers.emplace_back("X-Wsgate-Connection-Id", connection_id);
  return headers;
}

std::string AuthCacheKey(const http::HeadView& request, const config::AuthConfig& auth,
                         std::string_view target) {
  const http::HeadParser& head = request.parser();
  std::string key(request.Get(head.method()));
  key.push_back(' ');
  key.append(target);
  // Length-prefixed, so no choice of values can make two different sets collide; each name's
  // values are counted, so a value cannot move from one name to the next.
  for (const std::string& name : auth.forward_headers) {
    key.push_back('\0');
    key.append(std::to_string(request.FieldCount(name)));
    key.push_back('\0');
  }
  ForEachForwardedValue(request, auth, [&key](const std::string&, std::string_view value) {
    key += std::to_string(value.size());
    key.push_back(':');
    key.append(value);
  });
  return key;
}

const AuthDecision* AuthCache::Find(const std::string& key, Clock::time_point now) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return nullptr;
  if (it->second.expires <= now) {
    entries_.erase(it);  // its key stays in order_ until evicted; erasing twice is harmless
    return nullptr;
  }
  return &it->second.decision;
}

void AuthCache::Put(const std::string& key, AuthDecision decision, Clock::time_point expires,
                    size_t capacity) {
  while (!order_.empty() && (entries_.size() >= capacity || order_.size() >= 2 * capacity)) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
  if (entries_.insert_or_assign(key, Entry{std::move(decision), expires}).second) {
    order_.push_back(key);
  }
}

}  // namespace wsgate
