// Who a connection belongs to, as the auth hook vouches for it (docs/fleet.md): the
// X-Wsgate-User, X-Wsgate-Tags and X-Wsgate-Expires fields of its 2xx answer. Users and tags
// address connections in the API (push or close by user or tag, fleet-wide with `cluster`).
// Pure: unit-tested and fuzzed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace wsgate {

struct ConnectionIdentity {
  std::string user;               // empty = none
  std::vector<std::string> tags;  // sorted, unique
  int64_t expires_at = 0;         // Unix seconds; 0 = never

  bool empty() const { return user.empty() && tags.empty() && expires_at == 0; }
  bool HasTag(std::string_view tag) const;
  // Add or remove |tag|; false when nothing changed.
  bool SetTag(const std::string& tag, bool present);
  bool operator==(const ConnectionIdentity&) const = default;
};

constexpr size_t kMaxNameBytes = 128;  // a user or a tag
constexpr size_t kMaxTags = 64;        // per connection

// A user or tag name: 1..128 bytes, no control bytes; a tag also has no comma (the header
// separates tags with commas). Returns an error message, empty when valid.
std::string CheckUserName(std::string_view name);
std::string CheckTagName(std::string_view name);

// Parse the auth answer's fields (null = absent). Returns an error message naming the field,
// empty when valid. Tags are trimmed, blanks dropped, sorted and de-duplicated.
std::string ParseIdentity(const char* user, const char* tags, const char* expires,
                          ConnectionIdentity* out);

// The fields a backend is given, each "Name: value\r\n" (nothing for an empty identity).
std::string IdentityHeaderLines(const ConnectionIdentity& identity);

// The tags as a JSON array of strings.
std::string TagsJson(const std::vector<std::string>& tags);

}  // namespace wsgate
