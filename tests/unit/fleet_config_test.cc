// The cluster section (fleet mode, docs/fleet.md) and the identity limits it brings.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "config/loader.h"
#include "config/printer.h"
#include "tests/unit/config_load_util.h"

namespace wsgate::config {
namespace {

const std::string kAdmin = "admin:\n  address: 127.0.0.1:9901\n";
const std::string kBody =
    "listeners:\n"
    "  - name: public\n"
    "    address: 0.0.0.0:8080\n"
    "routes:\n"
    "  - pool: chat\n"
    "pools:\n"
    "  - name: chat\n"
    "    backends:\n"
    "      - address: 127.0.0.1:9001\n";

std::vector<std::string> Errors(const std::string& yaml) {
  const LoadResult result = LoadConfigString(yaml, "t.yaml");
  if (result.ok()) {
    ADD_FAILURE() << "config unexpectedly loaded:\n" << yaml;
    return {};
  }
  std::vector<std::string> out;
  for (const ConfigError& e : result.error()) out.push_back(e.Format());
  return out;
}

TEST(FleetConfigTest, Defaults) {
  ProxyConfig cfg = Load("cluster:\n  redis: redis://10.0.0.7\n" + kAdmin + kBody);
  const ClusterConfig& c = cfg.cluster;
  EXPECT_TRUE(c.enabled);
  EXPECT_EQ(c.redis_host, "10.0.0.7");
  EXPECT_EQ(c.redis_port, 6379);
  EXPECT_EQ(c.redis_db, 0U);
  EXPECT_TRUE(c.password.empty());
  EXPECT_FALSE(c.instance.empty());  // the host name
  EXPECT_EQ(c.key_prefix, "wsgate:");
  EXPECT_EQ(c.heartbeat_interval, Duration(1000));
  EXPECT_EQ(c.heartbeat_ttl, Duration(5000));
  EXPECT_EQ(c.connect_timeout, Duration(1000));
  EXPECT_EQ(c.command_timeout, Duration(1000));
  EXPECT_EQ(c.reconnect_max, Duration(5000));
  EXPECT_FALSE(c.ready_requires_redis);
  EXPECT_EQ(cfg.limits.max_connections_per_user, 0U);
}

TEST(FleetConfigTest, EveryKey) {
  ProxyConfig cfg = Load(
      "cluster:\n"
      "  redis: \"redis://:s3cret@[::1]:6380/2\"\n"
      "  instance: gw-1\n"
      "  advertise: http://10.0.0.5:9901/\n"
      "  key_prefix: \"prod:ws:\"\n"
      "  heartbeat_interval: 500ms\n"
      "  heartbeat_ttl: 2s\n"
      "  connect_timeout: 300ms\n"
      "  command_timeout: 400ms\n"
      "  reconnect_max: 10s\n"
      "  ready_requires_redis: true\n"
      "limits:\n"
      "  max_connections_per_user: 3\n" +
      kAdmin + kBody);
  const ClusterConfig& c = cfg.cluster;
  EXPECT_EQ(c.redis_host, "::1");
  EXPECT_EQ(c.redis_port, 6380);
  EXPECT_EQ(c.redis_db, 2U);
  EXPECT_EQ(c.password, "s3cret");
  EXPECT_EQ(c.instance, "gw-1");
  EXPECT_EQ(c.advertise, "http://10.0.0.5:9901");
  EXPECT_EQ(c.key_prefix, "prod:ws:");
  EXPECT_EQ(c.heartbeat_interval, Duration(500));
  EXPECT_EQ(c.heartbeat_ttl, Duration(2000));
  EXPECT_EQ(c.connect_timeout, Duration(300));
  EXPECT_EQ(c.command_timeout, Duration(400));
  EXPECT_EQ(c.reconnect_max, Duration(10000));
  EXPECT_TRUE(c.ready_requires_redis);
  EXPECT_EQ(cfg.limits.max_connections_per_user, 3U);
}

TEST(FleetConfigTest, RedissIsTlsWithVerificationOn) {
  ProxyConfig cfg = Load("cluster:\n  redis: rediss://10.0.0.7:6380\n" + kAdmin + kBody);
  EXPECT_TRUE(cfg.cluster.tls.enabled);
  EXPECT_TRUE(cfg.cluster.tls.verify);
  EXPECT_EQ(cfg.cluster.redis_port, 6380);
  cfg = Load("cluster:\n  redis: rediss://10.0.0.7\n  tls: {verify: false, server_name: r.x}\n" +
             kAdmin + kBody);
  EXPECT_TRUE(cfg.cluster.tls.enabled);
  EXPECT_FALSE(cfg.cluster.tls.verify);
  EXPECT_EQ(cfg.cluster.tls.server_name, "r.x");
  ProxyConfig again = Load(PrintConfig(cfg, PrintOptions{}));
  EXPECT_EQ(again.cluster, cfg.cluster);
}

TEST(FleetConfigTest, PasswordFromEnvironment) {
  setenv("WSGATE_TEST_REDIS_PASSWORD", "from-env", 1);
  ProxyConfig cfg =
      Load("cluster:\n  redis: redis://127.0.0.1\n  password_env: WSGATE_TEST_REDIS_PASSWORD\n" +
           kAdmin + kBody);
  EXPECT_EQ(cfg.cluster.password, "from-env");
  unsetenv("WSGATE_TEST_REDIS_PASSWORD");
  EXPECT_EQ(Errors("cluster:\n  redis: redis://127.0.0.1\n  password_env: WSGATE_TEST_NOPE\n" +
                   kAdmin + kBody),
            std::vector<std::string>{"t.yaml:3:17: cluster.password_env: environment variable "
                                     "\"WSGATE_TEST_NOPE\" is not set"});
}

TEST(FleetConfigTest, BadValuesNameTheirPlace) {
  EXPECT_EQ(Errors("cluster:\n  redis: redis://h\n  tls: {ca: x.pem}\n" + kAdmin + kBody)[0],
            "t.yaml:3:8: cluster.tls: cluster.tls needs a rediss:// URL");
  EXPECT_EQ(Errors("cluster:\n  redis: rediss://h\n  tls: {enabled: false}\n" + kAdmin + kBody),
            std::vector<std::string>{"t.yaml:3:8: cluster.tls: a rediss:// URL is TLS: "
                                     "tls.enabled cannot be false"});
  EXPECT_EQ(Errors("cluster:\n  redis: http://127.0.0.1\n" + kAdmin + kBody),
            std::vector<std::string>{"t.yaml:2:10: cluster.redis: expected redis:// or "
                                     "rediss://[:password@]host[:port][/db]"});
  EXPECT_EQ(Errors("cluster:\n  redis: redis://h:0\n" + kAdmin + kBody),
            std::vector<std::string>{"t.yaml:2:10: cluster.redis: expected redis:// or "
                                     "rediss://[:password@]host[:port][/db] with a port 1-65535"});
  EXPECT_EQ(Errors("cluster:\n  redis: redis://h/x\n" + kAdmin + kBody),
            std::vector<std::string>{
                "t.yaml:2:10: cluster.redis: the database after the / must be a number"});
  EXPECT_EQ(Errors("cluster:\n  redis: redis://alice:pw@h\n" + kAdmin + kBody),
            std::vector<std::string>{"t.yaml:2:10: cluster.redis: only redis://:password@host "
                                     "(or default:password) is supported; no ACL users"});
  EXPECT_EQ(Errors("cluster:\n  redis: redis://h\n  heartbeat_interval: 2s\n  heartbeat_ttl: 3s\n" +
                   kAdmin + kBody),
            std::vector<std::string>{"t.yaml:4:18: cluster.heartbeat_ttl: heartbeat_ttl must be "
                                     "at least twice heartbeat_interval"});
  EXPECT_EQ(Errors("cluster:\n  redis: redis://:pw@h\n  password_env: X\n" + kAdmin + kBody),
            std::vector<std::string>{"t.yaml:3:17: cluster.password_env: give the Redis password "
                                     "once: in the URL, password_file or password_env"});
  EXPECT_EQ(Errors("cluster:\n  redis: redis://h\n  key_prefix: \"a b\"\n" + kAdmin + kBody),
            std::vector<std::string>{"t.yaml:3:15: cluster.key_prefix: key_prefix must be at most "
                                     "64 visible ASCII characters"});
  EXPECT_EQ(Errors("cluster:\n  redis: redis://h\n  heartbeat: 1s\n" + kAdmin + kBody).size(), 1U);
}

TEST(FleetConfigTest, NeedsTheAdminListener) {
  EXPECT_EQ(Errors("cluster:\n  redis: redis://h\n" + kBody),
            std::vector<std::string>{"t.yaml:2:3: cluster: cluster needs the admin section "
                                     "(instances reach each other's admin API)"});
}

TEST(FleetConfigTest, PrintsWithoutThePasswordAndLoadsBack) {
  const std::string yaml =
      "cluster:\n  redis: \"redis://:s3cret@127.0.0.1:6380/1\"\n  instance: a\n" + kAdmin + kBody;
  ProxyConfig cfg = Load(yaml);
  std::string printed = PrintConfig(cfg, PrintOptions{});
  EXPECT_EQ(printed.find("s3cret"), std::string::npos) << printed;
  PrintOptions secrets;
  secrets.show_secrets = true;
  ProxyConfig again = Load(PrintConfig(cfg, secrets));
  EXPECT_EQ(again.cluster, cfg.cluster);
  EXPECT_EQ(again.limits.max_connections_per_user, cfg.limits.max_connections_per_user);
}

}  // namespace
}  // namespace wsgate::config
