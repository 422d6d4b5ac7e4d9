#include "proxy/admission.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <vector>

namespace wsgate {
namespace {

using Verdict = Admission::Verdict;
using namespace std::chrono_literals;

sockaddr_storage V4(const char* text) {
  sockaddr_storage s{};
  auto* a = reinterpret_cast<sockaddr_in*>(&s);
  a->sin_family = AF_INET;
  inet_pton(AF_INET, text, &a->sin_addr);
  return s;
}

sockaddr_storage V6(const char* text) {
  sockaddr_storage s{};
  auto* a = reinterpret_cast<sockaddr_in6*>(&s);
  a->sin6_family = AF_INET6;
  inet_pton(AF_INET6, text, &a->sin6_addr);
  return s;
}

const sockaddr* Sa(const sockaddr_storage& s) { return reinterpret_cast<const sockaddr*>(&s); }

config::LimitsConfig Limits(uint64_t per_ip, uint64_t rate, uint64_t pending = 10000) {
  config::LimitsConfig limits;
  limits.max_connections_per_ip = per_ip;
  limits.handshake_rate_per_ip = rate;
  limits.max_pending_handshakes = pending;
  return limits;
}

TEST(AdmissionTest, KeysGroupAnIpv6Slash64AndUnmapIpv4) {
  EXPECT_EQ(Admission::KeyOf(Sa(V6("2001:db8:1:2::1"))),
            Admission::KeyOf(Sa(V6("2001:db8:1:2:ffff::9"))));
  EXPECT_NE(Admission::KeyOf(Sa(V6("2001:db8:1:2::1"))),
            Admission::KeyOf(Sa(V6("2001:db8:1:3::1"))));
  EXPECT_EQ(Admission::KeyOf(Sa(V6("::ffff:192.0.2.7"))), Admission::KeyOf(Sa(V4("192.0.2.7"))));
  EXPECT_NE(Admission::KeyOf(Sa(V4("192.0.2.7"))), Admission::KeyOf(Sa(V4("192.0.2.8"))));
}

TEST(AdmissionTest, ConnectionsPerAddressAreCappedAndGivenBack) {
  Admission admission;
  admission.Configure(Limits(2, 0));
  auto now = Admission::Clock::now();
  auto a = V4("10.0.0.1");
  Admission::Ticket first = admission.Admit(Sa(a), now);
  Admission::Ticket second = admission.Admit(Sa(a), now);
  EXPECT_EQ(first.verdict, Verdict::kAdmit);
  EXPECT_TRUE(first.holds_address);
  EXPECT_EQ(second.verdict, Verdict::kAdmit);
  Admission::Ticket third = admission.Admit(Sa(a), now);
  EXPECT_EQ(third.verdict, Verdict::kTooManyFromAddress);
  EXPECT_FALSE(third.holds_address);
  EXPECT_FALSE(third.holds_pending);
  EXPECT_EQ(admission.Admit(Sa(V4("10.0.0.2")), now).verdict, Verdict::kAdmit);
  admission.Release(first, Sa(a));
  admission.Release(first, Sa(a));  // a ticket gives back once
  EXPECT_EQ(admission.Admit(Sa(a), now).verdict, Verdict::kAdmit);
  EXPECT_EQ(admission.Admit(Sa(a), now).verdict, Verdict::kTooManyFromAddress);
}

TEST(AdmissionTest, HandshakeRateIsATokenBucketPerAddress) {
  Admission admission;
  admission.Configure(Limits(0, 4));
  auto start = Admission::Clock::now();
  auto a = V4("10.0.0.1");
  std::vector<Admission::Ticket> admitted;
  for (int i = 0; i < 4; ++i) {
    admitted.push_back(admission.Admit(Sa(a), start));
    EXPECT_EQ(admitted.back().verdict, Verdict::kAdmit);
  }
  EXPECT_EQ(admission.Admit(Sa(a), start).verdict, Verdict::kRateExceeded);
  EXPECT_EQ(admission.Admit(Sa(V4("10.0.0.9")), start).verdict, Verdict::kAdmit);
  // A quarter of a second refills one token; closing connections refills nothing.
  for (auto& ticket : admitted) admission.Release(ticket, Sa(a));
  EXPECT_EQ(admission.Admit(Sa(a), start + 100ms).verdict, Verdict::kRateExceeded);
  EXPECT_EQ(admission.Admit(Sa(a), start + 260ms).verdict, Verdict::kAdmit);
  EXPECT_EQ(admission.Admit(Sa(a), start + 270ms).verdict, Verdict::kRateExceeded);
}

TEST(AdmissionTest, PendingHandshakesAreCapped) {
  Admission admission;
  admission.Configure(Limits(0, 0, 2));
  auto now = Admission::Clock::now();
  auto a = V4("10.0.0.1");
  Admission::Ticket one = admission.Admit(Sa(a), now);
  Admission::Ticket two = admission.Admit(Sa(a), now);
  EXPECT_TRUE(one.holds_pending);
  EXPECT_EQ(admission.pending(), 2u);
  EXPECT_EQ(admission.Admit(Sa(a), now).verdict, Verdict::kTooManyPending);
  admission.EndHandshake(one);  // upgraded: no longer pending, still connected
  EXPECT_EQ(admission.pending(), 1u);
  EXPECT_EQ(admission.Admit(Sa(a), now).verdict, Verdict::kAdmit);
  admission.Release(two, Sa(a));
  admission.Release(one, Sa(a));
  EXPECT_EQ(admission.pending(), 1u);
}

TEST(AdmissionTest, IdleAddressesAreForgotten) {
  Admission admission;
  admission.Configure(Limits(5, 0));
  auto now = Admission::Clock::now();
  auto a = V4("10.0.0.1");
  Admission::Ticket t = admission.Admit(Sa(a), now);
  EXPECT_EQ(admission.tracked_addresses(), 1u);
  admission.Release(t, Sa(a));
  EXPECT_EQ(admission.tracked_addresses(), 0u);  // count-only entries go at zero

  admission.Configure(Limits(0, 10));
  for (int i = 0; i < 5000; ++i) {
    sockaddr_storage s =
        V4(("10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250)).c_str());
    Admission::Ticket ticket = admission.Admit(Sa(s), now + std::chrono::milliseconds(i));
    admission.Release(ticket, Sa(s));
  }
  // Rate entries stay about a second after their last connection, then a sweep drops them.
  EXPECT_LT(admission.tracked_addresses(), 5000u);
}

TEST(AdmissionTest, ReloadKeepsWhatOldTicketsHold) {
  Admission admission;
  admission.Configure(Limits(0, 0));
  auto now = Admission::Clock::now();
  auto a = V4("10.0.0.1");
  Admission::Ticket before = admission.Admit(Sa(a), now);
  EXPECT_FALSE(before.holds_address);
  admission.Configure(Limits(1, 0));
  Admission::Ticket after = admission.Admit(Sa(a), now);
  EXPECT_TRUE(after.holds_address);
  admission.Release(before, Sa(a));  // held nothing per address: must not free |after|'s slot
  EXPECT_EQ(admission.Admit(Sa(a), now).verdict, Verdict::kTooManyFromAddress);
}

}  // namespace
}  // namespace wsgate
