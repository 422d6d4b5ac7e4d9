// A stand-in for libFuzzer's driver in ordinary (non-clang, non-fuzzing) builds: runs
// LLVMFuzzerTestOneInput once over every regular file in the directories (or files) named on
// the command line, in sorted order, so a fuzz corpus doubles as a regression test.
//
//   head_parser_fuzz_replay [-timeout=SECONDS] [-rss_limit_mb=MB] DIR_OR_FILE...
//
// Like libFuzzer, a watchdog aborts the run when one input takes longer than -timeout (default
// 30 s) or the process grows past -rss_limit_mb (default 2048; 0 disables), so a reproducer for
// a hang or a runaway allocation fails the test instead of exhausting the machine.
//
// Exits 0 when every input ran; a failing check aborts the process (the input's name is printed
// just before it runs); 1 on usage errors or when no input was found.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

std::atomic<int64_t> g_input_started_ms{0};  // 0 = between inputs
std::atomic<const char*> g_current{nullptr};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

size_t ResidentMb() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long size = 0;
  unsigned long resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  if (n != 2) return 0;
  return static_cast<size_t>(resident) * static_cast<size_t>(sysconf(_SC_PAGESIZE)) >> 20;
}

[[noreturn]] void Watchdog(int64_t timeout_ms, size_t rss_limit_mb) {
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const int64_t started = g_input_started_ms.load();
    const char* name = g_current.load();
    if (started != 0 && timeout_ms > 0 && NowMs() - started > timeout_ms) {
      std::fprintf(stderr, "replay: timeout: %s ran longer than %lld ms\n", name ? name : "?",
                   static_cast<long long>(timeout_ms));
      std::abort();
    }
    if (rss_limit_mb > 0) {
      const size_t rss = ResidentMb();
      if (rss > rss_limit_mb) {
        std::fprintf(stderr, "replay: out of memory: %zu MB resident (limit %zu MB) on %s\n", rss,
                     rss_limit_mb, name ? name : "?");
        std::abort();
      }
    }
  }
}

bool ReadFile(const std::filesystem::path& path, std::vector<uint8_t>* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return !in.bad();
}

bool ParseFlag(const char* arg, const char* name, long* value) {
  const size_t n = std::strlen(name);
  if (std::strncmp(arg, name, n) != 0 || arg[n] != '=') return false;
  char* end = nullptr;
  *value = std::strtol(arg + n + 1, &end, 10);
  return end != arg + n + 1 && *end == '\0' && *value >= 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize != nullptr) LLVMFuzzerInitialize(&argc, &argv);
  long timeout_s = 30;
  long rss_limit_mb = 2048;
  std::vector<std::filesystem::path> inputs;
  for (int i = 1; i < argc; ++i) {
    const char* arg = argv[i];
    if (arg[0] == '-') {
      if (!ParseFlag(arg, "-timeout", &timeout_s) &&
          !ParseFlag(arg, "-rss_limit_mb", &rss_limit_mb)) {
        std::fprintf(stderr, "unknown flag: %s\n", arg);
        return 1;
      }
      continue;
    }
    const std::filesystem::path path(arg);
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      std::vector<std::filesystem::path> files;
      for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
      if (ec) {
        std::fprintf(stderr, "cannot list %s: %s\n", arg, ec.message().c_str());
        return 1;
      }
      std::sort(files.begin(), files.end());
      inputs.insert(inputs.end(), files.begin(), files.end());
    } else if (std::filesystem::is_regular_file(path, ec)) {
      inputs.push_back(path);
    } else {
      std::fprintf(stderr, "no such file or directory: %s\n", arg);
      return 1;
    }
  }
  if (inputs.empty()) {
    std::fprintf(stderr, "usage: %s [-timeout=S] [-rss_limit_mb=MB] DIR_OR_FILE...\n", argv[0]);
    return 1;
  }
  std::thread(Watchdog, static_cast<int64_t>(timeout_s) * 1000, static_cast<size_t>(rss_limit_mb))
      .detach();

  std::vector<uint8_t> data;
  for (const auto& path : inputs) {
    if (!ReadFile(path, &data)) {
      std::fprintf(stderr, "cannot read %s\n", path.c_str());
      return 1;
    }
    std::fprintf(stderr, "running %s (%zu bytes)\n", path.c_str(), data.size());
    // An exactly-sized heap block, so ASan catches reads past the end.
    std::vector<uint8_t> exact(data.begin(), data.end());
    g_current.store(path.c_str());
    g_input_started_ms.store(NowMs());
    LLVMFuzzerTestOneInput(exact.data(), exact.size());
    g_input_started_ms.store(0);
  }
  std::fprintf(stderr, "%zu inputs ran\n", inputs.size());
  return 0;
}
