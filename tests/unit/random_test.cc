#include "proxy/core/random.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace wsgate {
namespace {

TEST(SecureRandomTest, DrawsAcrossPoolRefillsNeverRepeat) {
  std::set<std::string> seen;
  for (int i = 0; i < 2000; ++i) {  // 2000 x 16 B crosses several 4 KiB refills
    std::string id(16, '\0');
    ASSERT_TRUE(SecureRandom(id.data(), id.size()));
    EXPECT_TRUE(seen.insert(id).second);
  }
}

TEST(SecureRandomTest, OddSizesAndLargeRequests) {
  std::vector<unsigned char> big(10000, 0);
  ASSERT_TRUE(SecureRandom(big.data(), big.size()));  // above the pool: straight from OpenSSL
  size_t zeros = 0;
  for (unsigned char b : big) zeros += b == 0;
  EXPECT_LT(zeros, 200u);  // ~39 expected
  for (size_t size : {1u, 3u, 4095u, 1000u, 7u}) {
    std::vector<unsigned char> out(size, 0);
    ASSERT_TRUE(SecureRandom(out.data(), out.size()));
  }
}

}  // namespace
}  // namespace wsgate
