// The admin listener's Host / Origin / Sec-Fetch-Site rules (proxy/admin_guard.h).
#include "proxy/admin_guard.h"

#include <gtest/gtest.h>

namespace wsgate {
namespace {

AdminRequestHeaders Headers(const char* host, const char* origin = nullptr,
                            const char* fetch_site = nullptr) {
  AdminRequestHeaders headers;
  if (host != nullptr) {
    headers.host = host;
    headers.host_count = 1;
  }
  if (origin != nullptr) {
    headers.origin = origin;
    headers.origin_count = 1;
  }
  if (fetch_site != nullptr) headers.fetch_site = fetch_site;
  return headers;
}

TEST(AdminGuardTest, HostOfHostHeader) {
  EXPECT_EQ(HostOfHostHeader("LocalHost:9901"), "localhost");
  EXPECT_EQ(HostOfHostHeader("127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(HostOfHostHeader("[::1]:80"), "::1");
  EXPECT_EQ(HostOfHostHeader("[::1]"), "::1");
  EXPECT_EQ(HostOfHostHeader(""), std::nullopt);
  EXPECT_EQ(HostOfHostHeader("a:b"), std::nullopt);
  EXPECT_EQ(HostOfHostHeader("a:"), std::nullopt);
  EXPECT_EQ(HostOfHostHeader("a:123456"), std::nullopt);
  EXPECT_EQ(HostOfHostHeader("[::1"), std::nullopt);
  EXPECT_EQ(HostOfHostHeader("[evil]:80"), std::nullopt);
  EXPECT_EQ(HostOfHostHeader("a b"), std::nullopt);
  EXPECT_EQ(HostOfHostHeader("::1"), std::nullopt);  // IPv6 needs brackets
}

TEST(AdminGuardTest, LoopbackListenerAcceptsItsOwnNamesOnly) {
  const AdminRequestPolicy policy = MakeAdminRequestPolicy("127.0.0.1", "127.0.0.1", "", {}, {});
  for (const char* host :
       {"127.0.0.1:9901", "127.0.0.1", "localhost:1", "LOCALHOST", "[::1]:9901"}) {
    EXPECT_EQ(CheckAdminRequest(policy, Headers(host)), AdminVerdict::kAllowed) << host;
  }
  // DNS rebinding: the attacker's name, or another address.
  for (const char* host : {"evil.example", "evil.example:9901", "10.0.0.5:9901", "localhost.",
                           "127.0.0.2", "bad host"}) {
    EXPECT_EQ(CheckAdminRequest(policy, Headers(host)), AdminVerdict::kBadHost) << host;
  }
  // HTTP/1.0 without Host: not a browser.
  EXPECT_EQ(CheckAdminRequest(policy, Headers(nullptr)), AdminVerdict::kAllowed);
  AdminRequestHeaders twice = Headers("127.0.0.1");
  twice.host_count = 2;
  EXPECT_EQ(CheckAdminRequest(policy, twice), AdminVerdict::kBadHost);
}

TEST(AdminGuardTest, BoundAddressPublicUrlAndAllowedHosts) {
  const AdminRequestPolicy policy = MakeAdminRequestPolicy(
      "10.0.0.5", "10.0.0.5", "https://Gate.Example:8443/base", {"ops.internal"}, {});
  for (const char* host : {"10.0.0.5:9901", "gate.example", "ops.internal:9901"}) {
    EXPECT_EQ(CheckAdminRequest(policy, Headers(host)), AdminVerdict::kAllowed) << host;
  }
  EXPECT_EQ(CheckAdminRequest(policy, Headers("10.0.0.6:9901")), AdminVerdict::kBadHost);
}

TEST(AdminGuardTest, WildcardListenerAcceptsIpLiteralsButNotNames) {
  for (const char* bound : {"0.0.0.0", "::"}) {
    const AdminRequestPolicy policy = MakeAdminRequestPolicy(bound, bound, "", {"gate"}, {});
    for (const char* host : {"10.1.2.3:9901", "[fd00::7]:9901", "gate", "localhost:9901"}) {
      EXPECT_EQ(CheckAdminRequest(policy, Headers(host)), AdminVerdict::kAllowed) << host;
    }
    EXPECT_EQ(CheckAdminRequest(policy, Headers("pod.evil.example:9901")), AdminVerdict::kBadHost);
  }
}

TEST(AdminGuardTest, OriginAndFetchSite) {
  const AdminRequestPolicy policy =
      MakeAdminRequestPolicy("127.0.0.1", "127.0.0.1", "", {}, {"https://ops.example"});
  EXPECT_EQ(CheckAdminRequest(policy, Headers("127.0.0.1", "https://evil.example")),
            AdminVerdict::kBadOrigin);
  EXPECT_EQ(CheckAdminRequest(policy, Headers("127.0.0.1", "null")), AdminVerdict::kBadOrigin);
  EXPECT_EQ(CheckAdminRequest(policy, Headers("127.0.0.1", "https://ops.example.evil")),
            AdminVerdict::kBadOrigin);
  EXPECT_EQ(CheckAdminRequest(policy, Headers("127.0.0.1", "https://ops.example", "cross-site")),
            AdminVerdict::kAllowed);
  EXPECT_EQ(CheckAdminRequest(policy, Headers("127.0.0.1", nullptr, "cross-site")),
            AdminVerdict::kBadFetchSite);
  EXPECT_EQ(CheckAdminRequest(policy, Headers("127.0.0.1", nullptr, "same-site")),
            AdminVerdict::kBadFetchSite);
  EXPECT_EQ(CheckAdminRequest(policy, Headers("127.0.0.1", nullptr, "none")),
            AdminVerdict::kAllowed);
  AdminRequestHeaders twice = Headers("127.0.0.1", "https://ops.example");
  twice.origin_count = 2;
  EXPECT_EQ(CheckAdminRequest(policy, twice), AdminVerdict::kBadOrigin);
  // The Host check comes first: an allowed Origin does not excuse a rebinding Host.
  EXPECT_EQ(CheckAdminRequest(policy, Headers("evil.example", "https://ops.example")),
            AdminVerdict::kBadHost);
}

}  // namespace
}  // namespace wsgate
