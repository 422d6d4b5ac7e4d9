#include "proxy/http/request_key.h"

namespace wsgate::http {

bool FindCookie(const HeadView& request, std::string_view name, std::string_view* value) {
  for (const auto& field : request.parser().fields()) {
    if (!EqualsIgnoreCase(request.Get(field.name), "cookie")) continue;
    std::string_view list = request.Get(field.value);
    size_t pos = 0;
    while (pos <= list.size()) {
      size_t semicolon = list.find(';', pos);
      if (semicolon == std::string_view::npos) semicolon = list.size();
      std::string_view pair = TrimOws(list.substr(pos, semicolon - pos));
      size_t equals = pair.find('=');
      if (equals != std::string_view::npos && TrimOws(pair.substr(0, equals)) == name) {
        std::string_view v = TrimOws(pair.substr(equals + 1));
        if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
        *value = v;
        return true;
      }
      pos = semicolon + 1;
    }
  }
  return false;
}

bool FindQueryParameter(std::string_view target, std::string_view name, std::string_view* value) {
  size_t question = target.find('?');
  if (question == std::string_view::npos) return false;
  std::string_view query = target.substr(question + 1);
  query = query.substr(0, query.find('#'));
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view pair = query.substr(pos, amp - pos);
    size_t equals = pair.find('=');
    std::string_view key = pair.substr(0, equals);
    if (key == name) {
      *value = equals == std::string_view::npos ? std::string_view() : pair.substr(equals + 1);
      return true;
    }
    pos = amp + 1;
  }
  return false;
}

bool ExtractStickyKey(const HeadView& request, const config::StickyConfig& config,
                      std::string_view client_ip, std::string_view path, std::string* key) {
  using Source = config::StickyConfig::KeySource;
  std::string_view found;
  bool present = false;
  switch (config.source) {
    case Source::kCookie:
      present = FindCookie(request, config.key_name, &found);
      break;
    case Source::kHeader:
      found = request.Field(config.key_name, &present);
      break;
    case Source::kQuery:
      present = FindQueryParameter(request.Get(request.parser().target()), config.key_name, &found);
      break;
    case Source::kClientIp:
      found = client_ip;
      present = true;
      break;
    case Source::kPath:
      found = path;
      present = true;
      break;
  }
  if (!present || found.empty()) return false;
  key->assign(found);
  return true;
}

}  // namespace wsgate::http
