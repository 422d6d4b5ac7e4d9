#include "proxy/access_log.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace wsgate {
namespace {

TEST(AccessLogTest, ClosedByIsNamedOnceForTextJsonAndHooks) {
  const std::vector<std::pair<ClosedBy, std::string>> names = {{ClosedBy::kClient, "client"},
                                                               {ClosedBy::kBackend, "backend"},
                                                               {ClosedBy::kProxy, "proxy"},
                                                               {ClosedBy::kApi, "api"},
                                                               {ClosedBy::kTimeout, "timeout"}};
  for (const auto& [closed_by, name] : names) {
    EXPECT_EQ(ClosedByName(closed_by), name);
    AccessRecord record;
    record.closed_by = closed_by;
    EXPECT_NE(AccessLog::FormatText(record).find(" closed_by=" + name + " "), std::string::npos);
    EXPECT_NE(AccessLog::FormatJson(record).find("\"closed_by\":\"" + name + "\""),
              std::string::npos);
  }
}

TEST(AccessLogTest, UndecidedClosedByIsADashOrNull) {
  AccessRecord record;
  EXPECT_STREQ(ClosedByName(record.closed_by), "");
  EXPECT_NE(AccessLog::FormatText(record).find(" closed_by=- "), std::string::npos);
  EXPECT_NE(AccessLog::FormatJson(record).find("\"closed_by\":null"), std::string::npos);
}

}  // namespace
}  // namespace wsgate
