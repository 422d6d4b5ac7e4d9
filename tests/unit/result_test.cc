// config/result.h: Result<T, E> and Status.
#include "config/result.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace wsgate {
namespace {

TEST(Result, ValueErrorAndStatus) {
  Result<int> value = 7;
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(value.value(), 7);
  Result<std::string> failed = Fail(std::string("why"));
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error(), "why");
  Result<std::string> text = std::string("a value, not an error");
  EXPECT_TRUE(text.ok());
  Status done;
  EXPECT_TRUE(done.ok());
  Status partial = Fail("listener public: address in use");
  ASSERT_FALSE(partial.ok());
  EXPECT_EQ(partial.error(), "listener public: address in use");
}

TEST(Result, MovesOutMoveOnlyValues) {
  Result<std::unique_ptr<int>> owned = std::make_unique<int>(3);
  ASSERT_TRUE(owned.ok());
  std::unique_ptr<int> taken = std::move(owned).value();
  EXPECT_EQ(*taken, 3);
  Result<std::unique_ptr<int>> none = Fail(std::string("could not make it"));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(std::move(none).error(), "could not make it");
}

}  // namespace
}  // namespace wsgate
