// Fuzz target: LoadConfigString (config/loader.h).
//
// The whole input is YAML text. Properties: no crash, no exception escapes, the result is
// either a config or at least one error; every error names the file, has a non-empty one-line
// message and a consistent position, and errors come in file order; a config that loads
// satisfies the invariants the rest of wsgate relies on (at least one listener, pool and route,
// routes name existing pools, ports, limits and trusted_proxies prefixes in range).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "config/loader.h"
#include "fuzz/fuzz_util.h"

namespace {

using namespace wsgate::config;

constexpr const char* kFileName = "fuzz.yaml";

void CheckErrors(const ConfigErrors& errors) {
  FUZZ_CHECK(!errors.empty());
  for (size_t i = 0; i < errors.size(); ++i) {
    const ConfigError& e = errors[i];
    FUZZ_CHECK(e.file == kFileName);
    FUZZ_CHECK_MSG(!e.message.empty(), "error %zu (%s) has an empty message", i,
                   e.key_path.c_str());
    for (char c : e.message) {
      // Values are quoted/escaped into messages; a raw control byte would garble the log line.
      FUZZ_CHECK_MSG(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f,
                     "control byte 0x%02x in message: %s", static_cast<unsigned char>(c),
                     e.message.c_str());
    }
    FUZZ_CHECK(e.line >= 0 && e.column >= 0);
    FUZZ_CHECK((e.line == 0) == (e.column == 0));
    if (i > 0) {
      FUZZ_CHECK(std::pair(errors[i - 1].line, errors[i - 1].column) <=
                 std::pair(e.line, e.column));
    }
    const std::string formatted = e.Format();
    FUZZ_CHECK(formatted.size() >= e.message.size());
    FUZZ_CHECK(
        formatted.compare(formatted.size() - e.message.size(), e.message.size(), e.message) == 0);
  }
}

void CheckConfig(const ProxyConfig& cfg) {
  FUZZ_CHECK(cfg.source_path == kFileName);
  FUZZ_CHECK(cfg.workers <= 1024);
  FUZZ_CHECK(cfg.retries <= 100);
  for (const Cidr& cidr : cfg.trusted_proxies) {
    FUZZ_CHECK(cidr.prefix_length <= (cidr.ipv6 ? 128 : 32));
    FUZZ_CHECK(!cidr.text.empty());
  }
  FUZZ_CHECK(!cfg.listeners.empty());
  for (const auto& l : cfg.listeners) {
    FUZZ_CHECK(!l.name.empty());
    FUZZ_CHECK(!l.address.host.empty());
  }
  FUZZ_CHECK(!cfg.pools.empty());
  for (const auto& pool : cfg.pools) {
    FUZZ_CHECK(!pool.name.empty());
    FUZZ_CHECK(!pool.backends.empty());
    for (const auto& b : pool.backends) {
      FUZZ_CHECK(b.address.port != 0);
      FUZZ_CHECK(!b.address.host.empty());
      FUZZ_CHECK(b.weight >= 1 && b.weight <= 1000);
    }
  }
  FUZZ_CHECK(!cfg.routes.empty());
  for (const auto& route : cfg.routes) {
    FUZZ_CHECK_MSG(cfg.FindPool(route.pool) != nullptr, "route names unknown pool %s",
                   route.pool.c_str());
    FUZZ_CHECK(route.match.path_prefix.empty() || route.match.path_prefix.front() == '/');
  }
  const LimitsConfig& lim = cfg.limits;
  FUZZ_CHECK(lim.max_connections >= 1);
  FUZZ_CHECK(lim.max_header_bytes >= 1024 && lim.max_header_bytes <= 1024 * 1024);
  FUZZ_CHECK(lim.max_request_line_bytes >= 256);
  FUZZ_CHECK(lim.max_request_line_bytes <= lim.max_header_bytes);
  FUZZ_CHECK(lim.max_message_bytes >= 1);
  FUZZ_CHECK(lim.write_buffer_high_watermark >= 4 * 1024 &&
             lim.write_buffer_high_watermark <= 64 * 1024 * 1024);
  const TimeoutsConfig& t = cfg.timeouts;
  FUZZ_CHECK(t.handshake.count() > 0 && t.connect.count() > 0);
  FUZZ_CHECK(t.backend_handshake.count() > 0 && t.close.count() > 0);
  FUZZ_CHECK(t.idle.count() >= 0 && t.drain.count() >= 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::optional<LoadResult> result;
  try {
    result.emplace(LoadConfigString(text, kFileName));
  } catch (...) {
    FUZZ_CHECK_MSG(false, "LoadConfigString threw");
  }
  if (!*result) {
    CheckErrors(result->error());
  } else {
    CheckConfig(result->value());
  }
  return 0;
}
