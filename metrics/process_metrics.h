// The standard process metrics of the Prometheus client libraries (process_open_fds,
// process_max_fds, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_cpu_seconds_total, process_start_time_seconds): same names, types and meanings, read
// from /proc and getrlimit when /metrics is scraped, never on the data path.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace prometheus {
struct MetricFamily;
}  // namespace prometheus

namespace wsgate::metrics {

// The fields of /proc/[pid]/stat the collector needs, in the kernel's units.
struct ProcStat {
  uint64_t utime_ticks = 0;       // field 14
  uint64_t stime_ticks = 0;       // field 15
  uint64_t start_time_ticks = 0;  // field 22: clock ticks after boot
  uint64_t vsize_bytes = 0;       // field 23
  uint64_t rss_pages = 0;         // field 24
};

// Parses the text of /proc/[pid]/stat. The command name (field 2) is in parentheses and may
// itself contain spaces and ')', so fields are counted from the last ')'.
std::optional<ProcStat> ParseProcStat(std::string_view text);

// The "btime" line of /proc/stat: boot time in seconds since the epoch.
std::optional<uint64_t> ParseBootTime(std::string_view text);

// One series in each of the six process_* families of |families| (indexed by FamilyId); a value
// that cannot be read is left out.
void CollectProcessMetrics(std::vector<prometheus::MetricFamily>* families);

}  // namespace wsgate::metrics
