#include "metrics/process_metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>

#include <charconv>
#include <fstream>
#include <sstream>
#include <vector>

#include "metrics/families.h"

namespace wsgate::metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;

bool ParseUint(std::string_view text, uint64_t* out) {
  if (text.empty()) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

std::optional<std::string> ReadSmallFile(const char* path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Entries of /proc/self/fd, the descriptor reading the directory included (as the client
// libraries count it).
std::optional<uint64_t> OpenFds() {
  // open() + fdopendir() rather than opendir(): ThreadSanitizer (clang 14) does not record a
  // descriptor opendir() creates and crashes when it reports anything on it.
  int fd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  DIR* dir = fdopendir(fd);
  if (dir == nullptr) {
    close(fd);
    return std::nullopt;
  }
  uint64_t count = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count;
}

// One unlabelled series of family |id|, as its declared type wants it.
void Add(std::vector<MetricFamily>* families, FamilyId id, double value) {
  ClientMetric metric;
  if (kFamilySpecs[id].type == Type::kCounter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  (*families)[id].metric.push_back(std::move(metric));
}

}  // namespace

std::optional<ProcStat> ParseProcStat(std::string_view text) {
  const size_t close = text.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  // Fields from 3 (state) on, separated by single spaces.
  std::string_view rest = text.substr(close + 1);
  std::vector<std::string_view> fields;
  while (!rest.empty() && fields.size() < 22) {
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\n')) rest.remove_prefix(1);
    if (rest.empty()) break;
    size_t end = rest.find_first_of(" \n");
    if (end == std::string_view::npos) end = rest.size();
    fields.push_back(rest.substr(0, end));
    rest.remove_prefix(end);
  }
  // Field N (1-based) is fields[N - 3].
  if (fields.size() < 22) return std::nullopt;
  ProcStat stat;
  if (!ParseUint(fields[14 - 3], &stat.utime_ticks) ||
      !ParseUint(fields[15 - 3], &stat.stime_ticks) ||
      !ParseUint(fields[22 - 3], &stat.start_time_ticks) ||
      !ParseUint(fields[23 - 3], &stat.vsize_bytes) ||
      !ParseUint(fields[24 - 3], &stat.rss_pages)) {
    return std::nullopt;
  }
  return stat;
}

std::optional<uint64_t> ParseBootTime(std::string_view text) {
  constexpr std::string_view kKey = "btime ";
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(at, end - at);
    if (line.substr(0, kKey.size()) == kKey) {
      uint64_t seconds = 0;
      if (ParseUint(line.substr(kKey.size()), &seconds)) return seconds;
      return std::nullopt;
    }
    at = end + 1;
  }
  return std::nullopt;
}

void CollectProcessMetrics(std::vector<MetricFamily>* families) {
  const std::optional<std::string> stat_text = ReadSmallFile("/proc/self/stat");
  const std::optional<ProcStat> stat =
      stat_text ? ParseProcStat(*stat_text) : std::optional<ProcStat>();
  const long ticks_per_second = sysconf(_SC_CLK_TCK);
  const long page_size = sysconf(_SC_PAGESIZE);
  if (stat && ticks_per_second > 0) {
    Add(families, kProcessCpuSecondsTotal,
        static_cast<double>(stat->utime_ticks + stat->stime_ticks) /
            static_cast<double>(ticks_per_second));
  }
  if (const std::optional<uint64_t> fds = OpenFds()) {
    Add(families, kProcessOpenFds, static_cast<double>(*fds));
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    Add(families, kProcessMaxFds, static_cast<double>(limit.rlim_cur));
  }
  if (stat) {
    Add(families, kProcessVirtualMemoryBytes, static_cast<double>(stat->vsize_bytes));
    if (page_size > 0) {
      Add(families, kProcessResidentMemoryBytes,
          static_cast<double>(stat->rss_pages) * static_cast<double>(page_size));
    }
  }
  const std::optional<std::string> system_stat = ReadSmallFile("/proc/stat");
  const std::optional<uint64_t> boot = system_stat ? ParseBootTime(*system_stat) : std::nullopt;
  if (stat && boot && ticks_per_second > 0) {
    Add(families, kProcessStartTimeSeconds,
        static_cast<double>(*boot) +
            static_cast<double>(stat->start_time_ticks) / static_cast<double>(ticks_per_second));
  }
}

}  // namespace wsgate::metrics
