#include "proxy/router.h"

#include "proxy/http/head_parser.h"
#include "proxy/http/request_target.h"

namespace wsgate {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return out;
}

bool HostMatches(const std::string& pattern, std::string_view host) {
  if (pattern.empty()) return true;
  if (pattern.size() > 2 && pattern[0] == '*' && pattern[1] == '.') {
    std::string_view suffix = std::string_view(pattern).substr(1);  // ".example.com"
    return host.size() > suffix.size() &&
           http::EqualsIgnoreCase(host.substr(host.size() - suffix.size()), suffix);
  }
  return http::EqualsIgnoreCase(pattern, host);
}

// "/public" matches "/public" and "/public/..." but not "/publicity"; a prefix ending in "/"
// (or "/" itself) is a plain prefix.
bool PathMatches(const std::string& prefix, std::string_view path) {
  if (path.substr(0, prefix.size()) != prefix) return false;
  return prefix.empty() || prefix.back() == '/' || path.size() == prefix.size() ||
         path[prefix.size()] == '/';
}

}  // namespace

Router::Router(const std::vector<config::RouteConfig>& routes,
               const std::vector<std::string>& pool_names, const config::PathsConfig* paths) {
  for (const auto& route : routes) {
    Entry entry{Lower(route.match.host), route.match.path_prefix, -1};
    // Paths are matched normalised: a prefix that is not ("/%7Euser", "/caf%c3%a9", "/a/./b")
    // would never match, and its requests would fall through to a later (maybe auth: false) route.
    std::string normalized;
    if (paths != nullptr && entry.path_prefix.find_first_of("?#") == std::string::npos &&
        http::NormalizeTarget(entry.path_prefix, *paths, &normalized) == http::TargetError::kNone) {
      // "/a/" stays a plain prefix; "/a/." -> "/a/" as well.
      entry.path_prefix = std::move(normalized);
    }
    if (!entry.host.empty() && entry.host.back() == '.') entry.host.pop_back();
    for (size_t i = 0; i < pool_names.size(); ++i) {
      if (pool_names[i] == route.pool) entry.pool = static_cast<int>(i);
    }
    entries_.push_back(std::move(entry));
  }
}

Router::Match Router::Route(std::string_view host, std::string_view path) const {
  // A trailing dot names the same host (RFC 1034 §3.1).
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& entry = entries_[i];
    if (entry.pool < 0 || !HostMatches(entry.host, host)) continue;
    if (!PathMatches(entry.path_prefix, path)) continue;
    return Match{static_cast<int>(i), entry.pool};
  }
  return Match{};
}

}  // namespace wsgate
