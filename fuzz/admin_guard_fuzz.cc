// Fuzz target: the admin listener's Host / Origin / Sec-Fetch-Site checks (proxy/admin_guard.h).
//
// The input is split at the first two '\n' into Host, Origin and Sec-Fetch-Site values.
// Properties: no crash; a parsed host is lower case and has no port; a request whose Host is
// accepted by a loopback-bound policy is either a loopback name or was an allowed exact name;
// Origin is only ever accepted when it is exactly an allowed one.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "proxy/admin_guard.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string buffer(reinterpret_cast<const char*>(data), size);
  std::string_view text(buffer);
  const size_t first = text.find('\n');
  const std::string host(text.substr(0, first));
  std::string origin;
  std::string fetch_site;
  if (first != std::string_view::npos) {
    std::string_view rest = text.substr(first + 1);
    const size_t second = rest.find('\n');
    origin = std::string(rest.substr(0, second));
    if (second != std::string_view::npos) fetch_site = std::string(rest.substr(second + 1));
  }

  if (std::optional<std::string> parsed = wsgate::HostOfHostHeader(host)) {
    for (char c : *parsed) FUZZ_CHECK(!(c >= 'A' && c <= 'Z'));
    FUZZ_CHECK(parsed->size() <= host.size());
  }

  const wsgate::AdminRequestPolicy loopback =
      wsgate::MakeAdminRequestPolicy("127.0.0.1", "127.0.0.1", "", {}, {"https://ops.example"});
  wsgate::AdminRequestHeaders headers;
  headers.host = host;
  headers.host_count = 1;
  if (!origin.empty()) {
    headers.origin = origin;
    headers.origin_count = 1;
  }
  if (!fetch_site.empty()) headers.fetch_site = fetch_site;
  const wsgate::AdminVerdict verdict = wsgate::CheckAdminRequest(loopback, headers);
  if (verdict == wsgate::AdminVerdict::kAllowed) {
    const std::optional<std::string> parsed = wsgate::HostOfHostHeader(host);
    FUZZ_CHECK(parsed && (*parsed == "localhost" || *parsed == "127.0.0.1" || *parsed == "::1"));
    FUZZ_CHECK(origin.empty() || origin == "https://ops.example");
    FUZZ_CHECK(fetch_site.empty() || fetch_site == "none" || origin == "https://ops.example");
  }
  // A wildcard-bound policy accepts any IP literal, but still no name outside its list.
  const wsgate::AdminRequestPolicy wildcard =
      wsgate::MakeAdminRequestPolicy("0.0.0.0", "0.0.0.0", "", {}, {});
  headers.origin.reset();
  headers.origin_count = 0;
  headers.fetch_site.reset();
  if (wsgate::CheckAdminRequest(wildcard, headers) == wsgate::AdminVerdict::kAllowed) {
    const std::optional<std::string> parsed = wsgate::HostOfHostHeader(host);
    FUZZ_CHECK(parsed && (wsgate::IsIpLiteral(*parsed) || *parsed == "localhost"));
  }
  return 0;
}
