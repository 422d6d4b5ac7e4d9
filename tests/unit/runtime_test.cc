// proxy/runtime.h: a generation's backends take the addresses the validation stage resolved.
#include "proxy/runtime.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

#include "config/loader.h"
#include "tests/unit/config_load_util.h"

namespace wsgate {
namespace {

// Pool "app" with one backend whose name no resolver knows (.invalid is reserved, RFC 6761).
const char kUnresolvable[] =
    "listeners:\n  - name: public\n    address: 127.0.0.1:8080\n"
    "routes:\n  - pool: app\n"
    "pools:\n  - name: app\n    backends:\n      - address: no-such-backend.invalid:9003\n";

config::ResolvedAddress Loopback(uint16_t port) {
  config::ResolvedAddress address;
  auto* in = reinterpret_cast<sockaddr_in*>(&address.addr);
  in->sin_family = AF_INET;
  in->sin_port = htons(port);
  in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.len = sizeof(sockaddr_in);
  return address;
}

TEST(BuildRuntimeTest, NewBackendTakesTheValidatedAddressWithoutResolvingAgain) {
  // Resolving the name would fail: success shows the handed answer was used instead.
  const config::ResolvedBackends resolved = {{"no-such-backend.invalid:9003", Loopback(9003)}};
  Result<RuntimePtr> runtime = BuildRuntime(config::Load(kUnresolvable), nullptr, resolved);
  ASSERT_TRUE(runtime.ok()) << runtime.error();
  const Backend& backend = *runtime.value()->pools.at(0).backends.at(0);
  ASSERT_EQ(backend.sockaddr.ss_family, AF_INET);
  ASSERT_EQ(backend.sockaddr_len, sizeof(sockaddr_in));
  const auto* in = reinterpret_cast<const sockaddr_in*>(&backend.sockaddr);
  EXPECT_EQ(ntohs(in->sin_port), 9003);
  EXPECT_EQ(ntohl(in->sin_addr.s_addr), INADDR_LOOPBACK);
}

TEST(BuildRuntimeTest, BackendWithoutAValidatedAddressIsResolvedHere) {
  Result<RuntimePtr> runtime = BuildRuntime(config::Load(kUnresolvable), nullptr);
  ASSERT_FALSE(runtime.ok());
  EXPECT_EQ(runtime.error().rfind("pool app: cannot resolve no-such-backend.invalid:9003: ", 0), 0u)
      << runtime.error();
}

TEST(BuildRuntimeTest, ValidateConfigHandsOnWhatItResolved) {
  config::ProxyConfig config = config::Load(
      "listeners:\n  - name: public\n    address: 127.0.0.1:8080\n"
      "routes:\n  - pool: a\n"
      "pools:\n  - name: a\n    backends:\n      - address: 127.0.0.1:9001\n"
      "  - name: b\n    backends:\n      - address: 127.0.0.1:9001\n"
      "      - address: localhost:9002\n");
  config::ResolvedBackends resolved;
  EXPECT_TRUE(ValidateConfig(config, nullptr, &resolved).empty());
  ASSERT_EQ(resolved.size(), 2u);  // one answer per address, however many pools name it
  EXPECT_EQ(
      ntohs(reinterpret_cast<const sockaddr_in*>(&resolved.at("127.0.0.1:9001").addr)->sin_port),
      9001);
  EXPECT_EQ(resolved.count("localhost:9002"), 1u);

  // A reload: backends the running generation already has are neither resolved nor handed on.
  Result<RuntimePtr> running = BuildRuntime(config, nullptr, resolved);
  ASSERT_TRUE(running.ok()) << running.error();
  config::ResolvedBackends on_reload;
  EXPECT_TRUE(ValidateConfig(config, running.value().get(), &on_reload).empty());
  EXPECT_TRUE(on_reload.empty());
}

}  // namespace
}  // namespace wsgate
