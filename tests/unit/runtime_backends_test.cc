// RuntimeBackends: the admin API's backend changes applied on top of the file's pools.
#include "proxy/runtime_backends.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace wsgate {
namespace {

config::ProxyConfig TwoPools() {
  config::ProxyConfig config;
  for (const char* name : {"chat", "feed"}) {
    config::PoolConfig pool;
    pool.name = name;
    config::BackendConfig backend;
    backend.address = config::HostPort{"127.0.0.1", 9001, "127.0.0.1:9001"};
    pool.backends.push_back(backend);
    config.pools.push_back(pool);
  }
  return config;
}

std::vector<std::string> Addresses(const config::PoolConfig& pool) {
  std::vector<std::string> out;
  for (const auto& b : pool.backends) {
    out.push_back(b.address.text + "/" + std::to_string(b.weight));
  }
  return out;
}

TEST(RuntimeBackendsTest, PutAddsOrReweightsRemoveTakesOutOfOnePool) {
  RuntimeBackends changes;
  std::string error;
  ASSERT_TRUE(changes.Put("chat", "127.0.0.2:9002", 5, &error)) << error;
  ASSERT_TRUE(changes.Put("chat", "127.0.0.1:9001", 3, &error)) << error;
  ASSERT_TRUE(changes.Put("chat", "[::1]:9003", 1, &error)) << error;
  config::ProxyConfig config = TwoPools();
  config::ResolvedBackends resolved;
  changes.ApplyTo(config, &resolved);
  EXPECT_EQ(Addresses(config.pools[0]),
            (std::vector<std::string>{"127.0.0.1:9001/3", "127.0.0.2:9002/5", "[::1]:9003/1"}));
  EXPECT_EQ(Addresses(config.pools[1]), (std::vector<std::string>{"127.0.0.1:9001/1"}));
  ASSERT_EQ(resolved.count("127.0.0.2:9002"), 1u);
  EXPECT_EQ(resolved.at("127.0.0.2:9002").addr.ss_family, AF_INET);
  EXPECT_EQ(resolved.at("[::1]:9003").addr.ss_family, AF_INET6);
  EXPECT_EQ(resolved.count("127.0.0.1:9001"), 0u);  // the file's: resolved already

  changes.Remove("chat", "127.0.0.1:9001");
  changes.Remove("chat", "127.0.0.2:9002");
  config = TwoPools();
  changes.ApplyTo(config, nullptr);
  EXPECT_EQ(Addresses(config.pools[0]), (std::vector<std::string>{"[::1]:9003/1"}));
  EXPECT_EQ(Addresses(config.pools[1]), (std::vector<std::string>{"127.0.0.1:9001/1"}));

  // Put again after a removal brings it back; Clear forgets everything.
  ASSERT_TRUE(changes.Put("chat", "127.0.0.1:9001", 2, &error));
  config = TwoPools();
  changes.ApplyTo(config, nullptr);
  EXPECT_EQ(Addresses(config.pools[0]),
            (std::vector<std::string>{"127.0.0.1:9001/2", "[::1]:9003/1"}));
  changes.Clear();
  EXPECT_EQ(changes.changes(), 0u);
}

TEST(RuntimeBackendsTest, OnlyNumericAddressesWithAPort) {
  RuntimeBackends changes;
  for (const char* bad :
       {"localhost:9000", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "", "::1:9000"}) {
    std::string error;
    EXPECT_FALSE(changes.Put("chat", bad, 1, &error)) << bad;
    EXPECT_EQ(error, std::string("address \"") + bad +
                         "\" must be an IP address with a port (e.g. 10.0.0.7:9000)");
  }
  EXPECT_EQ(changes.changes(), 0u);
}

}  // namespace
}  // namespace wsgate
