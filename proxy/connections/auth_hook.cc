#include "proxy/connections/auth_hook.h"

namespace wsgate {

HeaderList AuthRequestHeaders(const http::HeadView& request, const config::AuthConfig& auth,
                              const std::string& client_ip, const std::string& connection_id,
                              std::string_view target) {
  HeaderList headers;
  for (const std::string& name : auth.forward_headers) {
    bool found = false;
    std::string_view value = request.Field(name, &found);
    if (found) headers.emplace_back(name, std::string(value));
  }
  const http::HeadParser& head = request.parser();
  headers.emplace_back("X-Original-Uri", std::string(target));
  headers.emplace_back("X-Original-Method", std::string(request.Get(head.method())));
  headers.emplace_back("X-Forwarded-For", client_ip);
  headers.emplace_back("X-Wsgate-Connection-Id", connection_id);
  return headers;
}

std::string AuthCacheKey(const http::HeadView& request, const config::AuthConfig& auth,
                         std::string_view target) {
  std::string key(target);
  for (const std::string& name : auth.forward_headers) {
    bool found = false;
    std::string_view value = request.Field(name, &found);
    // Length-prefixed, so no choice of values can make two different sets collide.
    key.push_back('\0');
    if (found) {
      key += std::to_string(value.size());
      key.push_back(':');
      key.append(value);
    }
  }
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
