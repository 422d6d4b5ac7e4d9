#include "config/units.h"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>

namespace wsgate::config {
namespace {

using std::chrono::milliseconds;

TEST(ParseDurationTest, AcceptsEveryUnit) {
  EXPECT_EQ(ParseDuration("0"), milliseconds(0));
  EXPECT_EQ(ParseDuration("0s"), milliseconds(0));
  EXPECT_EQ(ParseDuration("250ms"), milliseconds(250));
  EXPECT_EQ(ParseDuration("5s"), milliseconds(5000));
  EXPECT_EQ(ParseDuration("2m"), milliseconds(120000));
  EXPECT_EQ(ParseDuration("1h"), milliseconds(3600000));
  EXPECT_EQ(ParseDuration("1d"), milliseconds(86400000));
  EXPECT_EQ(ParseDuration("007s"), milliseconds(7000));
}

TEST(ParseDurationTest, RejectsMalformedText) {
  for (const char* text : {"", " ", "s", "ms", "5", "10", "00", "-5s", "+5s", " 5s", "5s ", "5 s",
                           "5S", "5sec", "1.5s", "5us", "5ns", "1w", "5ss", "0x10s", "5s5",
                           "\xef\xbc\x95s"}) {
    EXPECT_EQ(ParseDuration(text), std::nullopt) << "\"" << text << "\"";
  }
  EXPECT_EQ(ParseDuration(std::string_view("5\0s", 3)), std::nullopt);
}

TEST(ParseDurationTest, RejectsOverflow) {
  // The limit is INT64_MAX milliseconds.
  EXPECT_EQ(ParseDuration("9223372036854775807ms"), milliseconds(INT64_MAX));
  EXPECT_EQ(ParseDuration("9223372036854775808ms"), std::nullopt);
  EXPECT_EQ(ParseDuration("9223372036854775s"), milliseconds(int64_t{9223372036854775} * 1000));
  EXPECT_EQ(ParseDuration("9223372036854776s"), std::nullopt);
  EXPECT_EQ(ParseDuration("106751991167d"), milliseconds(int64_t{106751991167} * 86400000));
  EXPECT_EQ(ParseDuration("106751991168d"), std::nullopt);
  EXPECT_EQ(ParseDuration("99999999999999999999999999s"), std::nullopt);
}

TEST(ParseSizeTest, AcceptsEveryUnit) {
  EXPECT_EQ(ParseSize("0"), 0u);
  EXPECT_EQ(ParseSize("512"), 512u);
  EXPECT_EQ(ParseSize("512B"), 512u);
  EXPECT_EQ(ParseSize("64KiB"), 64u * 1024);
  EXPECT_EQ(ParseSize("16MiB"), 16u * 1024 * 1024);
  EXPECT_EQ(ParseSize("1GiB"), 1024u * 1024 * 1024);
  EXPECT_EQ(ParseSize("10KB"), 10000u);
  EXPECT_EQ(ParseSize("3MB"), 3000000u);
  EXPECT_EQ(ParseSize("2GB"), 2000000000u);
}

TEST(ParseSizeTest, RejectsMalformedText) {
  for (const char* text : {"", "B", "KiB", "-1", "+1", " 1", "1 ", "1 KiB", "1kib", "1kb", "1K",
                           "1Ki", "1TiB", "1.5MiB", "0x10", "1e3", "1BB", "16KiBs"}) {
    EXPECT_EQ(ParseSize(text), std::nullopt) << "\"" << text << "\"";
  }
}

TEST(ParseSizeTest, RejectsOverflow) {
  EXPECT_EQ(ParseSize("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(ParseSize("18446744073709551616"), std::nullopt);
  EXPECT_EQ(ParseSize("17179869183GiB"), uint64_t{17179869183} << 30);
  EXPECT_EQ(ParseSize("17179869184GiB"), std::nullopt);
  EXPECT_EQ(ParseSize("18446744073709552KB"), std::nullopt);
  EXPECT_EQ(ParseSize("1000000000000000000000000000000"), std::nullopt);
}

TEST(ParseHostPortTest, AcceptsHostAndPort) {
  const std::optional<HostPort> hp = ParseHostPort("127.0.0.1:9001", false);
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "127.0.0.1");
  EXPECT_EQ(hp->port, 9001);
  EXPECT_EQ(hp->text, "127.0.0.1:9001");
  EXPECT_EQ(hp->ToString(), "127.0.0.1:9001");

  const std::optional<HostPort> name = ParseHostPort("backend-1.internal:65535", false);
  ASSERT_TRUE(name);
  EXPECT_EQ(name->host, "backend-1.internal");
  EXPECT_EQ(name->port, 65535);
}

TEST(ParseHostPortTest, AcceptsBracketedIpv6) {
  const std::optional<HostPort> hp = ParseHostPort("[::1]:8080", false);
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 8080);
  EXPECT_EQ(hp->text, "[::1]:8080");

  const std::optional<HostPort> full = ParseHostPort("[2001:db8::ff00:42:8329]:443", false);
  ASSERT_TRUE(full);
  EXPECT_EQ(full->host, "2001:db8::ff00:42:8329");

  const std::optional<HostPort> mapped = ParseHostPort("[::ffff:192.0.2.1]:1", false);
  ASSERT_TRUE(mapped);
  EXPECT_EQ(mapped->host, "::ffff:192.0.2.1");

  const std::optional<HostPort> zone = ParseHostPort("[fe80::1%eth0]:80", false);
  ASSERT_TRUE(zone);
  EXPECT_EQ(zone->host, "fe80::1%eth0");
}

TEST(ParseHostPortTest, PortZeroOnlyWhenAllowed) {
  EXPECT_EQ(ParseHostPort("0.0.0.0:0", false), std::nullopt);
  const std::optional<HostPort> hp = ParseHostPort("0.0.0.0:0", true);
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->port, 0);
  EXPECT_TRUE(ParseHostPort("[::]:0", true));
}

TEST(ParseHostPortTest, RejectsMalformedText) {
  for (const char* text :
       {"", ":", "nope", "host", "host:", ":80", "host:65536", "host:99999999999999999999",
        "host:-1", "host:+80", "host:8o", "host: 80", "host:80 ", " host:80", "ho st:80",
        "host\t:80", "::1:80", "::1", "[::1]", "[::1]80", "[::1]:", "[]:80", "[::1:80",
        "[host]:80", "[1.2.3.4]:80", "[::1]:80x", "[::g]:80", "[fe80::1%]:80", "[::1%a b]:80",
        "host]:80", "ho[st:80", "a/b:80", "host:0x50"}) {
    EXPECT_EQ(ParseHostPort(text, true), std::nullopt) << "\"" << text << "\"";
  }
}

TEST(FormatTest, DurationsAndSizesParseBackToTheirValue) {
  EXPECT_EQ(FormatDuration(Duration{0}), "0s");
  EXPECT_EQ(FormatDuration(Duration{1500}), "1500ms");
  EXPECT_EQ(FormatDuration(Duration{120000}), "2m");
  EXPECT_EQ(FormatDuration(Duration{86400000}), "1d");
  for (int64_t ms : {0L, 1L, 999L, 1000L, 61000L, 3600000L, 90000000L, 86400000L * 400}) {
    EXPECT_EQ(ParseDuration(FormatDuration(Duration{ms})), Duration{ms}) << ms;
  }
  EXPECT_EQ(FormatSize(0), "0");
  EXPECT_EQ(FormatSize(4000), "4000");
  EXPECT_EQ(FormatSize(64 * 1024), "64KiB");
  EXPECT_EQ(FormatSize(uint64_t{3} << 30), "3GiB");
  for (uint64_t bytes : {uint64_t{0}, uint64_t{1}, uint64_t{1000000}, uint64_t{1} << 20,
                         (uint64_t{1} << 40) + 1024, ~uint64_t{0}}) {
    EXPECT_EQ(ParseSize(FormatSize(bytes)), bytes) << bytes;
  }
}

}  // namespace
}  // namespace wsgate::config
