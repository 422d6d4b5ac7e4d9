#include "proxy/connections/identity.h"

#include <algorithm>
#include <charconv>

#include "proxy/core/json.h"

namespace wsgate {
namespace {

std::string CheckName(std::string_view name, const char* what, bool allow_comma) {
  if (name.empty()) return std::string(what) + " is empty";
  if (name.size() > kMaxNameBytes) return std::string(what) + " is longer than 128 bytes";
  for (char c : name) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) return std::string(what) + " has a control byte";
    if (c == ',' && !allow_comma) return std::string(what) + " has a comma";
  }
  return {};
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

}  // namespace

bool ConnectionIdentity::HasTag(std::string_view tag) const {
  return std::binary_search(tags.begin(), tags.end(), tag);
}

bool ConnectionIdentity::SetTag(const std::string& tag, bool present) {
  auto at = std::lower_bound(tags.begin(), tags.end(), tag);
  bool found = at != tags.end() && *at == tag;
  if (found == present) return false;
  if (present) {
    tags.insert(at, tag);
  } else {
    tags.erase(at);
  }
  return true;
}

std::string CheckUserName(std::string_view name) { return CheckName(name, "user", true); }

std::string CheckTagName(std::string_view name) { return CheckName(name, "tag", false); }

std::string ParseIdentity(const char* user, const char* tags, const char* expires,
                          ConnectionIdentity* out) {
  *out = ConnectionIdentity{};
  if (user != nullptr) {
    std::string_view name = Trim(user);
    if (std::string error = CheckUserName(name); !error.empty()) return "X-Wsgate-User: " + error;
    out->user.assign(name);
  }
  if (tags != nullptr) {
    std::string_view rest = tags;
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      std::string_view tag = Trim(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (tag.empty()) continue;
      if (std::string error = CheckTagName(tag); !error.empty()) return "X-Wsgate-Tags: " + error;
      out->tags.emplace_back(tag);
    }
    std::sort(out->tags.begin(), out->tags.end());
    out->tags.erase(std::unique(out->tags.begin(), out->tags.end()), out->tags.end());
    if (out->tags.size() > kMaxTags) return "X-Wsgate-Tags: more than 64 tags";
  }
  if (expires != nullptr) {
    std::string_view text = Trim(expires);
    int64_t value = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || error != std::errc() || end != text.data() + text.size() || value <= 0) {
      return "X-Wsgate-Expires: expected Unix seconds";
    }
    out->expires_at = value;
  }
  return {};
}

std::string IdentityHeaderLines(const ConnectionIdentity& identity) {
  std::string lines;
  if (!identity.user.empty()) lines += "X-Wsgate-User: " + identity.user + "\r\n";
  if (!identity.tags.empty()) {
    lines += "X-Wsgate-Tags: ";
    for (size_t i = 0; i < identity.tags.size(); ++i) {
      if (i > 0) lines.push_back(',');
      lines += identity.tags[i];
    }
    lines += "\r\n";
  }
  if (identity.expires_at != 0) {
    lines += "X-Wsgate-Expires: " + std::to_string(identity.expires_at) + "\r\n";
  }
  return lines;
}

std::string TagsJson(const std::vector<std::string>& tags) {
  std::string json = "[";
  for (size_t i = 0; i < tags.size(); ++i) {
    if (i > 0) json.push_back(',');
    json += JsonString(tags[i]);
  }
  json.push_back(']');
  return json;
}

}  // namespace wsgate
