#include "proxy/router.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/config.h"

namespace wsgate {
namespace {

config::RouteConfig MakeRoute(std::string host, std::string prefix, std::string pool) {
  config::RouteConfig route;
  route.match.host = std::move(host);
  route.match.path_prefix = std::move(prefix);
  route.pool = std::move(pool);
  return route;
}

// Pool indices deliberately differ from route order.
const std::vector<std::string> kPools = {"default", "api", "api_v1", "wild", "public", "dup"};

const std::vector<config::RouteConfig> kRoutes = {
    MakeRoute("api.example.com", "/v1", "api_v1"),  // 0
    MakeRoute("API.Example.com", "", "api"),        // 1 (upper case in the config)
    MakeRoute("*.example.com", "/ws", "wild"),      // 2
    MakeRoute("", "/public", "public"),             // 3
    MakeRoute("api.example.com", "", "dup"),        // 4: shadowed by route 1
    MakeRoute("", "", "default"),                   // 5: catch-all
};

void ExpectRoute(const Router& router, std::string_view host, std::string_view path, int route,
                 int pool) {
  SCOPED_TRACE(std::string(host) + " " + std::string(path));
  Router::Match m = router.Route(host, path);
  EXPECT_EQ(m.route, route);
  EXPECT_EQ(m.pool, pool);
}

TEST(RouterTest, FirstMatchWins) {
  Router router(kRoutes, kPools);
  ExpectRoute(router, "api.example.com", "/v1/chat", 0, 2);
  ExpectRoute(router, "api.example.com", "/v1", 0, 2);
  ExpectRoute(router, "api.example.com", "/v2", 1, 1);
  ExpectRoute(router, "api.example.com", "/", 1, 1);
  // Route 1 also matches /ws on the wildcard host: it comes first.
  ExpectRoute(router, "api.example.com", "/ws", 1, 1);
  ExpectRoute(router, "api.example.com", "/public", 1, 1);
}

TEST(RouterTest, HostIsCaseInsensitive) {
  Router router(kRoutes, kPools);
  ExpectRoute(router, "API.EXAMPLE.COM", "/v1", 0, 2);
  ExpectRoute(router, "Api.Example.Com", "/x", 1, 1);
  ExpectRoute(router, "A.EXAMPLE.COM", "/ws", 2, 3);
}

TEST(RouterTest, TrailingDot) {
  Router router(kRoutes, kPools);
  ExpectRoute(router, "api.example.com.", "/v1", 0, 2);
  ExpectRoute(router, "api.example.com.", "/x", 1, 1);
  ExpectRoute(router, "a.example.com.", "/ws", 2, 3);
  ExpectRoute(router, "api.example.com..", "/x", 5, 0);  // only one dot is dropped
}

TEST(RouterTest, WildcardMatchesSubdomainsOnly) {
  Router router(kRoutes, kPools);
  ExpectRoute(router, "a.example.com", "/ws", 2, 3);
  ExpectRoute(router, "a.example.com", "/ws/room/1", 2, 3);
  ExpectRoute(router, "x.y.example.com", "/ws", 2, 3);
  ExpectRoute(router, "example.com", "/ws", 5, 0);     // the apex is not a subdomain
  ExpectRoute(router, ".example.com", "/ws", 5, 0);    // empty label
  ExpectRoute(router, "notexample.com", "/ws", 5, 0);  // not a label boundary
  ExpectRoute(router, "a.example.com.evil", "/ws", 5, 0);
  ExpectRoute(router, "a.example.co", "/ws", 5, 0);
  ExpectRoute(router, "a.example.com", "/w", 5, 0);  // path does not match
}

TEST(RouterTest, PathPrefix) {
  Router router(kRoutes, kPools);
  ExpectRoute(router, "other.org", "/public", 3, 4);
  ExpectRoute(router, "other.org", "/public/feed", 3, 4);
  ExpectRoute(router, "other.org", "/public/", 3, 4);
  ExpectRoute(router, "other.org", "/public?x", 5, 0);  // |path| never has a query
  // Whole segments only: a route meant for /public must not catch /public-admin.
  ExpectRoute(router, "other.org", "/publicity", 5, 0);
  ExpectRoute(router, "other.org", "/public-admin/x", 5, 0);
  ExpectRoute(router, "other.org", "/public.json", 5, 0);
  ExpectRoute(router, "other.org", "/Public", 5, 0);  // paths are case-sensitive
  ExpectRoute(router, "other.org", "/pub", 5, 0);
  ExpectRoute(router, "other.org", "", 5, 0);
  ExpectRoute(router, "api.example.com", "/V1", 1, 1);
}

TEST(RouterTest, PrefixEndingInSlashIsPlain) {
  const std::vector<config::RouteConfig> routes = {
      MakeRoute("", "/api/", "p0"),
      MakeRoute("", "/", "p1"),
  };
  Router router(routes, {"p0", "p1"});
  ExpectRoute(router, "a.test", "/api/", 0, 0);
  ExpectRoute(router, "a.test", "/api/v1", 0, 0);
  ExpectRoute(router, "a.test", "/api", 1, 1);  // not under "/api/"
  ExpectRoute(router, "a.test", "/apix", 1, 1);
  ExpectRoute(router, "a.test", "/", 1, 1);
  ExpectRoute(router, "a.test", "/anything", 1, 1);
}

// Requests are routed by their normalised path (paths.normalize): a prefix written in another
// form must be compared in normal form too, or its requests fall through to the catch-all.
TEST(RouterTest, PrefixIsNormalisedLikeTheTargets) {
  const std::vector<config::RouteConfig> routes = {
      MakeRoute("", "/%7euser/admin", "p0"),
      MakeRoute("", "/caf%c3%a9", "p0"),
      MakeRoute("", "/a/./b/../c", "p0"),
      MakeRoute("", "//merged", "p0"),
      MakeRoute("", "/", "p1"),
  };
  config::PathsConfig paths;
  paths.merge_slashes = true;
  Router router(routes, {"p0", "p1"}, &paths);
  ExpectRoute(router, "a.test", "/~user/admin", 0, 0);  // what "/%7Euser/admin" normalises to
  ExpectRoute(router, "a.test", "/caf%C3%A9", 1, 0);
  ExpectRoute(router, "a.test", "/a/c/x", 2, 0);
  ExpectRoute(router, "a.test", "/merged", 3, 0);
  ExpectRoute(router, "a.test", "/other", 4, 1);
}

TEST(RouterTest, CatchAll) {
  Router router(kRoutes, kPools);
  ExpectRoute(router, "other.org", "/", 5, 0);
  ExpectRoute(router, "", "/", 5, 0);
  ExpectRoute(router, "127.0.0.1", "/anything?x", 5, 0);
}

TEST(RouterTest, NoMatch) {
  const std::vector<config::RouteConfig> routes = {
      MakeRoute("a.test", "/", "p0"),
      MakeRoute("*.b.test", "/ws", "p1"),
  };
  Router router(routes, {"p0", "p1"});
  ExpectRoute(router, "a.test", "/chat", 0, 0);
  ExpectRoute(router, "x.b.test", "/ws", 1, 1);
  ExpectRoute(router, "c.test", "/", -1, -1);
  ExpectRoute(router, "b.test", "/ws", -1, -1);
  ExpectRoute(router, "", "/", -1, -1);
  ExpectRoute(router, "a.test", "", -1, -1);

  Router empty({}, {"p0"});
  ExpectRoute(empty, "a.test", "/", -1, -1);
}

TEST(RouterTest, RouteToUnknownPoolIsSkipped) {
  const std::vector<config::RouteConfig> routes = {
      MakeRoute("", "/", "missing"),
      MakeRoute("", "/", "p1"),
  };
  Router router(routes, {"p0", "p1"});
  ExpectRoute(router, "a.test", "/", 1, 1);
}

}  // namespace
}  // namespace wsgate
