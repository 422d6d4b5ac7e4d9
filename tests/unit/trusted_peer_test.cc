#include "proxy/trusted_peer.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <string>
#include <vector>

#include "config/units.h"

namespace wsgate {
namespace {

std::vector<config::Cidr> Cidrs(std::initializer_list<const char*> texts) {
  std::vector<config::Cidr> out;
  for (const char* text : texts) out.push_back(*config::ParseCidr(text));
  return out;
}

sockaddr_in V4(const char* ip) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

sockaddr_in6 V6(const char* ip) {
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  inet_pton(AF_INET6, ip, &a.sin6_addr);
  return a;
}

bool Trusted(const std::vector<config::Cidr>& list, const sockaddr_in& a) {
  return IsTrustedPeer(list, reinterpret_cast<const sockaddr*>(&a));
}
bool Trusted(const std::vector<config::Cidr>& list, const sockaddr_in6& a) {
  return IsTrustedPeer(list, reinterpret_cast<const sockaddr*>(&a));
}

TEST(TrustedPeerTest, NobodyByDefault) {
  EXPECT_FALSE(Trusted({}, V4("127.0.0.1")));
  EXPECT_FALSE(Trusted({}, V6("::1")));
  EXPECT_FALSE(IsTrustedPeer(Cidrs({"0.0.0.0/0"}), nullptr));
}

TEST(TrustedPeerTest, MatchesEitherFamily) {
  auto list = Cidrs({"10.0.0.0/8", "127.0.0.1/32", "::1/128"});
  EXPECT_TRUE(Trusted(list, V4("10.200.3.4")));
  EXPECT_TRUE(Trusted(list, V4("127.0.0.1")));
  EXPECT_FALSE(Trusted(list, V4("127.0.0.2")));
  EXPECT_FALSE(Trusted(list, V4("11.0.0.1")));
  EXPECT_TRUE(Trusted(list, V6("::1")));
  EXPECT_FALSE(Trusted(list, V6("::2")));
}

TEST(TrustedPeerTest, MappedIpv4MatchesIpv4Entries) {
  // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
  EXPECT_TRUE(Trusted(Cidrs({"10.0.0.0/8"}), V6("::ffff:10.1.2.3")));
  EXPECT_FALSE(Trusted(Cidrs({"10.0.0.0/8"}), V6("::ffff:11.1.2.3")));
  EXPECT_TRUE(Trusted(Cidrs({"::ffff:0:0/96"}), V6("::ffff:11.1.2.3")));
  // ...but an IPv4 peer does not match an IPv6 entry.
  EXPECT_FALSE(Trusted(Cidrs({"::ffff:0:0/96"}), V4("11.1.2.3")));
}

}  // namespace
}  // namespace wsgate
