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
  for (const char* text :
       {"",    " ",  "s",    "ms",   "5",   "10",  "00", "-5s", "+5s",   " 5s", "5s ",
        "5 s", "5S", "5sec", "1.5s", "5us", "5ns", "1w", "5ss", "0x10s", "5s5", "\xef\xbc\x95s"}) {
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
  for (const char* text : {"",
                           ":",
                           "nope",
                           "host",
                           "host:",
                           ":80",
                           "host:65536",
                           "host:99999999999999999999",
                           "host:-1",
                           "host:+80",
                           "host:8o",
                           "host: 80",
                           "host:80 ",
                           " host:80",
                           "ho st:80",
                           "host\t:80",
                           "::1:80",
                           "::1",
                           "[::1]",
                           "[::1]80",
                           "[::1]:",
                           "[]:80",
                           "[::1:80",
                           "[host]:80",
                           "[1.2.3.4]:80",
                           "[::1]:80x",
                           "[::g]:80",
                           "[fe80::1%]:80",
                           "[::1%a b]:80",
                           "host]:80",
                           "ho[st:80",
                           "a/b:80",
                           "host:0x50"}) {
    EXPECT_EQ(ParseHostPort(text, true), std::nullopt) << "\"" << text << "\"";
  }
}

TEST(ParseCidrTest, AcceptsNetworksAndBareAddresses) {
  std::optional<Cidr> v4 = ParseCidr("10.0.0.0/8");
  ASSERT_TRUE(v4);
  EXPECT_FALSE(v4->ipv6);
  EXPECT_EQ(v4->prefix_length, 8);
  EXPECT_EQ(v4->network[0], 10);
  EXPECT_EQ(v4->text, "10.0.0.0/8");
  std::optional<Cidr> host = ParseCidr("127.0.0.1");
  ASSERT_TRUE(host);
  EXPECT_EQ(host->prefix_length, 32);
  std::optional<Cidr> v6 = ParseCidr("2001:db8::/32");
  ASSERT_TRUE(v6);
  EXPECT_TRUE(v6->ipv6);
  EXPECT_EQ(v6->prefix_length, 32);
  std::optional<Cidr> loopback = ParseCidr("::1");
  ASSERT_TRUE(loopback);
  EXPECT_EQ(loopback->prefix_length, 128);
  for (const char* text : {"0.0.0.0/0", "::/0", "::1/128", "192.168.1.128/25", "10.1.2.3/32",
                           "::ffff:10.0.0.0/104", "fe80::/10"}) {
    EXPECT_TRUE(ParseCidr(text)) << text;
  }
}

TEST(ParseCidrTest, RejectsMalformedText) {
  for (const char* text : {"",
                           "/8",
                           "10.0.0.0/",
                           "10.0.0.0/33",
                           "::/129",
                           "10.0.0.0/08",
                           "10.0.0.0/-1",
                           "10.0.0.0/+8",
                           "10.0.0.0/8/8",
                           "10.0.0.0 /8",
                           " 10.0.0.0/8",
                           "10.0.0.0/8 ",
                           "10.0.0/8",
                           "10.0.0.256",
                           "010.0.0.1",
                           "10.1.0.0/8",
                           "2001:db8::1/32",
                           "fe80::1%eth0",
                           "[::1]",
                           "[::1]/128",
                           "example.com",
                           "10.0.0.0/4294967304",
                           "1.2.3.4:80",
                           "::1::2"}) {
    EXPECT_EQ(ParseCidr(text), std::nullopt) << "\"" << text << "\"";
  }
  EXPECT_EQ(ParseCidr(std::string_view("10.0.0.1\0/8", 11)), std::nullopt);
  EXPECT_EQ(ParseCidr(std::string_view("10.0.0.1\0x", 10)), std::nullopt);
}

TEST(ParseCidrTest, ContainsMatchesThePrefixOnly) {
  const uint8_t in[4] = {192, 168, 1, 200};
  const uint8_t out[4] = {192, 168, 1, 100};
  std::optional<Cidr> upper = ParseCidr("192.168.1.128/25");
  ASSERT_TRUE(upper);
  EXPECT_TRUE(CidrContains(*upper, false, in));
  EXPECT_FALSE(CidrContains(*upper, false, out));
  std::optional<Cidr> any = ParseCidr("0.0.0.0/0");
  ASSERT_TRUE(any);
  EXPECT_TRUE(CidrContains(*any, false, out));
  uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8};
  EXPECT_FALSE(CidrContains(*any, true, v6));  // families never mix
  std::optional<Cidr> doc = ParseCidr("2001:db8::/33");
  ASSERT_TRUE(doc);
  EXPECT_TRUE(CidrContains(*doc, true, v6));
  v6[4] = 0x80;
  EXPECT_FALSE(CidrContains(*doc, true, v6));
  EXPECT_FALSE(CidrContains(*doc, false, in));
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
