#include "config/loader.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <variant>
#include <vector>

namespace wsgate::config {
namespace {

using std::chrono::milliseconds;
using Strings = std::vector<std::string>;

// Building blocks of a minimal valid file; tests put the section under test first so that its
// line numbers are easy to read off.
const std::string kListeners =
    "listeners:\n"
    "  - name: public\n"
    "    address: 0.0.0.0:8080\n";
const std::string kRoutes =
    "routes:\n"
    "  - pool: chat\n";
const std::string kPools =
    "pools:\n"
    "  - name: chat\n"
    "    backends:\n"
    "      - address: 127.0.0.1:9001\n";
const std::string kMinimal = kListeners + kRoutes + kPools;

// Every error of |yaml| as formatted strings; fails the test if it loads.
Strings Errors(const std::string& yaml) {
  const LoadResult result = LoadConfigString(yaml, "t.yaml");
  const auto* errors = std::get_if<ConfigErrors>(&result);
  if (errors == nullptr) {
    ADD_FAILURE() << "config unexpectedly loaded:\n" << yaml;
    return {};
  }
  Strings out;
  for (const ConfigError& e : *errors) out.push_back(e.Format());
  return out;
}

// The loaded config; fails the test (listing the errors) if it does not load.
ProxyConfig Load(const std::string& yaml) {
  LoadResult result = LoadConfigString(yaml, "t.yaml");
  if (const auto* errors = std::get_if<ConfigErrors>(&result)) {
    std::string all;
    for (const ConfigError& e : *errors) all += e.Format() + "\n";
    ADD_FAILURE() << "config failed to load:\n" << all;
    return {};
  }
  return std::get<ProxyConfig>(std::move(result));
}

TEST(ConfigErrorTest, Format) {
  ConfigError e{"a.yaml", 3, 5, "x.y", "bad"};
  EXPECT_EQ(e.Format(), "a.yaml:3:5: x.y: bad");
  e.key_path.clear();
  EXPECT_EQ(e.Format(), "a.yaml:3:5: bad");
  e.line = 0;
  e.column = 0;
  EXPECT_EQ(e.Format(), "a.yaml: bad");
  e.key_path = "x.y";
  EXPECT_EQ(e.Format(), "a.yaml: x.y: bad");
}

// --- Valid files ---------------------------------------------------------------------------------

TEST(ConfigLoaderTest, FullConfigRoundTripsEveryField) {
  const ProxyConfig cfg = Load(
      "workers: 4\n"
      "listeners:\n"
      "  - name: public\n"
      "    address: 0.0.0.0:8080\n"
      "  - name: v6\n"
      "    address: \"[::]:0\"\n"
      "admin:\n"
      "  address: 127.0.0.1:0\n"
      "routes:\n"
      "  - match: { host: chat.example.com, path_prefix: /chat }\n"
      "    pool: chat\n"
      "  - match: { host: \"*.example.com\" }\n"
      "    pool: chat\n"
      "  - pool: echo\n"
      "pools:\n"
      "  - name: chat\n"
      "    balance: round_robin\n"
      "    backends:\n"
      "      - address: 127.0.0.1:9001\n"
      "        weight: 3\n"
      "      - address: \"[::1]:9002\"\n"
      "  - name: echo\n"
      "    balance: least_conn\n"
      "    backends:\n"
      "      - address: localhost:9003\n"
      "        weight: 1000\n"
      "limits:\n"
      "  max_connections: 5000\n"
      "  max_header_bytes: 32KiB\n"
      "  max_request_line_bytes: 4096\n"
      "  max_message_bytes: 1MB\n"
      "  write_buffer_high_watermark: 128KiB\n"
      "  allowed_origins: [\"https://chat.example.com\", \"https://admin.example.com\"]\n"
      "timeouts:\n"
      "  handshake: 3s\n"
      "  connect: 250ms\n"
      "  backend_handshake: 2m\n"
      "  idle: 1h\n"
      "  drain: 0\n"
      "  close: 1d\n"
      "retries: 0\n");

  EXPECT_EQ(cfg.source_path, "t.yaml");
  EXPECT_EQ(cfg.workers, 4u);

  ASSERT_EQ(cfg.listeners.size(), 2u);
  EXPECT_EQ(cfg.listeners[0].name, "public");
  EXPECT_EQ(cfg.listeners[0].address.host, "0.0.0.0");
  EXPECT_EQ(cfg.listeners[0].address.port, 8080);
  EXPECT_EQ(cfg.listeners[0].address.text, "0.0.0.0:8080");
  EXPECT_EQ(cfg.listeners[1].name, "v6");
  EXPECT_EQ(cfg.listeners[1].address.host, "::");
  EXPECT_EQ(cfg.listeners[1].address.port, 0);

  EXPECT_TRUE(cfg.admin.enabled);
  EXPECT_EQ(cfg.admin.address.host, "127.0.0.1");
  EXPECT_EQ(cfg.admin.address.port, 0);

  ASSERT_EQ(cfg.routes.size(), 3u);
  EXPECT_EQ(cfg.routes[0].match.host, "chat.example.com");
  EXPECT_EQ(cfg.routes[0].match.path_prefix, "/chat");
  EXPECT_EQ(cfg.routes[0].pool, "chat");
  EXPECT_EQ(cfg.routes[1].match.host, "*.example.com");
  EXPECT_EQ(cfg.routes[1].match.path_prefix, "");
  EXPECT_EQ(cfg.routes[1].pool, "chat");
  EXPECT_EQ(cfg.routes[2].match.host, "");
  EXPECT_EQ(cfg.routes[2].match.path_prefix, "");
  EXPECT_EQ(cfg.routes[2].pool, "echo");

  ASSERT_EQ(cfg.pools.size(), 2u);
  EXPECT_EQ(cfg.pools[0].name, "chat");
  EXPECT_EQ(cfg.pools[0].balance, Balance::kRoundRobin);
  ASSERT_EQ(cfg.pools[0].backends.size(), 2u);
  EXPECT_EQ(cfg.pools[0].backends[0].address.host, "127.0.0.1");
  EXPECT_EQ(cfg.pools[0].backends[0].address.port, 9001);
  EXPECT_EQ(cfg.pools[0].backends[0].weight, 3u);
  EXPECT_EQ(cfg.pools[0].backends[1].address.host, "::1");
  EXPECT_EQ(cfg.pools[0].backends[1].address.port, 9002);
  EXPECT_EQ(cfg.pools[0].backends[1].address.text, "[::1]:9002");
  EXPECT_EQ(cfg.pools[0].backends[1].weight, 1u);
  EXPECT_EQ(cfg.pools[1].name, "echo");
  EXPECT_EQ(cfg.pools[1].balance, Balance::kLeastConn);
  ASSERT_EQ(cfg.pools[1].backends.size(), 1u);
  EXPECT_EQ(cfg.pools[1].backends[0].address.host, "localhost");
  EXPECT_EQ(cfg.pools[1].backends[0].weight, 1000u);
  EXPECT_EQ(cfg.FindPool("echo"), &cfg.pools[1]);

  EXPECT_EQ(cfg.limits.max_connections, 5000u);
  EXPECT_EQ(cfg.limits.max_header_bytes, 32u * 1024);
  EXPECT_EQ(cfg.limits.max_request_line_bytes, 4096u);
  EXPECT_EQ(cfg.limits.max_message_bytes, 1000000u);
  EXPECT_EQ(cfg.limits.write_buffer_high_watermark, 128u * 1024);
  EXPECT_EQ(cfg.limits.allowed_origins,
            (Strings{"https://chat.example.com", "https://admin.example.com"}));

  EXPECT_EQ(cfg.timeouts.handshake, milliseconds(3000));
  EXPECT_EQ(cfg.timeouts.connect, milliseconds(250));
  EXPECT_EQ(cfg.timeouts.backend_handshake, milliseconds(120000));
  EXPECT_EQ(cfg.timeouts.idle, milliseconds(3600000));
  EXPECT_EQ(cfg.timeouts.drain, milliseconds(0));
  EXPECT_EQ(cfg.timeouts.close, milliseconds(86400000));
  EXPECT_EQ(cfg.retries, 0u);
}

TEST(ConfigLoaderTest, DefaultsAppliedWhenSectionsOmitted) {
  const ProxyConfig cfg = Load(kMinimal);
  const ProxyConfig defaults;
  EXPECT_EQ(cfg.workers, 1u);
  EXPECT_EQ(cfg.retries, 2u);
  EXPECT_FALSE(cfg.admin.enabled);
  EXPECT_EQ(cfg.admin.address.host, "127.0.0.1");
  EXPECT_EQ(cfg.admin.address.port, 9901);
  EXPECT_EQ(cfg.admin.address.text, "127.0.0.1:9901");
  ASSERT_EQ(cfg.routes.size(), 1u);
  EXPECT_EQ(cfg.routes[0].match.host, "");
  EXPECT_EQ(cfg.routes[0].match.path_prefix, "");
  ASSERT_EQ(cfg.pools.size(), 1u);
  EXPECT_EQ(cfg.pools[0].balance, Balance::kLeastConn);
  ASSERT_EQ(cfg.pools[0].backends.size(), 1u);
  EXPECT_EQ(cfg.pools[0].backends[0].weight, 1u);

  EXPECT_EQ(cfg.limits.max_connections, 100000u);
  EXPECT_EQ(cfg.limits.max_header_bytes, 16u * 1024);
  EXPECT_EQ(cfg.limits.max_request_line_bytes, 8u * 1024);
  EXPECT_EQ(cfg.limits.max_message_bytes, 16u * 1024 * 1024);
  EXPECT_EQ(cfg.limits.write_buffer_high_watermark, 64u * 1024);
  EXPECT_TRUE(cfg.limits.allowed_origins.empty());

  EXPECT_EQ(cfg.timeouts.handshake, milliseconds(10000));
  EXPECT_EQ(cfg.timeouts.connect, milliseconds(5000));
  EXPECT_EQ(cfg.timeouts.backend_handshake, milliseconds(5000));
  EXPECT_EQ(cfg.timeouts.idle, milliseconds(0));
  EXPECT_EQ(cfg.timeouts.drain, milliseconds(30000));
  EXPECT_EQ(cfg.timeouts.close, milliseconds(5000));
}

TEST(ConfigLoaderTest, EmptySectionsKeepDefaults) {
  const ProxyConfig cfg = Load("limits:\ntimeouts: {}\n" + kMinimal);
  EXPECT_EQ(cfg.limits.max_header_bytes, 16u * 1024);
  EXPECT_EQ(cfg.timeouts.drain, milliseconds(30000));
  EXPECT_FALSE(cfg.admin.enabled);
}

TEST(ConfigLoaderTest, BareAdminSectionEnablesDefaultAddress) {
  const ProxyConfig cfg = Load("admin:\n" + kMinimal);
  EXPECT_TRUE(cfg.admin.enabled);
  EXPECT_EQ(cfg.admin.address.text, "127.0.0.1:9901");
  EXPECT_EQ(cfg.admin.address.port, 9901);
}

TEST(ConfigLoaderTest, SizesMayBePlainIntegers) {
  const ProxyConfig cfg = Load(
      "limits:\n"
      "  max_header_bytes: 16384\n"
      "  max_request_line_bytes: 16384\n"
      "  max_message_bytes: 1\n"
      "  write_buffer_high_watermark: 4096\n" +
      kMinimal);
  EXPECT_EQ(cfg.limits.max_header_bytes, 16384u);
  EXPECT_EQ(cfg.limits.max_request_line_bytes, 16384u);
  EXPECT_EQ(cfg.limits.max_message_bytes, 1u);
  EXPECT_EQ(cfg.limits.write_buffer_high_watermark, 4096u);
}

TEST(ConfigLoaderTest, AnchorsAndAliasesAreFollowed) {
  const ProxyConfig cfg = Load(kListeners + kRoutes +
                               "pools:\n"
                               "  - name: chat\n"
                               "    backends: &shared\n"
                               "      - address: 127.0.0.1:9001\n"
                               "        weight: &w 7\n"
                               "  - name: other\n"
                               "    backends: *shared\n"
                               "retries: *w\n");
  ASSERT_EQ(cfg.pools.size(), 2u);
  ASSERT_EQ(cfg.pools[1].backends.size(), 1u);
  EXPECT_EQ(cfg.pools[1].backends[0].weight, 7u);
  EXPECT_EQ(cfg.retries, 7u);
}

TEST(ConfigLoaderTest, ZeroIdleAndDrainAreAllowed) {
  const ProxyConfig cfg = Load("timeouts:\n  idle: 0\n  drain: 0ms\n" + kMinimal);
  EXPECT_EQ(cfg.timeouts.idle, milliseconds(0));
  EXPECT_EQ(cfg.timeouts.drain, milliseconds(0));
}

TEST(ConfigLoaderTest, RequestLineMayEqualHeaderLimit) {
  const ProxyConfig cfg =
      Load("limits:\n  max_header_bytes: 1KiB\n  max_request_line_bytes: 1024\n" + kMinimal);
  EXPECT_EQ(cfg.limits.max_request_line_bytes, 1024u);
}

// --- Syntax and document-level errors ------------------------------------------------------------

TEST(ConfigLoaderTest, YamlSyntaxError) {
  EXPECT_EQ(Errors("a: b: c\n"), (Strings{"t.yaml:1:5: syntax error: illegal map value"}));
  EXPECT_EQ(Errors(kMinimal + "limits: {max_connections: 5\n"),
            (Strings{"t.yaml:11:1: syntax error: end of map flow not found"}));
}

TEST(ConfigLoaderTest, NestingTooDeep) {
  EXPECT_EQ(Errors(std::string(5000, '[')),
            (Strings{"t.yaml:1:1: syntax error: nesting is too deep"}));
}

TEST(ConfigLoaderTest, EmptyDocument) {
  for (const char* text : {"", "\n", "# only a comment\n", "~\n", "---\n", "null"}) {
    EXPECT_EQ(Errors(text), (Strings{"t.yaml: configuration is empty"})) << text;
  }
}

TEST(ConfigLoaderTest, DocumentNotAMapping) {
  EXPECT_EQ(Errors("- a\n- b\n"), (Strings{"t.yaml:1:1: expected a mapping"}));
  EXPECT_EQ(Errors("just text\n"), (Strings{"t.yaml:1:1: expected a mapping"}));
  EXPECT_EQ(Errors("\n\n  42\n"), (Strings{"t.yaml:3:3: expected a mapping"}));
}

TEST(ConfigLoaderTest, MoreThanOneDocument) {
  EXPECT_EQ(Errors(kMinimal + "---\nworkers: 2\n"),
            (Strings{"t.yaml:11:1: expected a single YAML document"}));
  // yaml-cpp would otherwise ignore anything after the first node (and LoadAll() would hang).
  EXPECT_EQ(Errors("{listeners: [], routes: [], pools: []},\n"),
            (Strings{"t.yaml:1:13: listeners: at least one listener is required",
                     "t.yaml:1:25: routes: at least one route is required",
                     "t.yaml:1:36: pools: at least one pool is required",
                     "t.yaml:1:39: expected a single YAML document"}));
  EXPECT_EQ(Errors(","), (Strings{"t.yaml:1:1: expected a single YAML document"}));
}

// --- Keys ----------------------------------------------------------------------------------------

TEST(ConfigLoaderTest, UnknownTopLevelKey) {
  EXPECT_EQ(Errors("listner: x\n" + kMinimal), (Strings{"t.yaml:1:1: listner: unknown key"}));
}

TEST(ConfigLoaderTest, UnknownNestedKeys) {
  EXPECT_EQ(Errors("limits:\n  max_conns: 5\n" + kMinimal),
            (Strings{"t.yaml:2:3: limits.max_conns: unknown key"}));
  EXPECT_EQ(Errors("routes:\n  - match: {hots: a.com}\n    pool: chat\n" + kListeners + kPools),
            (Strings{"t.yaml:2:13: routes[0].match.hots: unknown key"}));
  EXPECT_EQ(Errors(kMinimal + "        wieght: 2\n"),
            (Strings{"t.yaml:10:9: pools[0].backends[0].wieght: unknown key"}));
}

TEST(ConfigLoaderTest, DuplicateKey) {
  EXPECT_EQ(Errors("workers: 1\nworkers: 2\n" + kMinimal),
            (Strings{"t.yaml:2:1: workers: duplicate key"}));
}

TEST(ConfigLoaderTest, NonStringKey) {
  EXPECT_EQ(Errors("? [a]\n: 1\n" + kMinimal),
            (Strings{"t.yaml:1:3: mapping key must be a string"}));
  EXPECT_EQ(Errors("limits: {~: 1}\n" + kMinimal),
            (Strings{"t.yaml:1:10: limits: mapping key must be a string"}));
}

TEST(ConfigLoaderTest, MissingTopLevelKeys) {
  const Strings expected = {
      "t.yaml:1:1: listeners: missing required key",
      "t.yaml:1:1: pools: missing required key",
      "t.yaml:1:1: routes: missing required key",
  };
  EXPECT_EQ(Errors("{}"), expected);
  EXPECT_EQ(Errors("workers: 2\n"), expected);
}

TEST(ConfigLoaderTest, MissingNestedKeys) {
  EXPECT_EQ(Errors("listeners:\n  - name: public\n" + kRoutes + kPools),
            (Strings{"t.yaml:2:5: listeners[0].address: missing required key"}));
  EXPECT_EQ(Errors("routes:\n  - match: {host: a.com}\n" + kListeners + kPools),
            (Strings{"t.yaml:2:5: routes[0].pool: missing required key"}));
  EXPECT_EQ(Errors(kListeners + kRoutes +
                   "pools:\n"
                   "  - balance: round_robin\n"
                   "    backends:\n"
                   "      - address: 127.0.0.1:9001\n"),
            (Strings{"t.yaml:7:5: pools[0].name: missing required key"}));
  EXPECT_EQ(Errors(kListeners + kRoutes + "pools:\n  - name: chat\n"),
            (Strings{"t.yaml:7:5: pools[0].backends: missing required key"}));
  EXPECT_EQ(Errors(kListeners + kRoutes +
                   "pools:\n"
                   "  - name: chat\n"
                   "    backends:\n"
                   "      - weight: 2\n"),
            (Strings{"t.yaml:9:9: pools[0].backends[0].address: missing required key"}));
}

// --- Types ---------------------------------------------------------------------------------------

TEST(ConfigLoaderTest, ExpectedAMapping) {
  EXPECT_EQ(Errors("limits: 5\n" + kMinimal), (Strings{"t.yaml:1:9: limits: expected a mapping"}));
  EXPECT_EQ(Errors("listeners:\n  - public\n" + kRoutes + kPools),
            (Strings{"t.yaml:2:5: listeners[0]: expected a mapping"}));
  EXPECT_EQ(Errors("routes:\n  - match: /chat\n    pool: chat\n" + kListeners + kPools),
            (Strings{"t.yaml:2:12: routes[0].match: expected a mapping"}));
}

TEST(ConfigLoaderTest, ExpectedASequence) {
  EXPECT_EQ(Errors("listeners: public\n" + kRoutes + kPools),
            (Strings{"t.yaml:1:12: listeners: expected a sequence"}));
  EXPECT_EQ(Errors("limits:\n  allowed_origins: https://a.example\n" + kMinimal),
            (Strings{"t.yaml:2:20: limits.allowed_origins: expected a sequence"}));
}

TEST(ConfigLoaderTest, ExpectedAnInteger) {
  EXPECT_EQ(Errors("workers: four\n" + kMinimal),
            (Strings{"t.yaml:1:10: workers: expected an integer"}));
  // Quoted numbers are strings in YAML.
  EXPECT_EQ(Errors("workers: \"4\"\n" + kMinimal),
            (Strings{"t.yaml:1:10: workers: expected an integer"}));
  EXPECT_EQ(Errors("workers: 1.5\n" + kMinimal),
            (Strings{"t.yaml:1:10: workers: expected an integer"}));
  EXPECT_EQ(Errors("workers: [1]\n" + kMinimal),
            (Strings{"t.yaml:1:10: workers: expected an integer"}));
  EXPECT_EQ(Errors("workers: true\n" + kMinimal),
            (Strings{"t.yaml:1:10: workers: expected an integer"}));
  // An empty value has no position of its own; the key's is used.
  EXPECT_EQ(Errors("workers:\n" + kMinimal), (Strings{"t.yaml:1:1: workers: expected an integer"}));
}

TEST(ConfigLoaderTest, ExpectedAString) {
  EXPECT_EQ(Errors("listeners:\n  - name: [a]\n    address: 0.0.0.0:8080\n" + kRoutes + kPools),
            (Strings{"t.yaml:2:11: listeners[0].name: expected a string"}));
  EXPECT_EQ(Errors("limits:\n  allowed_origins: [ok, {a: b}]\n" + kMinimal),
            (Strings{"t.yaml:2:25: limits.allowed_origins[1]: expected a string"}));
  EXPECT_EQ(Errors("admin:\n  address: ~\n" + kMinimal),
            (Strings{"t.yaml:2:3: admin.address: expected a string"}));
}

TEST(ConfigLoaderTest, EmptyName) {
  EXPECT_EQ(Errors("listeners:\n  - name: \"\"\n    address: 0.0.0.0:8080\n" + kRoutes + kPools),
            (Strings{"t.yaml:2:11: listeners[0].name: must not be empty"}));
}

// --- Ranges --------------------------------------------------------------------------------------

TEST(ConfigLoaderTest, IntegerOutOfRange) {
  EXPECT_EQ(Errors("workers: 2000\n" + kMinimal),
            (Strings{"t.yaml:1:10: workers: value 2000 out of range (expected 0..1024)"}));
  EXPECT_EQ(Errors("workers: -1\n" + kMinimal),
            (Strings{"t.yaml:1:10: workers: value -1 out of range (expected 0..1024)"}));
  EXPECT_EQ(Errors("retries: 101\n" + kMinimal),
            (Strings{"t.yaml:1:10: retries: value 101 out of range (expected 0..100)"}));
  EXPECT_EQ(Errors("retries: 99999999999999999999999\n" + kMinimal),
            (Strings{"t.yaml:1:10: retries: value 99999999999999999999999 out of range "
                     "(expected 0..100)"}));
  EXPECT_EQ(Errors(kMinimal + "        weight: 0\n"),
            (Strings{"t.yaml:10:17: pools[0].backends[0].weight: value 0 out of range "
                     "(expected 1..1000)"}));
  EXPECT_EQ(Errors("limits:\n  max_connections: 0\n" + kMinimal),
            (Strings{"t.yaml:2:20: limits.max_connections: value 0 out of range (expected >= 1)"}));
}

TEST(ConfigLoaderTest, SizeOutOfRange) {
  EXPECT_EQ(Errors("limits:\n  max_header_bytes: 512\n" + kMinimal),
            (Strings{"t.yaml:2:21: limits.max_header_bytes: size 512 out of range "
                     "(expected 1KiB..1MiB)"}));
  EXPECT_EQ(Errors("limits:\n  max_header_bytes: 2MiB\n" + kMinimal),
            (Strings{"t.yaml:2:21: limits.max_header_bytes: size 2MiB out of range "
                     "(expected 1KiB..1MiB)"}));
  EXPECT_EQ(Errors("limits:\n  max_request_line_bytes: 100\n" + kMinimal),
            (Strings{"t.yaml:2:27: limits.max_request_line_bytes: size 100 out of range "
                     "(expected 256..1MiB)"}));
  EXPECT_EQ(Errors("limits:\n  max_message_bytes: 0\n" + kMinimal),
            (Strings{"t.yaml:2:22: limits.max_message_bytes: size 0 out of range "
                     "(expected >= 1)"}));
  EXPECT_EQ(Errors("limits:\n  write_buffer_high_watermark: 128MiB\n" + kMinimal),
            (Strings{"t.yaml:2:32: limits.write_buffer_high_watermark: size 128MiB out of range "
                     "(expected 4KiB..64MiB)"}));
}

TEST(ConfigLoaderTest, InvalidSize) {
  EXPECT_EQ(Errors("limits:\n  max_message_bytes: 16 MiB\n" + kMinimal),
            (Strings{"t.yaml:2:22: limits.max_message_bytes: invalid size \"16 MiB\" "
                     "(expected e.g. 512, 64KiB, 16MiB)"}));
  EXPECT_EQ(Errors("limits:\n  max_message_bytes: 99999999999999999999\n" + kMinimal),
            (Strings{"t.yaml:2:22: limits.max_message_bytes: invalid size "
                     "\"99999999999999999999\" (expected e.g. 512, 64KiB, 16MiB)"}));
  EXPECT_EQ(Errors("limits:\n  max_message_bytes: [1]\n" + kMinimal),
            (Strings{"t.yaml:2:22: limits.max_message_bytes: expected a size "
                     "(e.g. 512, 64KiB, 16MiB)"}));
}

TEST(ConfigLoaderTest, RequestLineLargerThanHeaderLimit) {
  // Only the header limit is written: the default request line limit (8KiB) no longer fits.
  EXPECT_EQ(Errors("limits:\n  max_header_bytes: 4KiB\n" + kMinimal),
            (Strings{"t.yaml:2:21: limits.max_header_bytes: max_request_line_bytes (8KiB) must "
                     "not exceed max_header_bytes (4KiB)"}));
  EXPECT_EQ(
      Errors("limits:\n  max_header_bytes: 2KiB\n  max_request_line_bytes: 3000\n" + kMinimal),
      (Strings{"t.yaml:3:27: limits.max_request_line_bytes: max_request_line_bytes (3000) "
               "must not exceed max_header_bytes (2KiB)"}));
}

TEST(ConfigLoaderTest, InvalidDuration) {
  EXPECT_EQ(Errors("timeouts:\n  handshake: 10\n" + kMinimal),
            (Strings{"t.yaml:2:14: timeouts.handshake: invalid duration \"10\" "
                     "(expected e.g. 250ms, 5s, 2m, 1h, 1d)"}));
  EXPECT_EQ(Errors("timeouts:\n  drain: -5s\n" + kMinimal),
            (Strings{"t.yaml:2:10: timeouts.drain: invalid duration \"-5s\" "
                     "(expected e.g. 250ms, 5s, 2m, 1h, 1d)"}));
  EXPECT_EQ(Errors("timeouts:\n  backend_handshake: {a: 1}\n" + kMinimal),
            (Strings{"t.yaml:2:22: timeouts.backend_handshake: expected a duration "
                     "(e.g. 250ms, 5s, 2m, 1h, 1d)"}));
}

TEST(ConfigLoaderTest, DurationMustBePositive) {
  EXPECT_EQ(Errors("timeouts:\n  connect: 0s\n  close: 0\n" + kMinimal),
            (Strings{"t.yaml:2:12: timeouts.connect: must be greater than 0",
                     "t.yaml:3:10: timeouts.close: must be greater than 0"}));
}

// --- Addresses -----------------------------------------------------------------------------------

TEST(ConfigLoaderTest, InvalidListenerAddress) {
  EXPECT_EQ(Errors("listeners:\n  - name: public\n    address: nope\n" + kRoutes + kPools),
            (Strings{"t.yaml:3:14: listeners[0].address: invalid address \"nope\" "
                     "(expected host:port or [v6]:port)"}));
  EXPECT_EQ(Errors("listeners:\n  - name: public\n    address: 8080\n" + kRoutes + kPools),
            (Strings{"t.yaml:3:14: listeners[0].address: invalid address \"8080\" "
                     "(expected host:port or [v6]:port)"}));
}

TEST(ConfigLoaderTest, InvalidBackendAddress) {
  EXPECT_EQ(Errors(kListeners + kRoutes + "pools:\n  - name: chat\n    backends:\n" +
                   "      - address: \"::1:9001\"\n"),
            (Strings{"t.yaml:9:18: pools[0].backends[0].address: invalid address \"::1:9001\" "
                     "(expected host:port or [v6]:port)"}));
  // Port 0 means "pick one" for a listener but is meaningless for a backend.
  EXPECT_EQ(Errors(kListeners + kRoutes + "pools:\n  - name: chat\n    backends:\n" +
                   "      - address: 127.0.0.1:0\n"),
            (Strings{"t.yaml:9:18: pools[0].backends[0].address: invalid address "
                     "\"127.0.0.1:0\" (port must be 1..65535)"}));
}

TEST(ConfigLoaderTest, InvalidAdminAddress) {
  EXPECT_EQ(Errors("admin:\n  address: localhost\n" + kMinimal),
            (Strings{"t.yaml:2:12: admin.address: invalid address \"localhost\" "
                     "(expected host:port or [v6]:port)"}));
}

// --- Cross-references ----------------------------------------------------------------------------

TEST(ConfigLoaderTest, UnknownBalance) {
  EXPECT_EQ(Errors("pools:\n  - name: chat\n    balance: random\n    backends:\n"
                   "      - address: 127.0.0.1:9001\n" +
                   kListeners + kRoutes),
            (Strings{"t.yaml:3:14: pools[0].balance: unknown balance \"random\" "
                     "(expected least_conn or round_robin)"}));
}

TEST(ConfigLoaderTest, DuplicateListenerName) {
  EXPECT_EQ(Errors(kListeners + "  - name: public\n    address: 0.0.0.0:8081\n" + kRoutes + kPools),
            (Strings{"t.yaml:4:11: listeners[1].name: duplicate listener name \"public\""}));
}

TEST(ConfigLoaderTest, DuplicatePoolName) {
  EXPECT_EQ(Errors(kMinimal + "  - name: chat\n    backends:\n      - address: 127.0.0.1:9002\n"),
            (Strings{"t.yaml:10:11: pools[1].name: duplicate pool name \"chat\""}));
}

TEST(ConfigLoaderTest, RouteToUnknownPool) {
  EXPECT_EQ(Errors(kRoutes + "  - pool: nope\n" + kListeners + kPools),
            (Strings{"t.yaml:3:11: routes[1].pool: unknown pool \"nope\""}));
}

TEST(ConfigLoaderTest, PoolWithoutBackends) {
  EXPECT_EQ(Errors(kListeners + kRoutes + "pools:\n  - name: chat\n    backends: []\n"),
            (Strings{"t.yaml:8:15: pools[0].backends: pool has no backends"}));
  EXPECT_EQ(Errors(kListeners + kRoutes + "pools:\n  - name: chat\n    backends:\n"),
            (Strings{"t.yaml:8:5: pools[0].backends: pool has no backends"}));
}

TEST(ConfigLoaderTest, EmptyTopLevelSequences) {
  EXPECT_EQ(Errors("listeners: []\n" + kRoutes + kPools),
            (Strings{"t.yaml:1:12: listeners: at least one listener is required"}));
  EXPECT_EQ(Errors(kListeners + "routes: []\n" + kPools),
            (Strings{"t.yaml:4:9: routes: at least one route is required"}));
  // No "unknown pool" noise for the route when the pools section itself is broken.
  EXPECT_EQ(Errors(kListeners + kRoutes + "pools: []\n"),
            (Strings{"t.yaml:6:8: pools: at least one pool is required"}));
}

TEST(ConfigLoaderTest, PathPrefixMustStartWithSlash) {
  EXPECT_EQ(
      Errors("routes:\n  - match: {path_prefix: chat}\n    pool: chat\n" + kListeners + kPools),
      (Strings{"t.yaml:2:26: routes[0].match.path_prefix: must start with \"/\""}));
}

TEST(ConfigLoaderTest, ValuesInMessagesAreEscapedAndShortened) {
  EXPECT_EQ(Errors("routes:\n  - pool: \"a\\\"b\\tc\"\n" + kListeners + kPools),
            (Strings{"t.yaml:2:11: routes[0].pool: unknown pool \"a\\\"b\\x09c\""}));
  EXPECT_EQ(
      Errors("routes:\n  - pool: " + std::string(100, 'x') + "\n" + kListeners + kPools),
      (Strings{"t.yaml:2:11: routes[0].pool: unknown pool \"" + std::string(64, 'x') + "...\""}));
}

// --- Many errors at once -------------------------------------------------------------------------

TEST(ConfigLoaderTest, AllErrorsAreReportedInFileOrder) {
  EXPECT_EQ(Errors("workers: lots\n"
                   "listeners:\n"
                   "  - name: public\n"
                   "    address: nope\n"
                   "routes:\n"
                   "  - pool: missing\n"
                   "pools:\n"
                   "  - name: chat\n"
                   "    backends: []\n"
                   "limits:\n"
                   "  max_header_bytes: 1\n"
                   "  bogus: 1\n"
                   "timeouts:\n"
                   "  handshake: 5\n"),
            (Strings{
                "t.yaml:1:10: workers: expected an integer",
                "t.yaml:4:14: listeners[0].address: invalid address \"nope\" "
                "(expected host:port or [v6]:port)",
                "t.yaml:6:11: routes[0].pool: unknown pool \"missing\"",
                "t.yaml:9:15: pools[0].backends: pool has no backends",
                "t.yaml:11:21: limits.max_header_bytes: size 1 out of range (expected 1KiB..1MiB)",
                "t.yaml:12:3: limits.bogus: unknown key",
                "t.yaml:14:14: timeouts.handshake: invalid duration \"5\" "
                "(expected e.g. 250ms, 5s, 2m, 1h, 1d)",
            }));
}

// --- Files ---------------------------------------------------------------------------------------

std::string WriteTempFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(ConfigLoaderFileTest, LoadsFileAndRecordsSourcePath) {
  const std::string path = WriteTempFile("wsgate_config_ok.yaml", kMinimal);
  LoadResult result = LoadConfigFile(path);
  ASSERT_TRUE(std::holds_alternative<ProxyConfig>(result));
  EXPECT_EQ(std::get<ProxyConfig>(result).source_path, path);
  std::remove(path.c_str());
}

TEST(ConfigLoaderFileTest, ErrorsNameTheFile) {
  const std::string path = WriteTempFile("wsgate_config_bad.yaml", "workers: x\n" + kMinimal);
  LoadResult result = LoadConfigFile(path);
  ASSERT_TRUE(std::holds_alternative<ConfigErrors>(result));
  const ConfigErrors& errors = std::get<ConfigErrors>(result);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].Format(), path + ":1:10: workers: expected an integer");
  std::remove(path.c_str());
}

TEST(ConfigLoaderFileTest, UnreadableFile) {
  LoadResult missing = LoadConfigFile("/nonexistent/wsgate.yaml");
  ASSERT_TRUE(std::holds_alternative<ConfigErrors>(missing));
  ASSERT_EQ(std::get<ConfigErrors>(missing).size(), 1u);
  EXPECT_EQ(std::get<ConfigErrors>(missing)[0].Format(),
            "/nonexistent/wsgate.yaml: cannot read file: No such file or directory");

  LoadResult dir = LoadConfigFile("/");
  ASSERT_TRUE(std::holds_alternative<ConfigErrors>(dir));
  ASSERT_EQ(std::get<ConfigErrors>(dir).size(), 1u);
  EXPECT_EQ(std::get<ConfigErrors>(dir)[0].Format(), "/: cannot read file: Is a directory");
}

TEST(ConfigLoaderFileTest, ExampleConfigLoads) {
  const std::string path = std::string(WSGATE_SOURCE_DIR) + "/examples/wsgate.yaml";
  if (!std::ifstream(path)) GTEST_SKIP() << path << " does not exist";
  LoadResult result = LoadConfigFile(path);
  if (const auto* errors = std::get_if<ConfigErrors>(&result)) {
    for (const ConfigError& e : *errors) ADD_FAILURE() << e.Format();
  }
}

// --- Robustness ----------------------------------------------------------------------------------

// Whatever the input, the loader returns either a config or at least one well-formed error.
void ExpectHandled(const std::string& text) {
  const LoadResult result = LoadConfigString(text, "t.yaml");
  if (const auto* errors = std::get_if<ConfigErrors>(&result)) {
    ASSERT_FALSE(errors->empty());
    for (const ConfigError& e : *errors) {
      EXPECT_EQ(e.file, "t.yaml");
      EXPECT_GE(e.line, 0);
      EXPECT_FALSE(e.message.empty());
    }
  }
}

TEST(ConfigLoaderRobustnessTest, GarbageDocumentsAreRejected) {
  const Strings garbage = {
      std::string("\0\x01\x02\xff", 4),
      "{{{{",
      ",",
      "- a\n,",
      "{a: 1},",
      "]]]]",
      "- - - -",
      "? ? ? ?",
      "&a [*a, *a]",
      "a: *undefined",
      "'unterminated",
      "\"\\u12\"",
      "%YAML 1.2\n---\n",
      "%TAG ! tag:x\n--- !x\n",
      "!!binary x",
      "\xef\xbb\xbf",
      "\t\t- \n\t-",
      "listeners: &l [*l]\n",
      "pools: &p [{name: x, backends: *p}]\n",
      "listeners: [{name: [[[[[]]]]]}]\nroutes: {}\npools: !!str x\n",
      "workers: !!int 999999999999999999999999999999999999999\n",
      "workers: &w {a: *w}\nretries: *w\nlimits: *w\ntimeouts: *w\n",
      std::string(100000, '['),
      std::string(100000, '{'),
      std::string(10000, '-') + " x",
      [] {
        std::string deep;
        for (int i = 0; i < 3000; ++i) deep += std::string(i, ' ') + "a:\n";
        return deep;
      }(),
  };
  for (const std::string& text : garbage) {
    SCOPED_TRACE(text.substr(0, 40));
    const LoadResult result = LoadConfigString(text, "t.yaml");
    ASSERT_TRUE(std::holds_alternative<ConfigErrors>(result));
    ExpectHandled(text);
  }
}

TEST(ConfigLoaderRobustnessTest, CyclicAliasIsNotFollowedForever) {
  EXPECT_EQ(Errors("listeners: &l [*l]\n" + kRoutes + kPools),
            (Strings{"t.yaml:1:12: listeners[0]: expected a mapping"}));
}

TEST(ConfigLoaderRobustnessTest, RandomMutationsOfAValidFile) {
  const std::string base =
      "workers: 4\n"
      "listeners:\n"
      "  - name: public\n"
      "    address: \"[::]:8080\"\n"
      "admin:\n"
      "  address: 127.0.0.1:9901\n"
      "routes:\n"
      "  - match: { host: chat.example.com, path_prefix: /chat }\n"
      "    pool: &p chat\n"
      "pools:\n"
      "  - name: *p\n"
      "    balance: round_robin\n"
      "    backends:\n"
      "      - address: 127.0.0.1:9001\n"
      "        weight: 3\n"
      "limits:\n"
      "  max_header_bytes: 16KiB\n"
      "  allowed_origins: ['https://a.example']\n"
      "timeouts: {handshake: 10s, idle: 0}\n"
      "retries: 2\n";
  ASSERT_TRUE(std::holds_alternative<ProxyConfig>(LoadConfigString(base, "t.yaml")));

  static constexpr char kInteresting[] = ":-[]{}&*!|>'\"#%@`?,~ \n\t0123456789aZ\\\x00\xff";
  std::mt19937 rng(20240601);
  for (int round = 0; round < 3000; ++round) {
    std::string text = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < edits && !text.empty(); ++i) {
      const size_t pos = rng() % text.size();
      switch (rng() % 4) {
        case 0:
          text[pos] = kInteresting[rng() % (sizeof(kInteresting) - 1)];
          break;
        case 1:
          text.insert(pos, 1, kInteresting[rng() % (sizeof(kInteresting) - 1)]);
          break;
        case 2:
          text.erase(pos, 1 + rng() % 8);
          break;
        default:
          text.insert(pos, text.substr(rng() % text.size(), 1 + rng() % 16));
          break;
      }
    }
    SCOPED_TRACE(text);
    ExpectHandled(text);
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace wsgate::config

namespace wsgate::config {
namespace {

// --- drain and admin.token -------------------------------------------------------------------

TEST(ConfigLoaderDrainTest, DefaultsAndValues) {
  const ProxyConfig defaults = Load(kMinimal);
  EXPECT_EQ(defaults.drain.grace, milliseconds(0));
  EXPECT_EQ(defaults.drain.close_code, 1001);
  EXPECT_EQ(defaults.drain.spread, milliseconds(0));
  const ProxyConfig cfg = Load("drain:\n  grace: 5s\n  close_code: 1012\n  spread: 2m\n" + kMinimal);
  EXPECT_EQ(cfg.drain.grace, milliseconds(5000));
  EXPECT_EQ(cfg.drain.close_code, 1012);
  EXPECT_EQ(cfg.drain.spread, milliseconds(120000));
}

TEST(ConfigLoaderDrainTest, BadCloseCode) {
  EXPECT_EQ(Errors("drain:\n  close_code: 1000\n" + kMinimal),
            Strings({"t.yaml:2:15: drain.close_code: close_code must be 1001 (going away) or "
                     "1012 (service restart)"}));
  EXPECT_EQ(Errors("drain:\n  close_code: 99\n" + kMinimal),
            Strings({"t.yaml:2:15: drain.close_code: value 99 out of range (expected "
                     "1000..4999)"}));
}

TEST(ConfigLoaderDrainTest, BadDurationAndUnknownKey) {
  EXPECT_EQ(Errors("drain:\n  spread: soon\n  graze: 1s\n" + kMinimal),
            Strings({"t.yaml:2:11: drain.spread: invalid duration \"soon\" (expected e.g. 250ms, "
                     "5s, 2m, 1h, 1d)",
                     "t.yaml:3:3: drain.graze: unknown key"}));
}

TEST(ConfigLoaderAdminTest, TokenRequiredOffLoopback) {
  EXPECT_EQ(Errors("admin:\n  address: 0.0.0.0:9901\n" + kMinimal),
            Strings({"t.yaml:2:12: admin.address: admin.token is required when the admin "
                     "listener is not on loopback"}));
  const ProxyConfig cfg = Load("admin:\n  address: 0.0.0.0:9901\n  token: s3cret\n" + kMinimal);
  EXPECT_TRUE(cfg.admin.enabled);
  EXPECT_EQ(cfg.admin.token, "s3cret");
  const ProxyConfig loopback = Load("admin:\n  address: '[::1]:9901'\n" + kMinimal);
  EXPECT_EQ(loopback.admin.address.host, "::1");
  EXPECT_TRUE(loopback.admin.token.empty());
}

}  // namespace
}  // namespace wsgate::config
