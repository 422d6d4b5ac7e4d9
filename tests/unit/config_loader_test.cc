#include "config/loader.h"
#include "config/suggest.h"
#include "tests/unit/config_load_util.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
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
  if (result.ok()) {
    ADD_FAILURE() << "config unexpectedly loaded:\n" << yaml;
    return {};
  }
  Strings out;
  for (const ConfigError& e : result.error()) out.push_back(e.Format());
  return out;
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
  EXPECT_EQ(Errors("listner: x\n" + kMinimal),
            (Strings{"t.yaml:1:1: listner: unknown key (did you mean \"listeners\"?)"}));
}

TEST(ConfigLoaderTest, UnknownNestedKeys) {
  EXPECT_EQ(Errors("limits:\n  max_conns: 5\n" + kMinimal),
            (Strings{"t.yaml:2:3: limits.max_conns: unknown key"}));
  EXPECT_EQ(Errors("routes:\n  - match: {hots: a.com}\n    pool: chat\n" + kListeners + kPools),
            (Strings{"t.yaml:2:13: routes[0].match.hots: unknown key (did you mean \"host\"?)"}));
  EXPECT_EQ(Errors(kMinimal + "        wieght: 2\n"),
            (Strings{"t.yaml:10:9: pools[0].backends[0].wieght: unknown key "
                     "(did you mean \"weight\"?)"}));
}

// --- Did you mean ------------------------------------------------------------------------------

TEST(SuggestTest, EditDistance) {
  EXPECT_EQ(EditDistance("address", "address"), 0u);
  EXPECT_EQ(EditDistance("adress", "address"), 1u);         // deletion
  EXPECT_EQ(EditDistance("caht", "chat"), 1u);              // adjacent swap
  EXPECT_EQ(EditDistance("Least_Conn", "least_conn"), 0u);  // case is not a typo
  EXPECT_EQ(EditDistance("", "abc"), 3u);
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
}

TEST(SuggestTest, ClosestNameOnlyWhenClose) {
  EXPECT_EQ(ClosestName("adress", {"name", "address", "tls"}), "address");
  EXPECT_EQ(ClosestName("--chek", {"--check", "--config"}), "--check");
  EXPECT_EQ(ClosestName("udp", {"tcp", "http", "websocket"}), "");  // 2 edits in 3 letters
  EXPECT_EQ(ClosestName("max_conns", {"max_connections"}), "");
  EXPECT_EQ(ClosestName("address", {"address"}), "");  // an exact match is no suggestion
  EXPECT_EQ(ClosestName("", {"a"}), "");
  EXPECT_EQ(ClosestName(std::string(1000, 'a'), {"a"}), "");
  EXPECT_EQ(DidYouMean("wieght", {"address", "weight", "id"}), " (did you mean \"weight\"?)");
  EXPECT_EQ(DidYouMean("bogus", {"address", "weight", "id"}), "");
}

TEST(ConfigLoaderTest, SuggestsKeys) {
  EXPECT_EQ(Errors("listeners:\n  - name: public\n    adress: 0.0.0.0:8080\n" + kRoutes + kPools),
            (Strings{"t.yaml:2:5: listeners[0].address: missing required key",
                     "t.yaml:3:5: listeners[0].adress: unknown key (did you mean \"address\"?)"}));
  EXPECT_EQ(Errors(kMinimal + "limits:\n  max_conections: 5\n"),
            (Strings{"t.yaml:11:3: limits.max_conections: unknown key "
                     "(did you mean \"max_connections\"?)"}));
}

TEST(ConfigLoaderTest, SuggestsPoolNames) {
  EXPECT_EQ(Errors("routes:\n  - pool: caht\n" + kListeners + kPools),
            (Strings{"t.yaml:2:11: routes[0].pool: unknown pool \"caht\" "
                     "(did you mean \"chat\"?)"}));
}

TEST(ConfigLoaderTest, SuggestsEnumValues) {
  EXPECT_EQ(Errors(kMinimal + "log:\n  format: jsno\n"),
            (Strings{"t.yaml:11:11: log.format: unknown log format \"jsno\" "
                     "(did you mean \"json\"? expected text or json)"}));
  EXPECT_EQ(Errors(kMinimal + "limits:\n  rate_action: throtle\n"),
            (Strings{"t.yaml:11:16: limits.rate_action: unknown rate_action \"throtle\" "
                     "(did you mean \"throttle\"? expected close or throttle)"}));
  EXPECT_EQ(Errors(kListeners + kRoutes + kPools + "    balance: Least_Conn\n"),
            (Strings{"t.yaml:10:14: pools[0].balance: unknown balance \"Least_Conn\" "
                     "(did you mean \"least_conn\"? expected least_conn, round_robin, "
                     "random_two or sticky)"}));
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
                     "(expected least_conn, round_robin, random_two or sticky)"}));
}

TEST(ConfigLoaderTest, DuplicateListenerName) {
  EXPECT_EQ(Errors(kListeners + "  - name: public\n    address: 0.0.0.0:8081\n" + kRoutes + kPools),
            (Strings{"t.yaml:4:11: listeners[1].name: duplicate listener name \"public\""}));
}

// "_admin" names the admin socket in the upgrade handover: a listener of that name would take
// it (or leak its own socket) in the new process.
TEST(ConfigLoaderTest, ReservedListenerName) {
  EXPECT_EQ(Errors("listeners:\n  - name: _admin\n    address: 0.0.0.0:8080\n" + kRoutes + kPools),
            (Strings{"t.yaml:2:11: listeners[0].name: listener name \"_admin\" is reserved for "
                     "the admin listener"}));
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
                // NOLINTNEXTLINE(bugprone-suspicious-missing-comma): one message, two lines
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
  std::string path = ::testing::TempDir() + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(ConfigLoaderFileTest, LoadsFileAndRecordsSourcePath) {
  const std::string path = WriteTempFile("wsgate_config_ok.yaml", kMinimal);
  LoadResult result = LoadConfigFile(path);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.value().source_path, path);
  std::remove(path.c_str());
}

TEST(ConfigLoaderFileTest, ErrorsNameTheFile) {
  const std::string path = WriteTempFile("wsgate_config_bad.yaml", "workers: x\n" + kMinimal);
  LoadResult result = LoadConfigFile(path);
  ASSERT_FALSE(result.ok());
  const ConfigErrors& errors = result.error();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].Format(), path + ":1:10: workers: expected an integer");
  std::remove(path.c_str());
}

TEST(ConfigLoaderFileTest, UnreadableFile) {
  LoadResult missing = LoadConfigFile("/nonexistent/wsgate.yaml");
  ASSERT_FALSE(missing.ok());
  ASSERT_EQ(missing.error().size(), 1u);
  EXPECT_EQ(missing.error()[0].Format(),
            "/nonexistent/wsgate.yaml: cannot read file: No such file or directory");

  LoadResult dir = LoadConfigFile("/");
  ASSERT_FALSE(dir.ok());
  ASSERT_EQ(dir.error().size(), 1u);
  EXPECT_EQ(dir.error()[0].Format(), "/: cannot read file: Is a directory");
}

TEST(ConfigLoaderFileTest, ExampleConfigLoads) {
  const std::string path = std::string(WSGATE_SOURCE_DIR) + "/examples/wsgate.yaml";
  if (!std::ifstream(path)) GTEST_SKIP() << path << " does not exist";
  LoadResult result = LoadConfigFile(path);
  if (!result.ok()) {
    for (const ConfigError& e : result.error()) ADD_FAILURE() << e.Format();
  }
}

// --- Robustness ----------------------------------------------------------------------------------

// Whatever the input, the loader returns either a config or at least one well-formed error.
void ExpectHandled(const std::string& text) {
  const LoadResult result = LoadConfigString(text, "t.yaml");
  if (!result.ok()) {
    ASSERT_FALSE(result.error().empty());
    for (const ConfigError& e : result.error()) {
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
    ASSERT_FALSE(result.ok());
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
  ASSERT_TRUE(LoadConfigString(base, "t.yaml").ok());

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
  const ProxyConfig cfg =
      Load("drain:\n  grace: 5s\n  close_code: 1012\n  spread: 2m\n" + kMinimal);
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
                     "t.yaml:3:3: drain.graze: unknown key (did you mean \"grace\"?)"}));
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

// An absolute path under the test's temp dir holding |text|.
std::string WriteTokenFile(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(ConfigLoaderAdminTest, TokenFileIsReadWithoutItsNewline) {
  const std::string path = WriteTokenFile("wsgate_admin_token", "s3cret-Token/+=\n");
  const ProxyConfig cfg =
      Load("admin:\n  address: 0.0.0.0:9901\n  token_file: " + path + "\n" + kMinimal);
  EXPECT_EQ(cfg.admin.token, "s3cret-Token/+=");
  EXPECT_EQ(cfg.admin.token_file.path, path);
  // Satisfies the token requirement off loopback; CRLF is stripped too.
  const std::string crlf = WriteTokenFile("wsgate_admin_token_crlf", "abc\r\n");
  EXPECT_EQ(Load("admin:\n  token_file: " + crlf + "\n" + kMinimal).admin.token, "abc");
  std::remove(path.c_str());
  std::remove(crlf.c_str());
}

TEST(ConfigLoaderAdminTest, TokenFileErrors) {
  const std::string empty = WriteTokenFile("wsgate_admin_token_empty", "\n");
  EXPECT_EQ(Errors("admin:\n  token_file: " + empty + "\n" + kMinimal),
            Strings({"t.yaml:2:15: admin.token_file: token file \"" + empty + "\" is empty"}));
  const std::string missing = ::testing::TempDir() + "wsgate_admin_token_missing";
  std::remove(missing.c_str());
  EXPECT_EQ(Errors("admin:\n  token_file: " + missing + "\n" + kMinimal),
            Strings({"t.yaml:2:15: admin.token_file: cannot read \"" + missing +
                     "\": No such file or directory"}));
  const std::string two_lines = WriteTokenFile("wsgate_admin_token_two", "abc\ndef\n");
  EXPECT_EQ(Errors("admin:\n  token_file: " + two_lines + "\n" + kMinimal),
            Strings({"t.yaml:2:15: admin.token_file: token file \"" + two_lines +
                     "\" must hold one line of visible ASCII"}));
  EXPECT_EQ(Errors("admin:\n  token: x\n  token_file: " + two_lines + "\n" + kMinimal),
            Strings({"t.yaml:3:15: admin.token_file: cannot be set together with admin.token"}));
  EXPECT_EQ(Errors("admin:\n  token_file: " + ::testing::TempDir() + "\n" + kMinimal),
            Strings({"t.yaml:2:15: admin.token_file: token file \"" + ::testing::TempDir() +
                     "\" is not a regular file"}));
  EXPECT_EQ(Errors("admin:\n  token_file: \"\"\n" + kMinimal),
            Strings({"t.yaml:2:15: admin.token_file: must not be empty"}));
  // Off loopback an unreadable file is one error, not also "token is required".
  EXPECT_EQ(Errors("admin:\n  address: 0.0.0.0:9901\n  token_file: " + empty + "\n" + kMinimal),
            Strings({"t.yaml:3:15: admin.token_file: token file \"" + empty + "\" is empty"}));
  std::remove(empty.c_str());
  std::remove(two_lines.c_str());
}

TEST(ConfigLoaderAdminTest, TokenFileRelativeToTheConfig) {
  const std::string path = WriteTokenFile("wsgate_admin_token_rel", "rel\n");
  const std::string config = ::testing::TempDir() + "wsgate_admin_rel.yaml";
  std::ofstream(config, std::ios::binary)
      << "admin:\n  token_file: wsgate_admin_token_rel\n" + kMinimal;
  LoadResult result = LoadConfigFile(config);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.value().admin.token, "rel");
  std::remove(path.c_str());
  std::remove(config.c_str());
}

TEST(ConfigLoaderAdminTest, AllowedOriginsAndHosts) {
  const ProxyConfig defaults = Load("admin:\n" + kMinimal);
  EXPECT_TRUE(defaults.admin.allowed_origins.empty());
  EXPECT_TRUE(defaults.admin.allowed_hosts.empty());
  const ProxyConfig cfg = Load(
      "admin:\n  allowed_origins: [\"https://ops.example.com\"]\n"
      "  allowed_hosts: [Gate.Internal, 10.0.0.5, \"::1\"]\n" +
      kMinimal);
  EXPECT_EQ(cfg.admin.allowed_origins, Strings({"https://ops.example.com"}));
  EXPECT_EQ(cfg.admin.allowed_hosts, Strings({"gate.internal", "10.0.0.5", "::1"}));
  EXPECT_EQ(
      Errors("admin:\n  allowed_hosts: [\"gate:9901\"]\n  allowed_origins: [\"\"]\n" + kMinimal),
      Strings({"t.yaml:2:19: admin.allowed_hosts[0]: invalid host \"gate:9901\" (expected "
               "a name or IP address, no port)",
               "t.yaml:3:21: admin.allowed_origins[0]: must not be empty"}));
}

}  // namespace
}  // namespace wsgate::config

namespace wsgate::config {
namespace {

// --- Pool settings: balance, sticky, health checks, outlier detection, rebalancing -------------

// A file whose first lines are pool "chat": line 1 "pools:", line 2 "  - name: chat", then
// |lines| (each indented four spaces), then one backend.
std::string PoolWith(const std::string& lines) {
  return "pools:\n  - name: chat\n" + lines + "    backends:\n      - address: 127.0.0.1:9001\n" +
         kListeners + kRoutes;
}

TEST(ConfigLoaderPoolTest, EveryNewFieldRoundTrips) {
  const ProxyConfig cfg = Load(kListeners + kRoutes +
                               "pools:\n"
                               "  - name: chat\n"
                               "    balance: sticky\n"
                               "    sticky:\n"
                               "      key: cookie:sid\n"
                               "      fallback: reject\n"
                               "      load_factor: 1.5\n"
                               "      insert_cookie: wsgate_b\n"
                               "    health_check:\n"
                               "      interval: 5s\n"
                               "      timeout: 500ms\n"
                               "      type: websocket\n"
                               "      path: /healthz?deep=1\n"
                               "      healthy_threshold: 1\n"
                               "      unhealthy_threshold: 100\n"
                               "    outlier:\n"
                               "      consecutive_failures: 5\n"
                               "      ejection_time: 1m\n"
                               "    rebalance:\n"
                               "      enabled: true\n"
                               "      tolerance: 1.25\n"
                               "      rate: 20/s\n"
                               "    close_on_unhealthy: true\n"
                               "    backends:\n"
                               "      - address: 127.0.0.1:9001\n"
                               "        weight: 2\n"
                               "        id: chat-1\n"
                               "      - address: 127.0.0.1:9002\n"
                               "  - name: other\n"
                               "    balance: random_two\n"
                               "    health_check: {type: http, path: /}\n"
                               "    rebalance: {enabled: false, tolerance: 10, rate: 100000}\n"
                               "    close_on_unhealthy: false\n"
                               "    backends:\n"
                               "      - address: 127.0.0.1:9001\n"
                               "        id: x\n"
                               "  - name: third\n"
                               "    balance: sticky\n"
                               "    sticky: {key: 'header:X-User', fallback: round_robin, "
                               "load_factor: 0, insert_cookie: ''}\n"
                               "    backends: [{address: 127.0.0.1:9001}]\n"
                               "  - name: fourth\n"
                               "    balance: sticky\n"
                               "    sticky: {key: 'query:room[id]', fallback: least_conn, "
                               "load_factor: 100}\n"
                               "    backends: [{address: 127.0.0.1:9001}]\n"
                               "  - name: fifth\n"
                               "    balance: sticky\n"
                               "    sticky: {key: path, load_factor: 2}\n"
                               "    backends: [{address: 127.0.0.1:9001}]\n"
                               "  - name: sixth\n"
                               "    balance: sticky\n"
                               "    sticky: {key: client_ip, load_factor: 1.}\n"
                               "    backends: [{address: 127.0.0.1:9001}]\n");
  ASSERT_EQ(cfg.pools.size(), 6u);
  const PoolConfig& chat = cfg.pools[0];
  EXPECT_EQ(chat.balance, Balance::kSticky);
  EXPECT_EQ(chat.sticky.source, StickyConfig::KeySource::kCookie);
  EXPECT_EQ(chat.sticky.key_name, "sid");
  EXPECT_EQ(chat.sticky.fallback, StickyConfig::Fallback::kReject);
  EXPECT_DOUBLE_EQ(chat.sticky.load_factor, 1.5);
  EXPECT_EQ(chat.sticky.insert_cookie, "wsgate_b");
  EXPECT_TRUE(chat.health_check.enabled);
  EXPECT_EQ(chat.health_check.interval, milliseconds(5000));
  EXPECT_EQ(chat.health_check.timeout, milliseconds(500));
  EXPECT_EQ(chat.health_check.type, HealthCheckConfig::Type::kWebSocket);
  EXPECT_EQ(chat.health_check.path, "/healthz?deep=1");
  EXPECT_EQ(chat.health_check.healthy_threshold, 1u);
  EXPECT_EQ(chat.health_check.unhealthy_threshold, 100u);
  EXPECT_EQ(chat.outlier.consecutive_failures, 5u);
  EXPECT_EQ(chat.outlier.ejection_time, milliseconds(60000));
  EXPECT_TRUE(chat.rebalance.enabled);
  EXPECT_DOUBLE_EQ(chat.rebalance.tolerance, 1.25);
  EXPECT_DOUBLE_EQ(chat.rebalance.rate, 20);
  EXPECT_TRUE(chat.close_on_unhealthy);
  ASSERT_EQ(chat.backends.size(), 2u);
  EXPECT_EQ(chat.backends[0].id, "chat-1");
  EXPECT_EQ(chat.backends[0].weight, 2u);
  EXPECT_EQ(chat.backends[1].id, "");  // the runtime falls back to the address text

  const PoolConfig& other = cfg.pools[1];
  EXPECT_EQ(other.balance, Balance::kRandomTwo);
  EXPECT_TRUE(other.health_check.enabled);
  EXPECT_EQ(other.health_check.type, HealthCheckConfig::Type::kHttp);
  EXPECT_EQ(other.health_check.path, "/");
  EXPECT_FALSE(other.rebalance.enabled);
  EXPECT_DOUBLE_EQ(other.rebalance.tolerance, 10);
  EXPECT_DOUBLE_EQ(other.rebalance.rate, 100000);
  EXPECT_FALSE(other.close_on_unhealthy);
  ASSERT_EQ(other.backends.size(), 1u);
  EXPECT_EQ(other.backends[0].id, "x");

  EXPECT_EQ(cfg.pools[2].sticky.source, StickyConfig::KeySource::kHeader);
  EXPECT_EQ(cfg.pools[2].sticky.key_name, "X-User");
  EXPECT_EQ(cfg.pools[2].sticky.fallback, StickyConfig::Fallback::kRoundRobin);
  EXPECT_DOUBLE_EQ(cfg.pools[2].sticky.load_factor, 0);
  EXPECT_EQ(cfg.pools[2].sticky.insert_cookie, "");
  EXPECT_EQ(cfg.pools[3].sticky.source, StickyConfig::KeySource::kQuery);
  EXPECT_EQ(cfg.pools[3].sticky.key_name, "room[id]");
  EXPECT_EQ(cfg.pools[3].sticky.fallback, StickyConfig::Fallback::kLeastConn);
  EXPECT_DOUBLE_EQ(cfg.pools[3].sticky.load_factor, 100);
  EXPECT_EQ(cfg.pools[4].sticky.source, StickyConfig::KeySource::kPath);
  EXPECT_EQ(cfg.pools[4].sticky.key_name, "");
  EXPECT_DOUBLE_EQ(cfg.pools[4].sticky.load_factor, 2);
  EXPECT_EQ(cfg.pools[5].sticky.source, StickyConfig::KeySource::kClientIp);
  EXPECT_DOUBLE_EQ(cfg.pools[5].sticky.load_factor, 1);
}

TEST(ConfigLoaderPoolTest, DefaultsWhenNewSectionsAreAbsent) {
  const ProxyConfig cfg = Load(kMinimal);
  ASSERT_EQ(cfg.pools.size(), 1u);
  const PoolConfig& pool = cfg.pools[0];
  EXPECT_EQ(pool.balance, Balance::kLeastConn);
  EXPECT_EQ(pool.sticky.source, StickyConfig::KeySource::kClientIp);
  EXPECT_EQ(pool.sticky.key_name, "");
  EXPECT_EQ(pool.sticky.fallback, StickyConfig::Fallback::kLeastConn);
  EXPECT_DOUBLE_EQ(pool.sticky.load_factor, 1.25);
  EXPECT_EQ(pool.sticky.insert_cookie, "");
  EXPECT_FALSE(pool.health_check.enabled);
  EXPECT_EQ(pool.health_check.interval, milliseconds(2000));
  EXPECT_EQ(pool.health_check.timeout, milliseconds(1000));
  EXPECT_EQ(pool.health_check.type, HealthCheckConfig::Type::kTcp);
  EXPECT_EQ(pool.health_check.path, "/");
  EXPECT_EQ(pool.health_check.healthy_threshold, 2u);
  EXPECT_EQ(pool.health_check.unhealthy_threshold, 3u);
  EXPECT_EQ(pool.outlier.consecutive_failures, 0u);
  EXPECT_EQ(pool.outlier.ejection_time, milliseconds(30000));
  EXPECT_FALSE(pool.rebalance.enabled);
  EXPECT_DOUBLE_EQ(pool.rebalance.tolerance, 1.2);
  EXPECT_DOUBLE_EQ(pool.rebalance.rate, 50);
  EXPECT_FALSE(pool.close_on_unhealthy);
  ASSERT_EQ(pool.backends.size(), 1u);
  EXPECT_EQ(pool.backends[0].id, "");
}

TEST(ConfigLoaderPoolTest, StickyWithoutSectionKeysOnClientIp) {
  const ProxyConfig cfg = Load(PoolWith("    balance: sticky\n"));
  ASSERT_EQ(cfg.pools.size(), 1u);
  EXPECT_EQ(cfg.pools[0].balance, Balance::kSticky);
  EXPECT_EQ(cfg.pools[0].sticky.source, StickyConfig::KeySource::kClientIp);
  EXPECT_EQ(cfg.pools[0].sticky.fallback, StickyConfig::Fallback::kLeastConn);
  EXPECT_DOUBLE_EQ(cfg.pools[0].sticky.load_factor, 1.25);
}

TEST(ConfigLoaderPoolTest, EmptySectionsEnableOrKeepDefaults) {
  const ProxyConfig cfg = Load(PoolWith("    health_check:\n    outlier: {}\n    rebalance:\n"));
  ASSERT_EQ(cfg.pools.size(), 1u);
  const PoolConfig& pool = cfg.pools[0];
  EXPECT_TRUE(pool.health_check.enabled);  // presence enables, with the default settings
  EXPECT_EQ(pool.health_check.interval, milliseconds(2000));
  EXPECT_EQ(pool.health_check.type, HealthCheckConfig::Type::kTcp);
  EXPECT_EQ(pool.outlier.consecutive_failures, 0u);
  EXPECT_FALSE(pool.rebalance.enabled);  // rebalancing needs an explicit enabled: true
}

TEST(ConfigLoaderPoolTest, BooleansAndNumbersInEveryYamlSpelling) {
  const ProxyConfig cfg =
      Load(PoolWith("    balance: sticky\n"
                    "    sticky: {key: client_ip, load_factor: +1e1}\n"
                    "    rebalance: {enabled: True, tolerance: 2, rate: 7}\n"
                    "    close_on_unhealthy: FALSE\n"));
  ASSERT_EQ(cfg.pools.size(), 1u);
  EXPECT_DOUBLE_EQ(cfg.pools[0].sticky.load_factor, 10);
  EXPECT_TRUE(cfg.pools[0].rebalance.enabled);
  EXPECT_DOUBLE_EQ(cfg.pools[0].rebalance.tolerance, 2);
  EXPECT_DOUBLE_EQ(cfg.pools[0].rebalance.rate, 7);
  EXPECT_FALSE(cfg.pools[0].close_on_unhealthy);
  const ProxyConfig more =
      Load(PoolWith("    rebalance: {enabled: !!bool true, tolerance: .15e1}\n"));
  ASSERT_EQ(more.pools.size(), 1u);
  EXPECT_TRUE(more.pools[0].rebalance.enabled);
  EXPECT_DOUBLE_EQ(more.pools[0].rebalance.tolerance, 1.5);
}

TEST(ConfigLoaderPoolTest, UnknownKeysInNewSections) {
  EXPECT_EQ(Errors(PoolWith("    balance: sticky\n"
                            "    sticky: {key: path, lod_factor: 2}\n"
                            "    health_check: {intervall: 1s}\n"
                            "    outlier: {failures: 1}\n"
                            "    rebalance: {enable: true}\n")),
            (Strings{"t.yaml:4:25: pools[0].sticky.lod_factor: unknown key "
                     "(did you mean \"load_factor\"?)",
                     "t.yaml:5:20: pools[0].health_check.intervall: unknown key "
                     "(did you mean \"interval\"?)",
                     "t.yaml:6:15: pools[0].outlier.failures: unknown key",
                     "t.yaml:7:17: pools[0].rebalance.enable: unknown key "
                     "(did you mean \"enabled\"?)"}));
  EXPECT_EQ(Errors(PoolWith("    sticky_key: path\n")),
            (Strings{"t.yaml:3:5: pools[0].sticky_key: unknown key"}));
  EXPECT_EQ(Errors(PoolWith("    outlier: 5\n")),
            (Strings{"t.yaml:3:14: pools[0].outlier: expected a mapping"}));
}

TEST(ConfigLoaderPoolTest, StickySettingsNeedStickyBalance) {
  EXPECT_EQ(Errors(PoolWith("    sticky: {key: path}\n")),
            (Strings{"t.yaml:3:13: pools[0].sticky: sticky settings need balance: sticky"}));
  EXPECT_EQ(Errors(PoolWith("    balance: round_robin\n    sticky:\n      key: path\n")),
            (Strings{"t.yaml:5:7: pools[0].sticky: sticky settings need balance: sticky"}));
  // An unreadable balance is reported alone, without a second error about the sticky section.
  EXPECT_EQ(Errors(PoolWith("    balance: stiky\n    sticky: {key: path}\n")),
            (Strings{"t.yaml:3:14: pools[0].balance: unknown balance \"stiky\" "
                     "(did you mean \"sticky\"? expected least_conn, round_robin, "
                     "random_two or sticky)"}));
}

TEST(ConfigLoaderPoolTest, StickyKeyIsRequiredInTheSection) {
  EXPECT_EQ(Errors(PoolWith("    balance: sticky\n    sticky:\n      fallback: reject\n")),
            (Strings{"t.yaml:5:7: pools[0].sticky.key: missing required key"}));
  EXPECT_EQ(Errors(PoolWith("    balance: sticky\n    sticky:\n")),
            (Strings{"t.yaml:4:5: pools[0].sticky.key: missing required key"}));
}

TEST(ConfigLoaderPoolTest, InvalidStickyKey) {
  const std::string expected =
      " (expected cookie:NAME, header:NAME, query:NAME, client_ip or path)";
  EXPECT_EQ(Errors(PoolWith("    balance: sticky\n    sticky: {key: ip}\n")),
            (Strings{"t.yaml:4:19: pools[0].sticky.key: invalid sticky key \"ip\"" + expected}));
  EXPECT_EQ(
      Errors(PoolWith("    balance: sticky\n    sticky: {key: 'cookie:'}\n")),
      (Strings{"t.yaml:4:19: pools[0].sticky.key: invalid sticky key \"cookie:\"" + expected}));
  EXPECT_EQ(
      Errors(PoolWith("    balance: sticky\n    sticky: {key: 'Cookie:sid'}\n")),
      (Strings{"t.yaml:4:19: pools[0].sticky.key: invalid sticky key \"Cookie:sid\"" + expected}));
  EXPECT_EQ(Errors(PoolWith("    balance: sticky\n    sticky: {key: [path]}\n")),
            (Strings{"t.yaml:4:19: pools[0].sticky.key: expected a string"}));
}

TEST(ConfigLoaderPoolTest, InvalidCookieName) {
  EXPECT_EQ(Errors(PoolWith("    balance: sticky\n    sticky: {key: 'cookie:s id'}\n")),
            (Strings{"t.yaml:4:19: pools[0].sticky.key: invalid cookie name \"s id\" "
                     "(expected RFC 6265 token characters)"}));
  EXPECT_EQ(Errors(PoolWith("    balance: sticky\n"
                            "    sticky:\n"
                            "      key: client_ip\n"
                            "      insert_cookie: a;b\n")),
            (Strings{"t.yaml:6:22: pools[0].sticky.insert_cookie: invalid cookie name \"a;b\" "
                     "(expected RFC 6265 token characters)"}));
}

TEST(ConfigLoaderPoolTest, InvalidHeaderName) {
  EXPECT_EQ(Errors(PoolWith("    balance: sticky\n    sticky: {key: 'header:X:User'}\n")),
            (Strings{"t.yaml:4:19: pools[0].sticky.key: invalid header name \"X:User\" "
                     "(expected RFC 7230 token characters)"}));
}

TEST(ConfigLoaderPoolTest, InvalidQueryParameterName) {
  EXPECT_EQ(Errors(PoolWith("    balance: sticky\n    sticky: {key: 'query:a=b'}\n")),
            (Strings{"t.yaml:4:19: pools[0].sticky.key: invalid query parameter name \"a=b\" "
                     "(expected no \"&\", \"=\", \"#\", spaces or control characters)"}));
}

TEST(ConfigLoaderPoolTest, UnknownFallback) {
  EXPECT_EQ(Errors(PoolWith("    balance: sticky\n    sticky: {key: path, fallback: random}\n")),
            (Strings{"t.yaml:4:35: pools[0].sticky.fallback: unknown fallback \"random\" "
                     "(expected least_conn, round_robin or reject)"}));
}

TEST(ConfigLoaderPoolTest, ExpectedANumber) {
  const std::string head = "    balance: sticky\n    sticky:\n      key: path\n      load_factor: ";
  for (const char* bad : {"'1.5'", "abc", "[1]", ".inf", ".nan", "0x10", "1e", "1.5x", "true",
                          "1_000", "\"\"", "--1", "."}) {
    EXPECT_EQ(Errors(PoolWith(head + bad + "\n")),
              (Strings{"t.yaml:6:20: pools[0].sticky.load_factor: expected a number"}))
        << bad;
  }
  EXPECT_EQ(Errors(PoolWith(head + "\n")),
            (Strings{"t.yaml:6:7: pools[0].sticky.load_factor: expected a number"}));
  EXPECT_EQ(Errors(PoolWith("    rebalance: {tolerance: high}\n")),
            (Strings{"t.yaml:3:28: pools[0].rebalance.tolerance: expected a number"}));
}

TEST(ConfigLoaderPoolTest, NumberOutOfRange) {
  const std::string head = "    balance: sticky\n    sticky:\n      key: path\n      load_factor: ";
  for (const char* bad : {"0.5", "0.999", "100.01", "-1", "1e400", "-0.5"}) {
    EXPECT_EQ(Errors(PoolWith(head + bad + "\n")),
              (Strings{"t.yaml:6:20: pools[0].sticky.load_factor: value " + std::string(bad) +
                       " out of range (expected 0, or 1..100)"}))
        << bad;
  }
  for (const char* bad : {"1", "1.0", "0", "10.5", "-2"}) {
    EXPECT_EQ(Errors(PoolWith(std::string("    rebalance: {tolerance: ") + bad + "}\n")),
              (Strings{"t.yaml:3:28: pools[0].rebalance.tolerance: value " + std::string(bad) +
                       " out of range (expected > 1 and <= 10)"}))
        << bad;
  }
}

TEST(ConfigLoaderPoolTest, ExpectedTrueOrFalse) {
  for (const char* bad :
       {"yes", "no", "on", "off", "1", "0", "y", "'true'", "\"false\"", "[]", "tru"}) {
    EXPECT_EQ(Errors(PoolWith(std::string("    close_on_unhealthy: ") + bad + "\n")),
              (Strings{"t.yaml:3:25: pools[0].close_on_unhealthy: expected true or false"}))
        << bad;
  }
  EXPECT_EQ(Errors(PoolWith("    rebalance:\n      enabled: yes\n")),
            (Strings{"t.yaml:4:16: pools[0].rebalance.enabled: expected true or false"}));
  EXPECT_EQ(Errors(PoolWith("    close_on_unhealthy:\n")),
            (Strings{"t.yaml:3:5: pools[0].close_on_unhealthy: expected true or false"}));
}

TEST(ConfigLoaderPoolTest, InvalidRate) {
  for (const char* bad : {"fast", "50/m", "50 /s", "/s", "-5/s", "+5", "1.5/s", "5/S", "''"}) {
    EXPECT_EQ(
        Errors(PoolWith(std::string("    rebalance: {rate: ") + bad + "}\n")),
        (Strings{"t.yaml:3:23: pools[0].rebalance.rate: invalid rate " +
                 (std::string(bad) == "''" ? std::string("\"\"") : "\"" + std::string(bad) + "\"") +
                 " (expected e.g. 50/s or 50)"}))
        << bad;
  }
  EXPECT_EQ(Errors(PoolWith("    rebalance: {rate: [50]}\n")),
            (Strings{"t.yaml:3:23: pools[0].rebalance.rate: expected a rate (e.g. 50/s)"}));
}

TEST(ConfigLoaderPoolTest, RateOutOfRange) {
  for (const char* bad : {"0/s", "0", "100001/s", "100001", "99999999999999999999999/s"}) {
    EXPECT_EQ(Errors(PoolWith(std::string("    rebalance: {rate: ") + bad + "}\n")),
              (Strings{"t.yaml:3:23: pools[0].rebalance.rate: rate " + std::string(bad) +
                       " out of range (expected 1..100000 per second)"}))
        << bad;
  }
}

TEST(ConfigLoaderPoolTest, HealthCheckDurations) {
  EXPECT_EQ(Errors(PoolWith("    health_check:\n      interval: 0s\n      timeout: 0\n")),
            (Strings{"t.yaml:4:17: pools[0].health_check.interval: must be greater than 0",
                     "t.yaml:5:16: pools[0].health_check.timeout: must be greater than 0"}));
  EXPECT_EQ(Errors(PoolWith("    health_check:\n      interval: often\n")),
            (Strings{"t.yaml:4:17: pools[0].health_check.interval: invalid duration \"often\" "
                     "(expected e.g. 250ms, 5s, 2m, 1h, 1d)"}));
}

TEST(ConfigLoaderPoolTest, HealthCheckTimeoutMustBeBelowInterval) {
  EXPECT_EQ(Errors(PoolWith("    health_check:\n      interval: 2s\n      timeout: 2000ms\n")),
            (Strings{"t.yaml:5:16: pools[0].health_check.timeout: timeout (2s) must be less "
                     "than interval (2s)"}));
  EXPECT_EQ(Errors(PoolWith("    health_check:\n      timeout: 1m\n")),
            (Strings{"t.yaml:4:16: pools[0].health_check.timeout: timeout (1m) must be less "
                     "than interval (2s)"}));
  // Only the interval is written: the default timeout (1s) no longer fits.
  EXPECT_EQ(Errors(PoolWith("    health_check:\n      interval: 750ms\n")),
            (Strings{"t.yaml:4:17: pools[0].health_check.interval: timeout (1s) must be less "
                     "than interval (750ms)"}));
  const ProxyConfig cfg = Load(PoolWith("    health_check: {interval: 1s, timeout: 999ms}\n"));
  ASSERT_EQ(cfg.pools.size(), 1u);
  EXPECT_EQ(cfg.pools[0].health_check.timeout, milliseconds(999));
}

TEST(ConfigLoaderPoolTest, UnknownHealthCheckType) {
  EXPECT_EQ(Errors(PoolWith("    health_check:\n      type: grpc\n")),
            (Strings{"t.yaml:4:13: pools[0].health_check.type: unknown health check type "
                     "\"grpc\" (expected tcp, http or websocket)"}));
}

TEST(ConfigLoaderPoolTest, HealthCheckPath) {
  EXPECT_EQ(Errors(PoolWith("    health_check: {type: http, path: healthz}\n")),
            (Strings{"t.yaml:3:38: pools[0].health_check.path: must start with \"/\""}));
  EXPECT_EQ(Errors(PoolWith("    health_check: {type: http, path: ''}\n")),
            (Strings{"t.yaml:3:38: pools[0].health_check.path: must start with \"/\""}));
  EXPECT_EQ(Errors(PoolWith("    health_check: {type: http, path: \"/a b\"}\n")),
            (Strings{"t.yaml:3:38: pools[0].health_check.path: invalid path \"/a b\" "
                     "(expected printable ASCII without spaces)"}));
  EXPECT_EQ(Errors(PoolWith("    health_check: {type: websocket, path: \"/x\\r\\nHost: evil\"}\n")),
            (Strings{"t.yaml:3:43: pools[0].health_check.path: invalid path "
                     "\"/x\\x0d\\x0aHost: evil\" (expected printable ASCII without spaces)"}));
}

TEST(ConfigLoaderPoolTest, HealthCheckPathNeedsHttpOrWebSocket) {
  EXPECT_EQ(Errors(PoolWith("    health_check:\n      path: /healthz\n")),
            (Strings{"t.yaml:4:13: pools[0].health_check.path: path needs type: http or "
                     "websocket"}));
  EXPECT_EQ(Errors(PoolWith("    health_check: {type: tcp, path: /healthz}\n")),
            (Strings{"t.yaml:3:37: pools[0].health_check.path: path needs type: http or "
                     "websocket"}));
  // An unknown type is reported alone.
  EXPECT_EQ(Errors(PoolWith("    health_check: {type: htp, path: /healthz}\n")),
            (Strings{"t.yaml:3:26: pools[0].health_check.type: unknown health check type "
                     "\"htp\" (did you mean \"http\"? expected tcp, http or websocket)"}));
}

TEST(ConfigLoaderPoolTest, HealthCheckThresholdsOutOfRange) {
  EXPECT_EQ(Errors(PoolWith("    health_check:\n"
                            "      healthy_threshold: 0\n"
                            "      unhealthy_threshold: 101\n")),
            (Strings{"t.yaml:4:26: pools[0].health_check.healthy_threshold: value 0 out of "
                     "range (expected 1..100)",
                     "t.yaml:5:28: pools[0].health_check.unhealthy_threshold: value 101 out of "
                     "range (expected 1..100)"}));
}

TEST(ConfigLoaderPoolTest, OutlierValues) {
  EXPECT_EQ(Errors(PoolWith("    outlier:\n      consecutive_failures: 1001\n"
                            "      ejection_time: 0s\n")),
            (Strings{"t.yaml:4:29: pools[0].outlier.consecutive_failures: value 1001 out of "
                     "range (expected 0..1000)",
                     "t.yaml:5:22: pools[0].outlier.ejection_time: must be greater than 0"}));
  const ProxyConfig cfg =
      Load(PoolWith("    outlier: {consecutive_failures: 0, ejection_time: 250ms}\n"));
  ASSERT_EQ(cfg.pools.size(), 1u);
  EXPECT_EQ(cfg.pools[0].outlier.consecutive_failures, 0u);
  EXPECT_EQ(cfg.pools[0].outlier.ejection_time, milliseconds(250));
}

TEST(ConfigLoaderPoolTest, DuplicateBackendAddress) {
  EXPECT_EQ(Errors(kMinimal + "      - address: 127.0.0.1:9001\n"),
            (Strings{"t.yaml:10:18: pools[0].backends[1].address: duplicate backend address "
                     "\"127.0.0.1:9001\""}));
  // Host names compare case-insensitively and IPv6 literals by value.
  EXPECT_EQ(Errors(kListeners + kRoutes +
                   "pools:\n"
                   "  - name: chat\n"
                   "    backends:\n"
                   "      - address: Backend.local:9001\n"
                   "      - address: backend.LOCAL:9001\n"
                   "      - address: \"[::1]:9001\"\n"
                   "      - address: \"[0:0::0:1]:9001\"\n"
                   "      - address: backend.local:9002\n"),
            (Strings{"t.yaml:10:18: pools[0].backends[1].address: duplicate backend address "
                     "\"backend.LOCAL:9001\"",
                     "t.yaml:12:18: pools[0].backends[3].address: duplicate backend address "
                     "\"[0:0::0:1]:9001\""}));
  // The same backend may serve two pools.
  const ProxyConfig cfg =
      Load(kMinimal + "  - name: other\n    backends:\n      - address: 127.0.0.1:9001\n");
  EXPECT_EQ(cfg.pools.size(), 2u);
}

TEST(ConfigLoaderPoolTest, DuplicateBackendId) {
  EXPECT_EQ(Errors(kListeners + kRoutes +
                   "pools:\n"
                   "  - name: chat\n"
                   "    backends:\n"
                   "      - {address: 127.0.0.1:9001, id: a}\n"
                   "      - {address: 127.0.0.1:9002, id: a}\n"),
            (Strings{"t.yaml:10:39: pools[0].backends[1].id: duplicate backend id \"a\""}));
  // An explicit id may not take the identity another backend has by default (its address).
  EXPECT_EQ(Errors(kListeners + kRoutes +
                   "pools:\n"
                   "  - name: chat\n"
                   "    backends:\n"
                   "      - {address: 127.0.0.1:9001}\n"
                   "      - {address: 127.0.0.1:9002, id: '127.0.0.1:9001'}\n"),
            (Strings{"t.yaml:10:39: pools[0].backends[1].id: duplicate backend id "
                     "\"127.0.0.1:9001\""}));
  EXPECT_EQ(Errors(kListeners + kRoutes +
                   "pools:\n"
                   "  - name: chat\n"
                   "    backends:\n"
                   "      - {address: 127.0.0.1:9001, id: '127.0.0.1:9002'}\n"
                   "      - {address: 127.0.0.1:9002}\n"),
            (Strings{"t.yaml:10:19: pools[0].backends[1].address: duplicate backend id "
                     "\"127.0.0.1:9002\""}));
  // Ids are per pool.
  const ProxyConfig cfg = Load(kListeners + kRoutes +
                               "pools:\n"
                               "  - name: chat\n"
                               "    backends: [{address: 127.0.0.1:9001, id: a}]\n"
                               "  - name: other\n"
                               "    backends: [{address: 127.0.0.1:9002, id: a}]\n");
  EXPECT_EQ(cfg.pools.size(), 2u);
}

TEST(ConfigLoaderPoolTest, BackendIdMustBeANonEmptyString) {
  EXPECT_EQ(Errors(kMinimal + "        id: \"\"\n"),
            (Strings{"t.yaml:10:13: pools[0].backends[0].id: must not be empty"}));
  EXPECT_EQ(Errors(kMinimal + "        id: [a]\n"),
            (Strings{"t.yaml:10:13: pools[0].backends[0].id: expected a string"}));
}

TEST(ConfigLoaderPoolTest, AllPoolErrorsAreReportedInFileOrder) {
  EXPECT_EQ(Errors(PoolWith("    balance: sticky\n"
                            "    sticky: {key: nope, load_factor: x}\n"
                            "    health_check: {interval: 1s, timeout: 1s, type: udp}\n"
                            "    outlier: {ejection_time: 0}\n"
                            "    rebalance: {enabled: 1, tolerance: 0.5, rate: 0/s}\n"
                            "    close_on_unhealthy: maybe\n")),
            (Strings{
                // NOLINTNEXTLINE(bugprone-suspicious-missing-comma): one message, two lines
                "t.yaml:4:19: pools[0].sticky.key: invalid sticky key \"nope\" (expected "
                "cookie:NAME, header:NAME, query:NAME, client_ip or path)",
                "t.yaml:4:38: pools[0].sticky.load_factor: expected a number",
                "t.yaml:5:43: pools[0].health_check.timeout: timeout (1s) must be less than "
                "interval (1s)",
                "t.yaml:5:53: pools[0].health_check.type: unknown health check type \"udp\" "
                "(expected tcp, http or websocket)",
                "t.yaml:6:30: pools[0].outlier.ejection_time: must be greater than 0",
                "t.yaml:7:26: pools[0].rebalance.enabled: expected true or false",
                "t.yaml:7:40: pools[0].rebalance.tolerance: value 0.5 out of range (expected > 1 "
                "and <= 10)",
                "t.yaml:7:51: pools[0].rebalance.rate: rate 0/s out of range (expected 1..100000 "
                "per second)",
                "t.yaml:8:25: pools[0].close_on_unhealthy: expected true or false",
            }));
}

TEST(ConfigLoaderRobustnessTest, RandomMutationsOfPoolSettings) {
  const std::string base =
      "listeners: [{name: public, address: 127.0.0.1:8080}]\n"
      "routes: [{pool: chat}]\n"
      "pools:\n"
      "  - name: chat\n"
      "    balance: sticky\n"
      "    sticky: {key: 'cookie:sid', fallback: reject, load_factor: 1.25, insert_cookie: b}\n"
      "    health_check: {interval: 2s, timeout: 1s, type: websocket, path: /h}\n"
      "    outlier: {consecutive_failures: 5, ejection_time: 30s}\n"
      "    rebalance: {enabled: true, tolerance: 1.2, rate: 50/s}\n"
      "    close_on_unhealthy: false\n"
      "    backends:\n"
      "      - {address: 127.0.0.1:9001, weight: 2, id: chat-1}\n"
      "      - {address: '[::1]:9002', id: chat-2}\n";
  ASSERT_TRUE(LoadConfigString(base, "t.yaml").ok());
  static constexpr char kInteresting[] = ":-[]{}&*!|>'\"#%@`?,~ \n\t0123456789aZ.e+/\\\x00\xff";
  std::mt19937 rng(20240602);
  for (int round = 0; round < 2000; ++round) {
    std::string text = base;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int i = 0; i < edits && !text.empty(); ++i) {
      const size_t pos = rng() % text.size();
      switch (rng() % 3) {
        case 0:
          text[pos] = kInteresting[rng() % (sizeof(kInteresting) - 1)];
          break;
        case 1:
          text.insert(pos, 1, kInteresting[rng() % (sizeof(kInteresting) - 1)]);
          break;
        default:
          text.erase(pos, 1 + rng() % 6);
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

TEST(ConfigLoaderLogMetricsTest, ValuesAndErrors) {
  const ProxyConfig defaults = Load(kMinimal);
  EXPECT_TRUE(defaults.metrics.enabled);
  EXPECT_EQ(defaults.log.access, "stderr");
  EXPECT_EQ(defaults.log.format, LogConfig::Format::kText);
  const ProxyConfig cfg = Load(
      "metrics:\n  enabled: false\nlog:\n  format: json\n  access: /tmp/a.log\n"
      "  flush_interval: 30s\n" +
      kMinimal);
  EXPECT_FALSE(cfg.metrics.enabled);
  EXPECT_EQ(cfg.log.format, LogConfig::Format::kJson);
  EXPECT_EQ(cfg.log.access, "/tmp/a.log");
  EXPECT_EQ(cfg.log.flush_interval, milliseconds(30000));
  EXPECT_EQ(Errors("metrics:\n  enabled: maybe\nlog:\n  format: xml\n  access: ''\n" + kMinimal),
            Strings({"t.yaml:2:12: metrics.enabled: expected true or false",
                     "t.yaml:4:11: log.format: unknown log format \"xml\" (expected text or json)",
                     "t.yaml:5:11: log.access: must not be empty (use off to disable the access "
                     "log)"}));
}

}  // namespace
}  // namespace wsgate::config

namespace wsgate::config {
namespace {

TEST(ConfigLoaderRateTest, MessageRateAndAction) {
  const ProxyConfig defaults = Load(kMinimal);
  EXPECT_EQ(defaults.limits.max_messages_per_second, 0u);
  EXPECT_EQ(defaults.limits.rate_action, LimitsConfig::RateAction::kClose);
  const ProxyConfig cfg =
      Load("limits:\n  max_messages_per_second: 50\n  rate_action: throttle\n" + kMinimal);
  EXPECT_EQ(cfg.limits.max_messages_per_second, 50u);
  EXPECT_EQ(cfg.limits.rate_action, LimitsConfig::RateAction::kThrottle);
  EXPECT_EQ(defaults.limits.max_connections_per_ip, 0u);
  EXPECT_EQ(defaults.limits.handshake_rate_per_ip, 0u);
  EXPECT_EQ(defaults.limits.max_pending_handshakes, 10000u);
  const ProxyConfig per_ip = Load(
      "limits:\n  max_connections_per_ip: 20\n  handshake_rate_per_ip: 5\n"
      "  max_pending_handshakes: 300\n" +
      kMinimal);
  EXPECT_EQ(per_ip.limits.max_connections_per_ip, 20u);
  EXPECT_EQ(per_ip.limits.handshake_rate_per_ip, 5u);
  EXPECT_EQ(per_ip.limits.max_pending_handshakes, 300u);
  EXPECT_EQ(Errors("limits:\n  max_pending_handshakes: 0\n" + kMinimal).size(), 1u);
  EXPECT_EQ(Errors("limits:\n  handshake_rate_per_ip: -1\n" + kMinimal).size(), 1u);
  EXPECT_EQ(Errors("limits:\n  rate_action: drop\n" + kMinimal),
            Strings({"t.yaml:2:16: limits.rate_action: unknown rate_action \"drop\" (expected "
                     "close or throttle)"}));
}

TEST(ConfigLoaderLimitsTest, Compression) {
  EXPECT_EQ(Load(kMinimal).limits.compression, LimitsConfig::Compression::kInspect);
  EXPECT_EQ(Load("limits:\n  compression: strip\n" + kMinimal).limits.compression,
            LimitsConfig::Compression::kStrip);
  EXPECT_EQ(Load("limits:\n  compression: passthrough\n" + kMinimal).limits.compression,
            LimitsConfig::Compression::kPassthrough);
  EXPECT_EQ(Errors("limits:\n  compression: gzip\n" + kMinimal),
            Strings({"t.yaml:2:16: limits.compression: unknown compression \"gzip\" (expected "
                     "inspect, strip or passthrough)"}));
}

}  // namespace
}  // namespace wsgate::config

namespace wsgate::config {
namespace {

TEST(ConfigLoaderPingTest, KeepaliveTimeouts) {
  const ProxyConfig defaults = Load(kMinimal);
  EXPECT_EQ(defaults.timeouts.ping_interval, milliseconds(0));
  EXPECT_EQ(defaults.timeouts.ping_timeout, milliseconds(10000));
  const ProxyConfig cfg = Load("timeouts:\n  ping_interval: 30s\n  ping_timeout: 5s\n" + kMinimal);
  EXPECT_EQ(cfg.timeouts.ping_interval, milliseconds(30000));
  EXPECT_EQ(cfg.timeouts.ping_timeout, milliseconds(5000));
  EXPECT_EQ(Errors("timeouts:\n  ping_timeout: 0s\n" + kMinimal),
            Strings({"t.yaml:2:17: timeouts.ping_timeout: must be greater than 0"}));
}

TEST(ConfigLoaderTest, ConnectionHooksAndPublicUrl) {
  const ProxyConfig cfg = Load(
      "admin:\n"
      "  public_url: https://gw-1.internal:9901/\n"
      "auth:\n"
      "  url: http://127.0.0.1:9000/check\n"
      "  forward_headers: [Cookie]\n"
      "  copy_headers: [X-User-Id, X-Tenant]\n"
      "  timeout: 750ms\n"
      "  cache_ttl: 30s\n"
      "  cache_size: 50\n"
      "on_disconnect:\n"
      "  url: http://127.0.0.1:9000/gone\n"
      "  retries: 5\n"
      "  queue_size: 100\n"
      "  timeout: 1s\n" +
      kListeners + "routes:\n  - pool: chat\n    auth: false\n  - pool: chat\n" + kPools);
  EXPECT_EQ(cfg.admin.public_url, "https://gw-1.internal:9901");
  EXPECT_TRUE(cfg.auth.enabled);
  EXPECT_EQ(cfg.auth.url, "http://127.0.0.1:9000/check");
  EXPECT_EQ(cfg.auth.forward_headers, (Strings{"Cookie"}));
  EXPECT_EQ(cfg.auth.copy_headers, (Strings{"X-User-Id", "X-Tenant"}));
  EXPECT_EQ(cfg.auth.timeout, milliseconds(750));
  EXPECT_EQ(cfg.auth.cache_ttl, milliseconds(30000));
  EXPECT_EQ(cfg.auth.cache_size, 50u);
  EXPECT_TRUE(cfg.on_disconnect.enabled);
  EXPECT_EQ(cfg.on_disconnect.retries, 5u);
  EXPECT_EQ(cfg.on_disconnect.queue_size, 100u);
  EXPECT_EQ(cfg.on_disconnect.timeout, milliseconds(1000));
  ASSERT_EQ(cfg.routes.size(), 2u);
  EXPECT_FALSE(cfg.routes[0].auth);
  EXPECT_TRUE(cfg.routes[1].auth);
}

TEST(ConfigLoaderTest, ConnectionHookDefaults) {
  const ProxyConfig cfg = Load(kMinimal);
  EXPECT_FALSE(cfg.auth.enabled);
  EXPECT_FALSE(cfg.on_disconnect.enabled);
  EXPECT_EQ(cfg.admin.public_url, "");
  EXPECT_EQ(cfg.auth.forward_headers, (Strings{"Cookie", "Authorization", "Origin"}));
  EXPECT_EQ(cfg.on_disconnect.retries, 3u);
  EXPECT_EQ(cfg.on_disconnect.queue_size, 10000u);
}

TEST(ConfigLoaderTest, TrustedProxies) {
  ProxyConfig empty = Load(kMinimal);
  EXPECT_TRUE(empty.trusted_proxies.empty());  // default: trust no one
  ProxyConfig cfg = Load("trusted_proxies: [\"10.0.0.0/8\", 127.0.0.1, \"::1/128\"]\n" + kMinimal);
  ASSERT_EQ(cfg.trusted_proxies.size(), 3u);
  EXPECT_EQ(cfg.trusted_proxies[0].prefix_length, 8);
  EXPECT_EQ(cfg.trusted_proxies[1].prefix_length, 32);
  EXPECT_TRUE(cfg.trusted_proxies[2].ipv6);
  EXPECT_EQ(cfg.trusted_proxies[2].text, "::1/128");
}

TEST(ConfigLoaderTest, TrustedProxiesErrors) {
  const std::string kExpected =
      " (expected e.g. 10.0.0.0/8, 2001:db8::/32 or one address; no bits set past the prefix)";
  EXPECT_EQ(Errors("trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n" + kMinimal),
            (Strings{"t.yaml:1:31: trusted_proxies[1]: not a CIDR \"10.0.0.0/33\"" + kExpected}));
  EXPECT_EQ(Errors("trusted_proxies:\n  - 10.1.0.0/8\n  - example.com\n" + kMinimal),
            (Strings{"t.yaml:2:5: trusted_proxies[0]: not a CIDR \"10.1.0.0/8\"" + kExpected,
                     "t.yaml:3:5: trusted_proxies[1]: not a CIDR \"example.com\"" + kExpected}));
  EXPECT_EQ(Errors("trusted_proxies: 10.0.0.0/8\n" + kMinimal),
            (Strings{"t.yaml:1:18: trusted_proxies: expected a sequence"}));
}

TEST(ConfigLoaderTest, ConnectionHookErrors) {
  EXPECT_EQ(Errors("admin:\n  public_url: ftp://x\n" + kMinimal),
            (Strings{"t.yaml:2:15: admin.public_url: expected an http:// or https:// URL without "
                     "spaces or fragment"}));
  EXPECT_EQ(Errors("admin:\n  public_url: http://x/?a=1\n" + kMinimal),
            (Strings{"t.yaml:2:15: admin.public_url: must not have a query"}));
  EXPECT_EQ(Errors("auth:\n  url: https://x/check\n" + kMinimal),
            (Strings{"t.yaml:2:8: auth.url: expected an http:// URL without spaces or fragment"}));
  EXPECT_EQ(Errors("auth:\n  timeout: 1s\n" + kMinimal),
            (Strings{"t.yaml:2:3: auth.url: missing required key"}));
  EXPECT_EQ(Errors("auth:\n  url: http://x\n  copy_headers: [\"X Bad\"]\n" + kMinimal),
            (Strings{"t.yaml:3:18: auth.copy_headers[0]: invalid header name \"X Bad\""}));
  EXPECT_EQ(
      Errors("on_disconnect:\n  url: http://x\n  queue_size: 0\n" + kMinimal),
      (Strings{
          "t.yaml:3:15: on_disconnect.queue_size: value 0 out of range (expected 1..10000000)"}));
  EXPECT_EQ(Errors("on_disconnect:\n  url: http://x\n  bogus: 1\n" + kMinimal),
            (Strings{"t.yaml:3:3: on_disconnect.bogus: unknown key"}));
}

// --- TLS -----------------------------------------------------------------------------------------

// A listener with a tls section whose body starts on line 5 (indented for the tls mapping).
std::string TlsListener(const std::string& body) {
  return "listeners:\n"
         "  - name: public\n"
         "    address: 0.0.0.0:8443\n"
         "    tls:\n" +
         body + kRoutes + kPools;
}

// kMinimal with a tls section for the pool; the section's body starts on line 9.
std::string PoolTls(const std::string& body) {
  return kListeners + kRoutes +
         "pools:\n"
         "  - name: chat\n"
         "    tls:\n" +
         body +
         "    backends:\n"
         "      - address: 127.0.0.1:9001\n";
}

TEST(ConfigLoaderTest, ListenerTlsEveryKey) {
  const LoadResult result = LoadConfigString(TlsListener("      certificates:\n"
                                                         "        - cert: certs/chat.crt\n"
                                                         "          key: /abs/chat.key\n"
                                                         "        - {cert: api.crt, key: api.key}\n"
                                                         "      min_version: TLSv1.3\n"
                                                         "      ciphers: ECDHE+AESGCM\n"
                                                         "      alpn: [http/1.1, x-custom]\n"
                                                         "      client_ca: ca.pem\n"),
                                             "/etc/wsgate/wsgate.yaml");
  ASSERT_TRUE(result.ok());
  const ListenerTlsConfig& tls = result.value().listeners[0].tls;
  EXPECT_TRUE(tls.enabled);
  ASSERT_EQ(tls.certificates.size(), 2u);
  // Relative paths resolve against the configuration file's directory.
  EXPECT_EQ(tls.certificates[0].cert.path, "/etc/wsgate/certs/chat.crt");
  EXPECT_EQ(tls.certificates[0].key.path, "/abs/chat.key");
  EXPECT_EQ(tls.certificates[1].cert.path, "/etc/wsgate/api.crt");
  EXPECT_EQ(tls.certificates[1].key.path, "/etc/wsgate/api.key");
  // Where each file was named, for errors found when it is loaded.
  ConfigError origin = tls.certificates[0].cert.origin;
  origin.message = "x";
  EXPECT_EQ(origin.Format(),
            "/etc/wsgate/wsgate.yaml:6:17: listeners[0].tls.certificates[0].cert: x");
  EXPECT_EQ(tls.min_version, ListenerTlsConfig::Version::kTls13);
  EXPECT_EQ(tls.ciphers, "ECDHE+AESGCM");
  EXPECT_EQ(tls.ciphers_origin.key_path, "listeners[0].tls.ciphers");
  EXPECT_EQ(tls.alpn, (Strings{"http/1.1", "x-custom"}));
  EXPECT_EQ(tls.client_ca.path, "/etc/wsgate/ca.pem");
  EXPECT_EQ(tls.client_ca.origin.line, 12);
}

TEST(ConfigLoaderTest, ListenerTlsDefaults) {
  const ProxyConfig cfg = Load(TlsListener("      certificates: [{cert: a.crt, key: a.key}]\n"));
  const ListenerTlsConfig& tls = cfg.listeners[0].tls;
  EXPECT_TRUE(tls.enabled);
  EXPECT_EQ(tls.certificates[0].cert.path, "a.crt");  // "t.yaml" has no directory
  EXPECT_EQ(tls.min_version, ListenerTlsConfig::Version::kTls12);
  EXPECT_EQ(tls.ciphers, "");
  EXPECT_EQ(tls.alpn, (Strings{"http/1.1"}));
  EXPECT_TRUE(tls.client_ca.empty());
  EXPECT_FALSE(Load(kMinimal).listeners[0].tls.enabled);
  // An empty ALPN list turns ALPN off.
  EXPECT_TRUE(Load(TlsListener("      certificates: [{cert: a.crt, key: a.key}]\n"
                               "      alpn: []\n"))
                  .listeners[0]
                  .tls.alpn.empty());
}

TEST(ConfigLoaderTest, ListenerTlsErrors) {
  EXPECT_EQ(Errors(TlsListener("      min_version: TLSv1.2\n")),
            (Strings{"t.yaml:5:7: listeners[0].tls.certificates: missing required key"}));
  EXPECT_EQ(Errors(TlsListener("      certificates: []\n")),
            (Strings{"t.yaml:5:21: listeners[0].tls.certificates: at least one certificate is "
                     "required"}));
  EXPECT_EQ(Errors(TlsListener("      certificates: [{cert: a.crt}]\n")),
            (Strings{"t.yaml:5:22: listeners[0].tls.certificates[0].key: missing required key"}));
  EXPECT_EQ(Errors(TlsListener("      certificates: [{cert: \"\", key: a.key}]\n")),
            (Strings{"t.yaml:5:29: listeners[0].tls.certificates[0].cert: must not be empty"}));
  EXPECT_EQ(Errors(TlsListener("      certificates: [{cert: a.crt, key: a.key, chain: c}]\n")),
            (Strings{"t.yaml:5:48: listeners[0].tls.certificates[0].chain: unknown key"}));
  EXPECT_EQ(Errors(TlsListener("      certificates: [{cert: a.crt, key: a.key}]\n"
                               "      min_version: TLSv1.1\n")),
            (Strings{"t.yaml:6:20: listeners[0].tls.min_version: unknown min_version "
                     "\"TLSv1.1\" (expected TLSv1.2 or TLSv1.3)"}));
  EXPECT_EQ(Errors(TlsListener("      certificates: [{cert: a.crt, key: a.key}]\n"
                               "      alpn: [\"\", \"has space\"]\n")),
            (Strings{"t.yaml:6:14: listeners[0].tls.alpn[0]: must not be empty",
                     "t.yaml:6:18: listeners[0].tls.alpn[1]: invalid ALPN protocol \"has space\" "
                     "(expected 1..255 printable ASCII characters)"}));
  EXPECT_EQ(Errors(TlsListener("      certificates: [{cert: a.crt, key: a.key}]\n"
                               "      ciphers: [a]\n"
                               "      client_ca: {}\n"
                               "      sni: true\n")),
            (Strings{"t.yaml:6:16: listeners[0].tls.ciphers: expected a string",
                     "t.yaml:7:18: listeners[0].tls.client_ca: expected a string",
                     "t.yaml:8:7: listeners[0].tls.sni: unknown key"}));
  EXPECT_EQ(Errors(TlsListener("      on\n")),
            (Strings{"t.yaml:5:7: listeners[0].tls: expected a mapping"}));
}

TEST(ConfigLoaderTest, PoolTlsEveryKeyAndDefaults) {
  const LoadResult result = LoadConfigString(PoolTls("      enabled: true\n"
                                                     "      ca: ca.pem\n"
                                                     "      server_name: backend.internal\n"
                                                     "      cert: client.crt\n"
                                                     "      key: client.key\n"),
                                             "conf/wsgate.yaml");
  ASSERT_TRUE(result.ok());
  const PoolTlsConfig& tls = result.value().pools[0].tls;
  EXPECT_TRUE(tls.enabled);
  EXPECT_TRUE(tls.verify);
  EXPECT_EQ(tls.ca.path, "conf/ca.pem");
  EXPECT_EQ(tls.server_name, "backend.internal");
  EXPECT_EQ(tls.cert.path, "conf/client.crt");
  EXPECT_EQ(tls.key.path, "conf/client.key");
  EXPECT_EQ(tls.key.origin.key_path, "pools[0].tls.key");

  // Present section = enabled, verifying against the system store.
  const PoolTlsConfig bare = Load(PoolTls("      {}\n")).pools[0].tls;
  EXPECT_TRUE(bare.enabled);
  EXPECT_TRUE(bare.verify);
  EXPECT_TRUE(bare.ca.empty());
  EXPECT_EQ(bare.server_name, "");
  EXPECT_FALSE(Load(PoolTls("      enabled: false\n")).pools[0].tls.enabled);
  EXPECT_FALSE(Load(PoolTls("      verify: false\n")).pools[0].tls.verify);
  EXPECT_EQ(Load(PoolTls("      server_name: 10.0.0.7\n")).pools[0].tls.server_name, "10.0.0.7");
  EXPECT_FALSE(Load(kMinimal).pools[0].tls.enabled);
}

TEST(ConfigLoaderTest, PoolTlsErrors) {
  EXPECT_EQ(Errors(PoolTls("      verify: no\n")),
            (Strings{"t.yaml:9:15: pools[0].tls.verify: expected true or false"}));
  EXPECT_EQ(Errors(PoolTls("      verify: false\n      ca: ca.pem\n")),
            (Strings{"t.yaml:10:11: pools[0].tls.ca: ca needs verify: true"}));
  EXPECT_EQ(Errors(PoolTls("      cert: c.crt\n")),
            (Strings{"t.yaml:9:13: pools[0].tls.cert: cert and key must be set together"}));
  EXPECT_EQ(Errors(PoolTls("      key: c.key\n")),
            (Strings{"t.yaml:9:12: pools[0].tls.key: cert and key must be set together"}));
  EXPECT_EQ(Errors(PoolTls("      server_name: \"bad name\"\n")),
            (Strings{"t.yaml:9:20: pools[0].tls.server_name: invalid server name \"bad name\" "
                     "(expected a host name or an IP address)"}));
  EXPECT_EQ(Errors(PoolTls("      server_name: a..b\n")),
            (Strings{"t.yaml:9:20: pools[0].tls.server_name: invalid server name \"a..b\" "
                     "(expected a host name or an IP address)"}));
  EXPECT_EQ(Errors(PoolTls("      sni: x\n")),
            (Strings{"t.yaml:9:7: pools[0].tls.sni: unknown key"}));
  EXPECT_EQ(Errors(PoolTls("      [a]\n")),
            (Strings{"t.yaml:9:7: pools[0].tls: expected a mapping"}));
}

}  // namespace
}  // namespace wsgate::config

namespace wsgate::config {
namespace {

TEST(ConfigLoaderHttpTest, PlainHttpLimitsAndTimeouts) {
  const ProxyConfig defaults = Load(kMinimal);
  EXPECT_EQ(defaults.limits.max_body_bytes, 16u * 1024 * 1024);
  EXPECT_EQ(defaults.timeouts.request, milliseconds(60000));
  EXPECT_EQ(defaults.timeouts.backend_response, milliseconds(60000));
  EXPECT_EQ(defaults.timeouts.backend_idle, milliseconds(60000));
  EXPECT_EQ(defaults.pools[0].http.max_idle_connections, 32u);
  const ProxyConfig cfg = Load(
      "limits:\n  max_body_bytes: 1MiB\ntimeouts:\n  request: 5s\n  backend_response: 2s\n"
      "  backend_idle: 30s\n" +
      kListeners + kRoutes +
      "pools:\n  - name: chat\n    http:\n      max_idle_connections: 4\n"
      "    backends:\n      - address: 127.0.0.1:9000\n");
  EXPECT_EQ(cfg.limits.max_body_bytes, 1024u * 1024);
  EXPECT_EQ(cfg.timeouts.request, milliseconds(5000));
  EXPECT_EQ(cfg.timeouts.backend_response, milliseconds(2000));
  EXPECT_EQ(cfg.timeouts.backend_idle, milliseconds(30000));
  EXPECT_EQ(cfg.pools[0].http.max_idle_connections, 4u);
  EXPECT_EQ(Load("limits:\n  max_body_bytes: 0\n" + kMinimal).limits.max_body_bytes, 0u);
  EXPECT_EQ(Errors("timeouts:\n  backend_response: 0s\n" + kMinimal),
            Strings({"t.yaml:2:21: timeouts.backend_response: must be greater than 0"}));
  EXPECT_EQ(Errors(kListeners + kRoutes +
                   "pools:\n  - name: chat\n    http:\n      max_idle: 4\n"
                   "    backends:\n      - address: 127.0.0.1:9000\n"),
            Strings({"t.yaml:9:7: pools[0].http.max_idle: unknown key"}));
}

}  // namespace
}  // namespace wsgate::config

namespace wsgate::config {
namespace {

TEST(ConfigLoaderPathsTest, DefaultsValuesAndErrors) {
  const ProxyConfig defaults = Load(kMinimal);
  EXPECT_TRUE(defaults.paths.normalize);
  EXPECT_FALSE(defaults.paths.merge_slashes);
  EXPECT_EQ(defaults.paths.escaped_slashes, PathsConfig::EscapedSlashes::kReject);
  const ProxyConfig cfg = Load(
      "paths:\n  normalize: false\n  merge_slashes: true\n  escaped_slashes: keep\n" + kMinimal);
  EXPECT_FALSE(cfg.paths.normalize);
  EXPECT_TRUE(cfg.paths.merge_slashes);
  EXPECT_EQ(cfg.paths.escaped_slashes, PathsConfig::EscapedSlashes::kKeep);
  EXPECT_EQ(Load("paths:\n  escaped_slashes: reject\n" + kMinimal).paths, defaults.paths);
  EXPECT_EQ(Load("paths:\n" + kMinimal).paths, defaults.paths);  // empty section: defaults
  EXPECT_EQ(Errors("paths:\n  escaped_slashes: decode\n" + kMinimal),
            Strings({"t.yaml:2:20: paths.escaped_slashes: unknown escaped_slashes \"decode\" "
                     "(expected reject or keep)"}));
  EXPECT_EQ(Errors("paths:\n  normalize: yes\n  merge: true\n" + kMinimal),
            Strings({"t.yaml:2:14: paths.normalize: expected true or false",
                     "t.yaml:3:3: paths.merge: unknown key"}));
  EXPECT_EQ(Errors("paths: [normalize]\n" + kMinimal),
            Strings({"t.yaml:1:8: paths: expected a mapping"}));
}

TEST(ConfigLoaderDiscoveryTest, DefaultsAndSettings) {
  const ProxyConfig plain = Load(kMinimal);
  EXPECT_FALSE(plain.pools[0].discovery.enabled);
  EXPECT_TRUE(plain.resolver.nameservers.empty());

  const ProxyConfig defaults = Load(PoolWith("    discovery: {}\n"));
  EXPECT_TRUE(defaults.pools[0].discovery.enabled);
  EXPECT_EQ(defaults.pools[0].discovery.interval, std::chrono::seconds(5));
  EXPECT_TRUE(defaults.pools[0].discovery.require_at_start);

  const ProxyConfig set =
      Load(PoolWith("    discovery: {interval: 1s, require_at_start: false}\n") +
           "resolver: {nameservers: [\"127.0.0.1:5353\", \"[::1]:53\"]}\n");
  EXPECT_EQ(set.pools[0].discovery.interval, std::chrono::seconds(1));
  EXPECT_FALSE(set.pools[0].discovery.require_at_start);
  ASSERT_EQ(set.resolver.nameservers.size(), 2u);
  EXPECT_EQ(set.resolver.nameservers[0].host, "127.0.0.1");
  EXPECT_EQ(set.resolver.nameservers[0].port, 5353);
  EXPECT_EQ(set.resolver.nameservers[1].host, "::1");
}

TEST(ConfigLoaderDiscoveryTest, IntervalBelowOneSecond) {
  EXPECT_EQ(Errors(PoolWith("    discovery: {interval: 500ms}\n")),
            (Strings{"t.yaml:3:27: pools[0].discovery.interval: interval 500ms is below the "
                     "minimum of 1s"}));
  EXPECT_EQ(Errors(PoolWith("    discovery: {interval: 0s}\n")),
            (Strings{"t.yaml:3:27: pools[0].discovery.interval: must be greater than 0"}));
}

TEST(ConfigLoaderDiscoveryTest, UnknownKeyAndBadBool) {
  EXPECT_EQ(Errors(PoolWith("    discovery: {intervall: 2s}\n")),
            (Strings{"t.yaml:3:17: pools[0].discovery.intervall: unknown key "
                     "(did you mean \"interval\"?)"}));
  EXPECT_EQ(Errors(PoolWith("    discovery: {require_at_start: maybe}\n")),
            (Strings{"t.yaml:3:35: pools[0].discovery.require_at_start: expected true or false"}));
}

TEST(ConfigLoaderDiscoveryTest, NameserverMustBeAnAddressWithPort) {
  EXPECT_EQ(Errors(kMinimal + "resolver:\n  nameservers: [dns.example:53, \"127.0.0.1\"]\n"),
            (Strings{"t.yaml:11:17: resolver.nameservers[0]: nameserver \"dns.example:53\" must "
                     "be an IP address with a port (e.g. 127.0.0.1:53)",
                     "t.yaml:11:33: resolver.nameservers[1]: invalid address \"127.0.0.1\" "
                     "(expected host:port or [v6]:port)"}));
  EXPECT_EQ(Errors(kMinimal + "resolver: {servers: []}\n"),
            (Strings{"t.yaml:10:12: resolver.servers: unknown key"}));
}

TEST(ConfigLoaderPoolTest, OptionalPool) {
  const std::string pools =
      "pools:\n"
      "  - name: chat\n"
      "    optional: true\n"
      "    backends: [{address: 127.0.0.1:9001}]\n";
  LoadResult loaded = LoadConfigString(kListeners + kRoutes + pools, "t.yaml");
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(loaded.value().pools[0].optional);
  EXPECT_FALSE(LoadConfigString(kMinimal, "t.yaml").value().pools[0].optional);
  EXPECT_EQ(Errors(kListeners + kRoutes +
                   "pools:\n  - name: chat\n    optional: maybe\n"
                   "    backends: [{address: 127.0.0.1:9001}]\n"),
            (Strings{"t.yaml:8:15: pools[0].optional: expected true or false"}));
}

TEST(ConfigLoaderPoolTest, MigratePool) {
  const std::string pools =
      "pools:\n"
      "  - name: chat\n"
      "    migrate: true\n"
      "    backends: [{address: 127.0.0.1:9001}]\n";
  LoadResult loaded = LoadConfigString(kListeners + kRoutes + pools, "t.yaml");
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(loaded.value().pools[0].migrate);
  EXPECT_FALSE(LoadConfigString(kMinimal, "t.yaml").value().pools[0].migrate);
  EXPECT_EQ(Errors(kListeners + kRoutes +
                   "pools:\n  - name: chat\n    migrate: yes please\n"
                   "    backends: [{address: 127.0.0.1:9001}]\n"),
            (Strings{"t.yaml:8:14: pools[0].migrate: expected true or false"}));
}

}  // namespace
}  // namespace wsgate::config
