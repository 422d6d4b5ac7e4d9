// PlanUpgrade (pure): a client's valid upgrade head → the normalised target, the placement, the
// request the backend gets and what the auth hook is sent.
#include "proxy/upgrade_request.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <string>

#include "metrics/metrics.h"
#include "tests/unit/upstream_test_util.h"

namespace wsgate {
namespace {

constexpr char kKey[] = "dGhlIHNhbXBsZSBub25jZQ==";

// Pool "chat" behind /chat only, and |extra| top-level YAML (auth, limits, paths).
std::string Yaml(const std::string& extra = "", const std::string& route_extra = "") {
  return "listeners:\n  - name: public\n    address: 127.0.0.1:8080\n"
         "routes:\n  - match: {path_prefix: /chat}\n    pool: chat\n" +
         route_extra + "pools:\n  - name: chat\n    backends:\n      - address: 127.0.0.1:9001\n" +
         extra;
}

std::string Upgrade(const std::string& target, const std::string& fields = "") {
  return "GET " + target +
         " HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: " +
         kKey + "\r\nSec-WebSocket-Version: 13\r\n" + fields + "\r\n";
}

// The lines of a head, for looking fields up by their exact text.
bool HasLine(const std::string& head, const std::string& line) {
  return head.find("\r\n" + line + "\r\n") != std::string::npos;
}
bool HasField(const std::string& head, const std::string& name) {
  return head.find("\r\n" + name + ":") != std::string::npos;
}

struct Planner {
  explicit Planner(const std::string& yaml)
      : runtime(BuildTestRuntime(yaml)), placement("test", *runtime, metrics) {
    peer.sin_family = AF_INET;
    peer.sin_port = htons(40000);
    inet_pton(AF_INET, "10.0.0.7", &peer.sin_addr);
    client.connection_id = "c0ffee";
    client.peer = reinterpret_cast<const sockaddr*>(&peer);
  }
  UpgradePlan Plan(const std::string& head) {
    ParsedRequest request(head);
    http::ClientHandshakePolicy policy{&runtime->config.limits.allowed_origins};
    http::ClientHandshake handshake = http::CheckClientHandshake(request.view(), policy);
    EXPECT_EQ(handshake.status, 0) << handshake.reason;
    return PlanUpgrade(request.view(), handshake, runtime->config, client, placement);
  }
  RuntimePtr runtime;
  metrics::Registry metrics{"test"};
  UpstreamAttempt placement;
  sockaddr_in peer{};
  UpgradeClient client;
};

TEST(PlanUpgradeTest, ValidUpgradeIsPlacedWithTheNormalisedTargetAndTheAccept) {
  Planner p(Yaml());
  UpgradePlan plan = p.Plan(Upgrade("/chat/./room/../lobby?x=1"));
  ASSERT_EQ(plan.status, 0) << plan.reason;
  EXPECT_EQ(plan.path, "/chat/lobby");
  EXPECT_EQ(plan.expected_accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");  // RFC 6455 §1.3
  EXPECT_TRUE(p.placement.placed());
  EXPECT_EQ(p.placement.pool().name, "chat");
  EXPECT_EQ(plan.upstream_request.rfind("GET /chat/lobby?x=1 HTTP/1.1\r\n", 0), 0u)
      << plan.upstream_request;
  EXPECT_TRUE(HasLine(plan.upstream_request, "X-Forwarded-For: 10.0.0.7"));
  EXPECT_TRUE(HasLine(plan.upstream_request, std::string("Sec-WebSocket-Key: ") + kKey));
  EXPECT_FALSE(plan.authorize);
}

TEST(PlanUpgradeTest, AnUnnormalisableTargetIs400WithTheReason) {
  Planner p(Yaml());
  UpgradePlan plan = p.Plan(Upgrade("/chat/a%2Fb"));
  EXPECT_EQ(plan.status, 400);
  EXPECT_EQ(plan.reason, "encoded slash or backslash (%2F, %5C) in the request path");
  EXPECT_TRUE(plan.upstream_request.empty());
  EXPECT_FALSE(p.placement.placed());

  plan = p.Plan(Upgrade("/chat/%zz"));
  EXPECT_EQ(plan.status, 400);
  EXPECT_EQ(plan.reason, "malformed percent-encoding in the request target");
}

TEST(PlanUpgradeTest, NoRouteIs404) {
  Planner p(Yaml());
  UpgradePlan plan = p.Plan(Upgrade("/elsewhere"));
  EXPECT_EQ(plan.status, 404);
  EXPECT_EQ(plan.reason, "no route for this host and path");
  EXPECT_TRUE(plan.upstream_request.empty());
  EXPECT_TRUE(plan.expected_accept.empty());
  // Routing sees the normalised path: a dot segment cannot step out of /chat's pool.
  EXPECT_EQ(p.Plan(Upgrade("/chat/../admin")).status, 404);
}

TEST(PlanUpgradeTest, CallbackUrlAndConnectionIdOnlyWhenTheConnectionsApiIsOn) {
  Planner p(Yaml());
  // A client cannot state them itself either way.
  const std::string spoofed = "X-Wsgate-Connection-Id: forged\r\nX-Wsgate-Callback-Url: x\r\n";
  UpgradePlan off = p.Plan(Upgrade("/chat", spoofed));
  ASSERT_EQ(off.status, 0);
  EXPECT_FALSE(HasField(off.upstream_request, "X-Wsgate-Connection-Id"));
  EXPECT_FALSE(HasField(off.upstream_request, "X-Wsgate-Callback-Url"));

  p.client.callback_base = "http://10.1.2.3:9090";
  UpgradePlan on = p.Plan(Upgrade("/chat", spoofed));
  ASSERT_EQ(on.status, 0);
  EXPECT_TRUE(HasLine(on.upstream_request, "X-Wsgate-Connection-Id: c0ffee"));
  EXPECT_TRUE(HasLine(on.upstream_request,
                      "X-Wsgate-Callback-Url: http://10.1.2.3:9090/connections/c0ffee"));
  EXPECT_EQ(on.upstream_request.find("forged"), std::string::npos) << on.upstream_request;
}

const char kAuth[] =
    "auth:\n  url: http://127.0.0.1:9000/ws-auth\n  forward_headers: [Cookie]\n"
    "  copy_headers: [X-User-Id]\n";

TEST(PlanUpgradeTest, CopyHeadersFromTheClientAreStrippedOnEveryRoute) {
  for (const char* route_auth : {"", "    auth: false\n"}) {
    Planner p(Yaml(kAuth, route_auth));
    p.client.auth_available = true;
    UpgradePlan plan = p.Plan(Upgrade("/chat", "X-User-Id: admin\r\nCookie: s=1\r\n"));
    ASSERT_EQ(plan.status, 0) << plan.reason;
    EXPECT_FALSE(HasField(plan.upstream_request, "X-User-Id")) << route_auth;
    EXPECT_TRUE(HasLine(plan.upstream_request, "Cookie: s=1"));
  }
  // Without an auth section nothing names X-User-Id: it is forwarded.
  Planner none(Yaml());
  UpgradePlan plan = none.Plan(Upgrade("/chat", "X-User-Id: admin\r\n"));
  EXPECT_TRUE(HasLine(plan.upstream_request, "X-User-Id: admin"));
}

TEST(PlanUpgradeTest, AuthorizeOnlyWithAuthOnTheRouteAndAHookAvailable) {
  Planner on(Yaml(kAuth));
  on.client.auth_available = true;
  UpgradePlan plan = on.Plan(Upgrade("/chat?room=1", "Cookie: s=1\r\n"));
  ASSERT_EQ(plan.status, 0);
  EXPECT_TRUE(plan.authorize);
  EXPECT_FALSE(plan.auth_headers.empty());
  bool original_uri = false;
  for (const auto& [name, value] : plan.auth_headers) {
    if (name == "X-Original-Uri") original_uri = value == "/chat?room=1";
  }
  EXPECT_TRUE(original_uri);
  EXPECT_TRUE(plan.auth_cache_key.empty());  // cache_ttl 0: not cached

  Planner unavailable(Yaml(kAuth));
  unavailable.client.auth_available = false;
  plan = unavailable.Plan(Upgrade("/chat"));
  EXPECT_FALSE(plan.authorize);
  EXPECT_TRUE(plan.auth_headers.empty());

  Planner skipped(Yaml(kAuth, "    auth: false\n"));
  skipped.client.auth_available = true;
  EXPECT_FALSE(skipped.Plan(Upgrade("/chat")).authorize);

  Planner off(Yaml());
  off.client.auth_available = true;
  EXPECT_FALSE(off.Plan(Upgrade("/chat")).authorize);
}

TEST(PlanUpgradeTest, AuthCacheKeyOnlyWithACacheTtl) {
  Planner p(Yaml(std::string(kAuth) + "  cache_ttl: 30s\n"));
  p.client.auth_available = true;
  UpgradePlan plan = p.Plan(Upgrade("/chat", "Cookie: s=1\r\n"));
  ASSERT_TRUE(plan.authorize);
  EXPECT_FALSE(plan.auth_cache_key.empty());
  UpgradePlan other = p.Plan(Upgrade("/chat", "Cookie: s=2\r\n"));
  EXPECT_NE(other.auth_cache_key, plan.auth_cache_key);  // a forwarded header is part of it
}

std::string ExtensionsSent(const std::string& compression, const std::string& offer) {
  Planner p(Yaml("limits:\n  compression: " + compression + "\n"));
  UpgradePlan plan = p.Plan(Upgrade("/chat", "Sec-WebSocket-Extensions: " + offer + "\r\n"));
  EXPECT_EQ(plan.status, 0) << plan.reason;
  std::string all;
  const std::string name = "\r\nSec-WebSocket-Extensions: ";
  for (size_t at = plan.upstream_request.find(name); at != std::string::npos;
       at = plan.upstream_request.find(name, at + 1)) {
    size_t start = at + name.size();
    if (!all.empty()) all += " | ";
    all += plan.upstream_request.substr(start, plan.upstream_request.find("\r\n", start) - start);
  }
  return all;
}

TEST(PlanUpgradeTest, DeflateOffersFollowLimitsCompression) {
  const std::string offer =
      "permessage-deflate; client_max_window_bits, x-webkit-deflate-frame, x-custom";
  EXPECT_EQ(ExtensionsSent("strip", offer), "x-custom");
  EXPECT_EQ(ExtensionsSent("inspect", offer),
            "permessage-deflate; client_max_window_bits, x-custom");
  EXPECT_EQ(ExtensionsSent("passthrough", offer), offer);
  EXPECT_EQ(ExtensionsSent("strip", "permessage-deflate"), "");  // no field left at all
  EXPECT_EQ(ExtensionsSent("inspect", "permessage-deflate"), "permessage-deflate");
}

}  // namespace
}  // namespace wsgate
