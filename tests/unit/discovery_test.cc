// proxy/discovery.h: discovered names become one backend per address; validation leaves them to
// discovery; the next generation drains the addresses that vanished.
#include "proxy/discovery.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

#include "config/loader.h"
#include "proxy/runtime.h"
#include "tests/unit/config_load_util.h"

namespace wsgate {
namespace {

// Pool "app" (discovery) with a name no resolver knows, a weight and an id, plus an IP entry;
// pool "plain" without discovery.
const char kDiscovery[] =
    "listeners:\n  - name: public\n    address: 127.0.0.1:8080\n"
    "routes:\n  - pool: app\n"
    "pools:\n"
    "  - name: app\n"
    "    discovery: {}\n"
    "    backends:\n"
    "      - {address: chat.invalid:9000, weight: 3, id: chat}\n"
    "      - {address: 127.0.0.9:9000}\n"
    "  - name: plain\n"
    "    backends: [{address: 127.0.0.1:9001}]\n";

std::vector<std::string> Addresses(const config::PoolConfig& pool) {
  std::vector<std::string> out;
  for (const auto& backend : pool.backends) out.push_back(backend.address.text);
  return out;
}

TEST(DiscoveryTest, EveryAddressBecomesABackendWithTheEntrysPortWeightAndId) {
  const config::ProxyConfig source = config::Load(kDiscovery);
  config::ResolvedBackends resolved;
  const DiscoveredAddresses known = {
      {"app", {{"chat.invalid:9000", {"10.0.0.1", "127.0.0.9", "2001:db8::1"}}}}};
  const config::ProxyConfig expanded = ExpandDiscovered(source, known, &resolved);
  // In answer order; the IP entry the name also resolves to is listed once.
  EXPECT_EQ(Addresses(expanded.pools[0]),
            (std::vector<std::string>{"10.0.0.1:9000", "127.0.0.9:9000", "[2001:db8::1]:9000"}));
  EXPECT_EQ(expanded.pools[0].backends[0].weight, 3u);
  EXPECT_EQ(expanded.pools[0].backends[0].id, "chat/10.0.0.1:9000");
  EXPECT_EQ(expanded.pools[0].backends[0].origin.line, source.pools[0].backends[0].origin.line);
  EXPECT_EQ(expanded.pools[1], source.pools[1]);
  ASSERT_EQ(resolved.count("[2001:db8::1]:9000"), 1u);
  const auto& v6 = reinterpret_cast<const sockaddr_in6&>(resolved["[2001:db8::1]:9000"].addr);
  EXPECT_EQ(v6.sin6_family, AF_INET6);
  EXPECT_EQ(ntohs(v6.sin6_port), 9000);
  const auto& v4 = reinterpret_cast<const sockaddr_in&>(resolved["10.0.0.1:9000"].addr);
  EXPECT_EQ(v4.sin_addr.s_addr, inet_addr("10.0.0.1"));
}

TEST(DiscoveryTest, ANameWithNoAddressYetLeavesOnlyTheOtherEntries) {
  const config::ProxyConfig expanded = ExpandDiscovered(config::Load(kDiscovery), {}, nullptr);
  EXPECT_EQ(Addresses(expanded.pools[0]), (std::vector<std::string>{"127.0.0.9:9000"}));
}

TEST(DiscoveryTest, ValidationLeavesDiscoveredNamesToDiscovery) {
  // Resolving chat.invalid would fail; a pool without discovery still has its names checked.
  EXPECT_TRUE(ValidateConfig(config::Load(kDiscovery), nullptr).empty());
  std::string without = kDiscovery;
  without.replace(without.find("    discovery: {}\n"), 18, "");
  const config::ConfigErrors errors = ValidateConfig(config::Load(without), nullptr);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].key_path, "pools[0].backends[0].address");
}

TEST(DiscoveryTest, AVanishedAddressIsRemovedAndAKeptOneIsShared) {
  const config::ProxyConfig source = config::Load(kDiscovery);
  config::ResolvedBackends resolved;
  Result<RuntimePtr> first = BuildRuntime(
      ExpandDiscovered(source, {{"app", {{"chat.invalid:9000", {"10.0.0.1", "10.0.0.2"}}}}},
                       &resolved),
      nullptr, resolved);
  ASSERT_TRUE(first.ok()) << first.error();
  Result<RuntimePtr> next = BuildRuntime(
      ExpandDiscovered(source, {{"app", {{"chat.invalid:9000", {"10.0.0.2", "10.0.0.3"}}}}},
                       &resolved),
      first.value().get(), resolved, /*reuse_tls=*/true);
  ASSERT_TRUE(next.ok()) << next.error();
  const std::vector<BackendPtr> removed = RemovedBackends(*first.value(), *next.value());
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0]->address, "10.0.0.1:9000");
  EXPECT_EQ(first.value()->pools[0].backends[1], next.value()->pools[0].backends[0]);
  EXPECT_EQ(next.value()->pools[0].backends[1]->address, "10.0.0.3:9000");
}

TEST(DiscoveryTest, StartupReportsAnUnresolvableRequiredNameAtItsEntry) {
  // A nameserver that is not listening: evdns gives up after its attempts.
  config::ProxyConfig config =
      config::Load(std::string(kDiscovery) + "resolver: {nameservers: [\"127.0.0.1:9\"]}\n");
  StartupResolution required = ResolveAtStart(config);
  ASSERT_EQ(required.errors.size(), 1u);
  EXPECT_EQ(required.errors[0].Format().rfind(
                "t.yaml:10:19: pools[0].backends[0].address: cannot resolve chat.invalid: ", 0),
            0u)
      << required.errors[0].Format();
  EXPECT_TRUE(required.warnings.empty());
  config.pools[0].discovery.require_at_start = false;
  StartupResolution optional = ResolveAtStart(config);
  EXPECT_TRUE(optional.errors.empty());
  ASSERT_EQ(optional.warnings.size(), 1u);
  EXPECT_NE(optional.warnings[0].message.find("require_at_start is false"), std::string::npos);
}

}  // namespace
}  // namespace wsgate
