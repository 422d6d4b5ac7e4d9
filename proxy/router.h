// Stage 2 of 4: pick the pool for an upgrade request by Host and path prefix. First match wins.
// Pure; no libevent.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace wsgate {

class Router {
 public:
  // |routes| must name pools in |pool_names|, in the same order as the runtime pools. With
  // |paths|, each path_prefix is normalised as request targets are (proxy/http/request_target.h),
  // so "/%7Euser" or "/a/./b" still matches the requests it names once they are normalised.
  Router(const std::vector<config::RouteConfig>& routes, const std::vector<std::string>& pool_names,
         const config::PathsConfig* paths = nullptr);

  struct Match {
    int route = -1;  // index into the config's routes; -1 = no route
    int pool = -1;   // index of the pool
  };

  // |host| is the Host field without port; matching is case-insensitive. |path| excludes the query.
  // A path prefix matches whole segments: "/public" takes "/public" and "/public/x", not
  // "/publicity"; a prefix ending in "/" matches any path that starts with it.
  Match Route(std::string_view host, std::string_view path) const;

 private:
  struct Entry {
    std::string host;  // lower-case; "" = any; "*.example.com" = any subdomain
    std::string path_prefix;
    int pool = -1;
  };
  std::vector<Entry> entries_;
};

}  // namespace wsgate
