// config/validate.h: the validation stage after loading (backend names, the TLS file hook).
#include "config/validate.h"

#include <gtest/gtest.h>

#include <netinet/in.h>

#include <string>
#include <vector>

#include "config/flags_config.h"
#include "config/loader.h"
#include "tests/unit/config_load_util.h"

namespace wsgate::config {
namespace {

std::vector<std::string> Formatted(const ConfigErrors& errors) {
  std::vector<std::string> out;
  for (const ConfigError& e : errors) out.push_back(e.Format());
  return out;
}

// Two pools; the second backend of "b" (line 13, column 18) has a name no resolver knows (.invalid
// is reserved, RFC 6761).
const std::string kTwoPools =
    "listeners:\n"
    "  - name: public\n"
    "    address: 127.0.0.1:8080\n"
    "routes:\n"
    "  - pool: a\n"
    "pools:\n"
    "  - name: a\n"
    "    backends:\n"
    "      - address: 127.0.0.1:9001\n"
    "  - name: b\n"
    "    backends:\n"
    "      - address: localhost:9002\n"
    "      - address: no-such-backend.invalid:9003\n";

TEST(ResolveHostPort, NumericAndName) {
  Result<ResolvedAddress> numeric = ResolveHostPort({"127.0.0.1", 9001, "127.0.0.1:9001"});
  ASSERT_TRUE(numeric.ok());
  ASSERT_EQ(numeric->addr.ss_family, AF_INET);
  EXPECT_EQ(ntohs(reinterpret_cast<const sockaddr_in*>(&numeric->addr)->sin_port), 9001);
  EXPECT_EQ(numeric->len, sizeof(sockaddr_in));

  Result<ResolvedAddress> v6 = ResolveHostPort({"::1", 9002, "[::1]:9002"});
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->addr.ss_family, AF_INET6);

  Result<ResolvedAddress> unknown =
      ResolveHostPort({"no-such-backend.invalid", 9003, "no-such-backend.invalid:9003"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().rfind("cannot resolve no-such-backend.invalid:9003: ", 0), 0u)
      << unknown.error();
}

TEST(Validate, ValidConfigHasNoErrors) {
  EXPECT_TRUE(
      Validate(Load(kTwoPools.substr(0, kTwoPools.rfind("      - address: no-such"))), {}).empty());
}

TEST(Validate, UnresolvableBackendNamesTheAddressKey) {
  const std::vector<std::string> errors = Formatted(Validate(Load(kTwoPools), {}));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind("t.yaml:13:18: pools[1].backends[1].address: cannot resolve "
                            "no-such-backend.invalid:9003: ",
                            0),
            0u)
      << errors[0];
}

TEST(Validate, AnAddressNamedTwiceIsResolvedOnceAndReportedAtEachBackend) {
  const std::string yaml =
      kTwoPools + "  - name: c\n    backends:\n      - address: no-such-backend.invalid:9003\n";
  ResolvedBackends resolved;
  const std::vector<std::string> errors = Formatted(Validate(Load(yaml), {}, &resolved));
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_EQ(errors[0].rfind("t.yaml:13:18: pools[1].backends[1].address: cannot resolve "
                            "no-such-backend.invalid:9003: ",
                            0),
            0u)
      << errors[0];
  EXPECT_EQ(errors[1].rfind("t.yaml:16:18: pools[2].backends[0].address: cannot resolve "
                            "no-such-backend.invalid:9003: ",
                            0),
            0u)
      << errors[1];
  // What did resolve is handed on, for the proxy to build its pools from.
  ASSERT_EQ(resolved.size(), 2u);
  EXPECT_EQ(resolved.count("127.0.0.1:9001"), 1u);
  EXPECT_EQ(resolved.count("localhost:9002"), 1u);
}

TEST(Validate, BackendsTheRunningGenerationResolvedAreNotResolvedAgain) {
  ValidateChecks checks;
  std::vector<std::string> asked;
  checks.already_resolved = [&asked](const std::string& pool, const HostPort& address) {
    asked.push_back(pool + "/" + address.text);
    return address.host == "no-such-backend.invalid";
  };
  EXPECT_TRUE(Validate(Load(kTwoPools), checks).empty());
  EXPECT_EQ(asked, (std::vector<std::string>{"a/127.0.0.1:9001", "b/localhost:9002",
                                             "b/no-such-backend.invalid:9003"}));
}

TEST(Validate, TlsFileErrorsFollowBackendErrors) {
  ValidateChecks checks;
  int calls = 0;
  checks.tls_files = [&calls](const ProxyConfig& config) {
    ++calls;
    ConfigError error{"t.yaml", 3, 14, "listeners[0].tls.certificates[0].cert", "no such file"};
    EXPECT_EQ(config.pools.size(), 2u);
    return ConfigErrors{error};
  };
  const std::vector<std::string> errors = Formatted(Validate(Load(kTwoPools), checks));
  EXPECT_EQ(calls, 1);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_NE(errors[0].find("pools[1].backends[1].address: cannot resolve"), std::string::npos);
  EXPECT_EQ(errors[1], "t.yaml:3:14: listeners[0].tls.certificates[0].cert: no such file");
}

TEST(Validate, FlagsBackendErrorsNameTheFlag) {
  LoadResult loaded =
      LoadFlagsConfig("127.0.0.1:8080", {"127.0.0.1:9001", "no-such-backend.invalid:9003"});
  ASSERT_TRUE(loaded.ok());
  const std::vector<std::string> errors = Formatted(Validate(loaded.value(), {}));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].rfind("--backend: cannot resolve no-such-backend.invalid:9003: ", 0), 0u)
      << errors[0];
}

}  // namespace
}  // namespace wsgate::config
