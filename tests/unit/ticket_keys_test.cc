#include "proxy/tls/ticket_keys.h"

#include <gtest/gtest.h>

#include <cstring>

namespace wsgate::tls {
namespace {

using std::chrono::minutes;

bool SameKey(const TicketKey& a, const TicketKey& b) {
  return std::memcmp(a.name, b.name, sizeof(a.name)) == 0 &&
         std::memcmp(a.aes, b.aes, sizeof(a.aes)) == 0 &&
         std::memcmp(a.hmac, b.hmac, sizeof(a.hmac)) == 0;
}

TEST(TicketKeyRingTest, KeyEncryptsForOneRotationThenOnlyDecryptsForAnother) {
  TicketKeyRing ring;
  const auto t0 = TicketKeyRing::Clock::now();
  TicketKey first{};
  ASSERT_TRUE(ring.Current(t0, &first));
  TicketKey again{};
  ASSERT_TRUE(ring.Current(t0 + minutes(59), &again));
  EXPECT_TRUE(SameKey(first, again));

  TicketKey found{};
  bool renew = true;
  ASSERT_TRUE(ring.Find(first.name, t0 + minutes(59), &found, &renew));
  EXPECT_TRUE(SameKey(first, found));
  EXPECT_FALSE(renew);

  // Rotated: new tickets get a new key; the old one still decrypts and asks for a new ticket.
  TicketKey second{};
  ASSERT_TRUE(ring.Current(t0 + minutes(61), &second));
  EXPECT_FALSE(SameKey(first, second));
  ASSERT_TRUE(ring.Find(first.name, t0 + minutes(90), &found, &renew));
  EXPECT_TRUE(SameKey(first, found));
  EXPECT_TRUE(renew);
  ASSERT_TRUE(ring.Find(second.name, t0 + minutes(90), &found, &renew));
  EXPECT_FALSE(renew);

  // One more rotation forgets the first key.
  TicketKey third{};
  ASSERT_TRUE(ring.Current(t0 + minutes(122), &third));
  EXPECT_FALSE(ring.Find(first.name, t0 + minutes(122), &found, &renew));
  ASSERT_TRUE(ring.Find(second.name, t0 + minutes(122), &found, &renew));
  EXPECT_TRUE(renew);
}

TEST(TicketKeyRingTest, AfterALongQuietSpellNoStaleKeyDecrypts) {
  TicketKeyRing ring;
  const auto t0 = TicketKeyRing::Clock::now();
  TicketKey first{};
  ASSERT_TRUE(ring.Current(t0, &first));
  // Nothing happened for three hours: the first key is older than two rotations.
  TicketKey found{};
  bool renew = false;
  EXPECT_FALSE(ring.Find(first.name, t0 + minutes(180), &found, &renew));
  TicketKey next{};
  ASSERT_TRUE(ring.Current(t0 + minutes(180), &next));
  EXPECT_FALSE(SameKey(first, next));
}

TEST(TicketKeyRingTest, UnknownNameIsNotFound) {
  TicketKeyRing ring;
  const auto t0 = TicketKeyRing::Clock::now();
  TicketKey key{};
  ASSERT_TRUE(ring.Current(t0, &key));
  unsigned char other[16];
  std::memcpy(other, key.name, sizeof(other));
  other[0] ^= 0xff;
  bool renew = false;
  EXPECT_FALSE(ring.Find(other, t0, &key, &renew));
}

}  // namespace
}  // namespace wsgate::tls
