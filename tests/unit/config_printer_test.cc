// PrintConfig: the output loads back to an equal config, and every default is written out.
#include "config/printer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "config/flags_config.h"
#include "config/loader.h"

namespace wsgate::config {
namespace {

ProxyConfig MustLoad(const std::string& yaml, const std::string& name) {
  LoadResult result = LoadConfigString(yaml, name);
  if (!result) {
    std::string all;
    for (const auto& e : result.error()) all += e.Format() + "\n";
    ADD_FAILURE() << name << " does not load:\n" << all << "--- text:\n" << yaml;
    return {};
  }
  return std::move(result).value();
}

// load(print(load(x))) == load(x), and printing is stable.
void ExpectRoundTrip(const ProxyConfig& loaded) {
  const PrintOptions show_secrets{.show_secrets = true};
  const std::string printed = PrintConfig(loaded, show_secrets);
  ProxyConfig again = MustLoad(printed, "printed.yaml");
  again.source_path = loaded.source_path;
  EXPECT_TRUE(again == loaded) << "printed config loads differently:\n" << printed;
  EXPECT_EQ(PrintConfig(again, show_secrets), printed);
}

TEST(ConfigPrinter, EveryExampleConfigRoundTrips) {
  int checked = 0;
  const std::filesystem::path examples = std::filesystem::path(WSGATE_SOURCE_DIR) / "examples";
  for (const auto& entry : std::filesystem::recursive_directory_iterator(examples)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || name.rfind("wsgate", 0) != 0 ||
        entry.path().extension() != ".yaml") {
      continue;
    }
    SCOPED_TRACE(entry.path().string());
    LoadResult result = LoadConfigFile(entry.path().string());
    ASSERT_TRUE(result.ok());
    ExpectRoundTrip(result.value());
    ++checked;
  }
  EXPECT_GE(checked, 2);
}

TEST(ConfigPrinter, MinimalFileGetsEveryDefault) {
  const ProxyConfig minimal = MustLoad(
      "listeners: [{name: public, address: 127.0.0.1:8080}]\n"
      "routes: [{pool: app}]\n"
      "pools: [{name: app, backends: [{address: 127.0.0.1:9001}]}]\n",
      "minimal.yaml");
  const std::string printed = PrintConfig(minimal);
  for (const char* line : {"workers: 1",
                           "retries: 2",
                           "max_connections: 100000",
                           "max_header_bytes: 16KiB",
                           "max_message_bytes: 16MiB",
                           "handshake: 10s",
                           "drain: 30s",
                           "ping_timeout: 10s",
                           "idle: 0s",
                           "close_code: 1001",
                           "balance: least_conn",
                           "weight: 1",
                           "tolerance: 1.2",
                           "rate: 50/s",
                           "ejection_time: 30s",
                           "rate_action: close",
                           "compression: inspect",
                           "access: stderr",
                           "format: text",
                           "enabled: true",
                           "allowed_origins: []",
                           "normalize: true",
                           "merge_slashes: false",
                           "escaped_slashes: reject",
                           "trusted_proxies: []",
                           "nameservers: []"}) {
    EXPECT_NE(printed.find(line), std::string::npos) << "missing \"" << line << "\" in\n"
                                                     << printed;
  }
  // Sections that are off stay absent: their presence would turn them on.
  EXPECT_EQ(printed.find("admin:"), std::string::npos);
  EXPECT_EQ(printed.find("health_check:"), std::string::npos);
  EXPECT_EQ(printed.find("sticky:"), std::string::npos);
  EXPECT_EQ(printed.find("discovery:"), std::string::npos);
  ExpectRoundTrip(minimal);
}

TEST(ConfigPrinter, EveryNonDefaultSettingRoundTrips) {
  ExpectRoundTrip(MustLoad(
      "workers: 0\n"
      "listeners:\n"
      "  - {name: public, address: \"[::1]:0\"}\n"
      "  - {name: second, address: 0.0.0.0:8081}\n"
      "  - name: secure\n"
      "    address: 0.0.0.0:8443\n"
      "    tls: {certificates: [{cert: a.crt, key: a.key}, {cert: /b.crt, key: /b.key}],"
      " min_version: TLSv1.3, ciphers: \"ECDHE+AESGCM\", alpn: [], client_ca: ca.pem}\n"
      "admin: {address: 127.0.0.2:9901, token: \"true\", public_url: \"http://10.0.0.5:9901\","
      " allowed_origins: [\"https://ops.example\"], allowed_hosts: [gate.internal, \"::1\"]}\n"
      "routes:\n"
      "  - {match: {host: \"*.example.com\", path_prefix: /chat}, pool: sticky, auth: false}\n"
      "  - {match: {host: \"123\"}, pool: checked}\n"
      "  - pool: checked\n"
      "pools:\n"
      "  - name: sticky\n"
      "    balance: sticky\n"
      "    sticky: {key: \"cookie:sid\", fallback: reject, load_factor: 0,"
      " insert_cookie: wsgate_backend}\n"
      "    backends:\n"
      "      - {address: 127.0.0.1:9001, weight: 7, id: \"no\"}\n"
      "      - {address: localhost:9002, id: \"  spaced: id # not a comment\"}\n"
      "  - name: checked\n"
      "    balance: random_two\n"
      "    health_check: {interval: 1500ms, timeout: 1s, type: websocket, path: \"/h?x=1\","
      " healthy_threshold: 5, unhealthy_threshold: 7}\n"
      "    outlier: {consecutive_failures: 3, ejection_time: 2m}\n"
      "    rebalance: {enabled: true, tolerance: 1.05, rate: 7}\n"
      "    close_on_unhealthy: true\n"
      "    http: {max_idle_connections: 3}\n"
      "    tls: {ca: backend-ca.pem, server_name: backend.internal, cert: c.crt, key: c.key}\n"
      "    backends: [{address: 127.0.0.1:9003}]\n"
      "  - name: discovered\n"
      "    discovery: {interval: 2s, require_at_start: false}\n"
      "    backends: [{address: chat.svc.cluster.local:9000, weight: 3}]\n"
      "  - name: discovered_defaults\n"
      "    discovery: {}\n"
      "    backends: [{address: chat.svc.cluster.local:9001}]\n"
      "limits: {max_connections: 5, max_header_bytes: 4000, max_request_line_bytes: 1KiB,"
      " max_message_bytes: 1GB, write_buffer_high_watermark: 5MB,"
      " allowed_origins: [\"https://a.example\", \"null\"], max_messages_per_second: 9,"
      " rate_action: throttle, max_connections_per_ip: 4, handshake_rate_per_ip: 3,"
      " max_pending_handshakes: 77, max_body_bytes: 1MiB, compression: strip}\n"
      "timeouts: {handshake: 1d, connect: 1h, backend_handshake: 61s, idle: 5m, drain: 0,"
      " close: 1ms, ping_interval: 20s, ping_timeout: 3s, request: 9s, backend_response: 8s,"
      " backend_idle: 7s}\n"
      "drain: {grace: 5s, close_code: 1012, spread: 10s}\n"
      "log: {format: json, access: \"/var/log/wsgate access.log\", flush_interval: 1m}\n"
      "paths: {normalize: false, merge_slashes: true, escaped_slashes: keep}\n"
      "metrics: {enabled: false}\n"
      "retries: 0\n"
      "auth: {url: \"http://127.0.0.1:9000/auth\", forward_headers: [Cookie],"
      " copy_headers: [X-User-Id], timeout: 3s, cache_ttl: 30s, cache_size: 5}\n"
      "on_disconnect: {url: \"http://127.0.0.1:9000/gone\", timeout: 1s, retries: 5,"
      " queue_size: 9}\n"
      "trusted_proxies: [\"10.0.0.0/8\", 127.0.0.1, \"::1/128\", \"2001:db8::/32\"]\n"
      "resolver: {nameservers: [\"127.0.0.1:5353\", \"[::1]:53\"]}\n",
      "all.yaml"));
}

TEST(ConfigPrinter, TokenFileIsPrintedNotItsContents) {
  const std::string path = ::testing::TempDir() + "wsgate_printer_token";
  std::ofstream(path, std::ios::binary) << "t0ken-contents\n";
  const ProxyConfig loaded = MustLoad(
      "listeners: [{name: public, address: 127.0.0.1:8080}]\n"
      "admin: {address: 0.0.0.0:9901, token_file: " +
          path +
          "}\n"
          "routes: [{pool: app}]\n"
          "pools: [{name: app, backends: [{address: 127.0.0.1:9001}]}]\n",
      "token.yaml");
  EXPECT_EQ(loaded.admin.token, "t0ken-contents");
  const std::string printed = PrintConfig(loaded);
  EXPECT_NE(printed.find("token_file: " + path), std::string::npos) << printed;
  EXPECT_EQ(printed.find("t0ken-contents"), std::string::npos) << printed;
  EXPECT_EQ(printed.find("token:"), std::string::npos) << printed;
  ExpectRoundTrip(loaded);
  std::remove(path.c_str());
}

TEST(ConfigPrinter, StickyKeySourcesRoundTrip) {
  for (const char* key : {"client_ip", "path", "\"header:X-User\"", "\"query:room\""}) {
    SCOPED_TRACE(key);
    ExpectRoundTrip(MustLoad(std::string("listeners: [{name: p, address: 127.0.0.1:8080}]\n"
                                         "routes: [{pool: app}]\n"
                                         "pools: [{name: app, balance: sticky, sticky: {key: ") +
                                 key + "}, backends: [{address: 127.0.0.1:9001}]}]\n",
                             "sticky.yaml"));
  }
}

TEST(ConfigPrinter, SecretsAreRedactedButShownAsSet) {
  const std::string base =
      "listeners: [{name: public, address: 127.0.0.1:8080}]\n"
      "routes: [{pool: app}]\n"
      "pools: [{name: app, backends: [{address: 127.0.0.1:9001}]}]\n";
  const ProxyConfig with_token =
      MustLoad(base + "admin: {address: 127.0.0.1:9901, token: s3cr3t-t0ken}\n", "t.yaml");
  const std::string printed = PrintConfig(with_token);
  EXPECT_EQ(printed.find("s3cr3t-t0ken"), std::string::npos) << printed;
  EXPECT_NE(printed.find("token: <redacted>\n"), std::string::npos) << printed;
  // The redacted printout is still a valid file.
  EXPECT_EQ(MustLoad(printed, "printed.yaml").admin.token, kRedacted);
  EXPECT_NE(PrintConfig(with_token, {.show_secrets = true}).find("token: s3cr3t-t0ken"),
            std::string::npos);
  // Unset stays visibly unset, not "<redacted>".
  const ProxyConfig without_token = MustLoad(base + "admin: {address: 127.0.0.1:9901}\n", "t.yaml");
  EXPECT_NE(PrintConfig(without_token).find("token: \"\""), std::string::npos);
}

TEST(ConfigPrinter, DefaultsLoadBackToTheDefaults) {
  const std::string printed = PrintDefaults();
  ProxyConfig loaded = MustLoad(printed, "defaults.yaml");
  loaded.source_path.clear();
  EXPECT_TRUE(loaded == DefaultConfig()) << printed;
  ExpectRoundTrip(loaded);
  // The switch-on sections are documented, commented out.
  for (const char* line :
       {"# admin:", "#   address: 127.0.0.1:9901", "# auth:", "#   cache_size: 10000",
        "# on_disconnect:", "#     health_check:", "#       unhealthy_threshold: 3",
        "#     sticky:", "#       load_factor: 1.25", "#       min_version: TLSv1.2"}) {
    EXPECT_NE(printed.find(std::string(line) + "\n"), std::string::npos) << line << "\n" << printed;
  }
}

TEST(FlagsConfig, ListenAndBackendsMakeOneLeastConnPool) {
  LoadResult result = LoadFlagsConfig("127.0.0.1:8080", {"127.0.0.1:9001", "[::1]:9002"});
  ASSERT_TRUE(result.ok());
  const ProxyConfig& config = result.value();
  EXPECT_TRUE(config.source_path.empty());
  ASSERT_EQ(config.listeners.size(), 1u);
  EXPECT_EQ(config.listeners[0].address.text, "127.0.0.1:8080");
  EXPECT_FALSE(config.admin.enabled);
  ASSERT_EQ(config.pools.size(), 1u);
  EXPECT_EQ(config.pools[0].balance, Balance::kLeastConn);
  ASSERT_EQ(config.pools[0].backends.size(), 2u);
  EXPECT_EQ(config.pools[0].backends[1].address.host, "::1");
  ASSERT_EQ(config.routes.size(), 1u);
  EXPECT_EQ(config.routes[0].pool, config.pools[0].name);
  ExpectRoundTrip(config);
}

TEST(FlagsConfig, ErrorsNameTheFlag) {
  LoadResult result = LoadFlagsConfig("nowhere", {"127.0.0.1:9001", "127.0.0.1:0", "a: b"});
  ASSERT_FALSE(result.ok());
  std::vector<std::string> texts;
  for (const ConfigError& e : result.error()) texts.push_back(e.Format());
  EXPECT_EQ(texts, (std::vector<std::string>{
                       "--listen: invalid address \"nowhere\" (expected host:port or [v6]:port)",
                       "--backend: invalid address \"127.0.0.1:0\" (port must be 1..65535)",
                       "--backend: invalid address \"a: b\" (expected host:port or [v6]:port)"}));
}

}  // namespace
}  // namespace wsgate::config
