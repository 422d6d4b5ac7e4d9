// Fuzz target: ParseProcStat and ParseBootTime (metrics/process_metrics.h).
//
// The whole input is the text of /proc/self/stat (and, for ParseBootTime, of /proc/stat).
// Properties: no crash; a parsed stat survives a different command name (the fields are counted
// from the last ')', whatever the name contains); ParseBootTime finds a btime line appended
// after any text that has none.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "metrics/process_metrics.h"

using wsgate::metrics::ParseBootTime;
using wsgate::metrics::ParseProcStat;
using wsgate::metrics::ProcStat;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Own copy, so ASan flags any read past the end.
  const std::string buffer(reinterpret_cast<const char*>(data), size);
  const std::string_view text(buffer);
  const std::optional<ProcStat> stat = ParseProcStat(text);
  if (stat) {
    const size_t close = text.rfind(')');
    FUZZ_CHECK(close != std::string_view::npos);
    const std::string renamed = "1 (a) b) c" + buffer.substr(close);
    const std::optional<ProcStat> again = ParseProcStat(renamed);
    FUZZ_CHECK(again && again->utime_ticks == stat->utime_ticks &&
               again->stime_ticks == stat->stime_ticks &&
               again->start_time_ticks == stat->start_time_ticks &&
               again->vsize_bytes == stat->vsize_bytes && again->rss_pages == stat->rss_pages);
  }
  (void)ParseBootTime(text);
  if (text.find("btime") == std::string_view::npos) {
    const std::optional<uint64_t> boot = ParseBootTime(buffer + "\nbtime 1700000000\n");
    FUZZ_CHECK(boot && *boot == 1700000000);
  }
  return 0;
}
