// The /proc parsers behind the process_* metrics, and the exposition they feed.
#include "metrics/process_metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "metrics/metrics.h"

namespace wsgate::metrics {
namespace {

TEST(ParseProcStat, ReadsTheFieldsAfterTheCommandName) {
  // A command name with spaces and parentheses must not shift the fields.
  const std::optional<ProcStat> stat = ParseProcStat(
      "4242 (ws gate) (x)) R 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 3 0 987654 "
      "123456789 4096 18446744073709551615 1 1 0 0 0\n");
  ASSERT_TRUE(stat.has_value());
  EXPECT_EQ(stat->utime_ticks, 250u);
  EXPECT_EQ(stat->stime_ticks, 75u);
  EXPECT_EQ(stat->start_time_ticks, 987654u);
  EXPECT_EQ(stat->vsize_bytes, 123456789u);
  EXPECT_EQ(stat->rss_pages, 4096u);
}

TEST(ParseProcStat, RejectsTruncatedOrMalformedText) {
  EXPECT_FALSE(ParseProcStat(""));
  EXPECT_FALSE(ParseProcStat("1 (x) S 1 2 3"));
  EXPECT_FALSE(ParseProcStat("1 x S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22"));
  EXPECT_FALSE(ParseProcStat("1 (x) S 1 2 3 4 5 6 7 8 9 10 -1 12 13 14 15 16 17 18 19 20 21 22"));
}

TEST(ParseBootTime, FindsTheBtimeLine) {
  EXPECT_EQ(ParseBootTime("cpu  1 2 3\nbtime 1765000000\nprocesses 7\n"), 1765000000u);
  EXPECT_FALSE(ParseBootTime("cpu  1 2 3\nprocesses 7\n"));
  EXPECT_FALSE(ParseBootTime("btime soon\n"));
}

TEST(ProcessMetrics, HasTheSixStandardFamilies) {
  const std::string text = Serialize(Scrape{});
  for (const char* line :
       {"# TYPE process_cpu_seconds_total counter\n", "# TYPE process_open_fds gauge\n",
        "# TYPE process_max_fds gauge\n", "# TYPE process_virtual_memory_bytes gauge\n",
        "# TYPE process_resident_memory_bytes gauge\n",
        "# TYPE process_start_time_seconds gauge\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << text;
  }
}

}  // namespace
}  // namespace wsgate::metrics
