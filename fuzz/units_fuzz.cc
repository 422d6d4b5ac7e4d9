// Fuzz target: ParseDuration, ParseSize, ParseHostPort, ParseCidr (config/units.h).
//
// The whole input is the text of one config value. Properties: no crash; ParseSize and
// ParseDuration agree with straightforward reference parsers; a successful ParseSize result
// written back as plain digits (and as "<n>B") parses to the same value; a successful duration
// written back as "<n>ms" parses to the same value; ParseHostPort results are in range, and
// re-formatting host and port gives text that parses to the same host and port; a ParseCidr
// result agrees with inet_pton, has no bits past its prefix, contains its own network and
// parses back from inet_ntop's text with the same prefix.
#include <arpa/inet.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "config/units.h"
#include "fuzz/fuzz_util.h"

namespace {

using namespace wsgate::config;

// Leading decimal digits (at least one) with overflow detection, then the rest.
bool RefLeading(std::string_view text, uint64_t* value, std::string_view* rest) {
  size_t i = 0;
  uint64_t v = 0;
  bool overflow = false;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    overflow |= __builtin_mul_overflow(v, uint64_t{10}, &v);
    overflow |= __builtin_add_overflow(v, static_cast<uint64_t>(text[i] - '0'), &v);
    ++i;
  }
  if (i == 0 || overflow) return false;
  *value = v;
  *rest = text.substr(i);
  return true;
}

std::optional<uint64_t> RefSize(std::string_view text) {
  uint64_t v = 0;
  std::string_view unit;
  if (!RefLeading(text, &v, &unit)) return std::nullopt;
  uint64_t mult = 0;
  if (unit.empty() || unit == "B")
    mult = 1;
  else if (unit == "KiB")
    mult = uint64_t{1} << 10;
  else if (unit == "MiB")
    mult = uint64_t{1} << 20;
  else if (unit == "GiB")
    mult = uint64_t{1} << 30;
  else if (unit == "KB")
    mult = 1000;
  else if (unit == "MB")
    mult = 1000000;
  else if (unit == "GB")
    mult = 1000000000;
  else
    return std::nullopt;
  uint64_t out = 0;
  if (__builtin_mul_overflow(v, mult, &out)) return std::nullopt;
  return out;
}

std::optional<int64_t> RefDurationMs(std::string_view text) {
  if (text == "0") return 0;
  uint64_t v = 0;
  std::string_view unit;
  if (!RefLeading(text, &v, &unit)) return std::nullopt;
  int64_t mult = 0;
  if (unit == "ms")
    mult = 1;
  else if (unit == "s")
    mult = 1000;
  else if (unit == "m")
    mult = 60000;
  else if (unit == "h")
    mult = 3600000;
  else if (unit == "d")
    mult = 86400000;
  else
    return std::nullopt;
  if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  int64_t out = 0;
  if (__builtin_mul_overflow(static_cast<int64_t>(v), mult, &out)) return std::nullopt;
  return out;
}

void CheckSize(std::string_view text) {
  const std::optional<uint64_t> got = ParseSize(text);
  const std::optional<uint64_t> want = RefSize(text);
  FUZZ_CHECK_MSG(got.has_value() == want.has_value() && (!got || *got == *want),
                 "ParseSize(\"%.*s\") disagrees with the reference", static_cast<int>(text.size()),
                 text.data());
  if (!got) return;
  const std::string digits = std::to_string(*got);
  const std::optional<uint64_t> again = ParseSize(digits);
  FUZZ_CHECK_MSG(again && *again == *got, "ParseSize(\"%s\") does not round-trip", digits.c_str());
  const std::optional<uint64_t> bytes = ParseSize(digits + "B");
  FUZZ_CHECK(bytes && *bytes == *got);
}

void CheckDuration(std::string_view text) {
  const std::optional<Duration> got = ParseDuration(text);
  const std::optional<int64_t> want = RefDurationMs(text);
  FUZZ_CHECK_MSG(got.has_value() == want.has_value() && (!got || got->count() == *want),
                 "ParseDuration(\"%.*s\") disagrees with the reference",
                 static_cast<int>(text.size()), text.data());
  if (!got) return;
  FUZZ_CHECK(got->count() >= 0);
  const std::string ms = std::to_string(got->count()) + "ms";
  const std::optional<Duration> again = ParseDuration(ms);
  FUZZ_CHECK_MSG(again && *again == *got, "ParseDuration(\"%s\") does not round-trip", ms.c_str());
}

void CheckHostPort(std::string_view text) {
  const std::optional<HostPort> strict = ParseHostPort(text, false);
  const std::optional<HostPort> lax = ParseHostPort(text, true);
  // Allowing port 0 only ever accepts more.
  FUZZ_CHECK(!strict || lax);
  if (strict) {
    FUZZ_CHECK(strict->host == lax->host && strict->port == lax->port);
    FUZZ_CHECK(strict->port != 0);
  }
  if (!lax) return;
  FUZZ_CHECK(!lax->host.empty());
  FUZZ_CHECK(lax->text == text);
  FUZZ_CHECK(lax->ToString() == text);
  FUZZ_CHECK(lax->host.size() < text.size());
  if (!strict) FUZZ_CHECK(lax->port == 0);
  // Canonical form: brackets exactly when the host has a colon.
  const bool v6 = lax->host.find(':') != std::string::npos;
  const std::string canon =
      (v6 ? "[" + lax->host + "]" : lax->host) + ":" + std::to_string(lax->port);
  const std::optional<HostPort> again = ParseHostPort(canon, true);
  FUZZ_CHECK_MSG(again && again->host == lax->host && again->port == lax->port,
                 "\"%s\" (from \"%.*s\") does not parse back", canon.c_str(),
                 static_cast<int>(text.size()), text.data());
}

void CheckCidr(std::string_view text) {
  const std::optional<Cidr> cidr = ParseCidr(text);
  if (!cidr) return;
  FUZZ_CHECK(cidr->text == text);
  const unsigned max_prefix = cidr->ipv6 ? 128 : 32;
  FUZZ_CHECK(cidr->prefix_length <= max_prefix);
  for (unsigned bit = cidr->prefix_length; bit < 128; ++bit) {
    FUZZ_CHECK(((cidr->network[bit / 8] >> (7 - bit % 8)) & 1) == 0);
  }
  FUZZ_CHECK(CidrContains(*cidr, cidr->ipv6, cidr->network.data()));
  FUZZ_CHECK(!CidrContains(*cidr, !cidr->ipv6, cidr->network.data()));
  // The address part is exactly what inet_pton reads; written back canonically it parses to
  // the same network.
  const std::string address(text.substr(0, text.find('/')));
  uint8_t parsed[16] = {};
  FUZZ_CHECK(inet_pton(cidr->ipv6 ? AF_INET6 : AF_INET, address.c_str(), parsed) == 1);
  FUZZ_CHECK(std::memcmp(parsed, cidr->network.data(), cidr->ipv6 ? 16 : 4) == 0);
  char canonical[INET6_ADDRSTRLEN] = {};
  FUZZ_CHECK(inet_ntop(cidr->ipv6 ? AF_INET6 : AF_INET, parsed, canonical, sizeof(canonical)));
  const std::string again_text = std::string(canonical) + "/" + std::to_string(cidr->prefix_length);
  const std::optional<Cidr> again = ParseCidr(again_text);
  FUZZ_CHECK_MSG(again && again->network == cidr->network &&
                     again->prefix_length == cidr->prefix_length && again->ipv6 == cidr->ipv6,
                 "\"%s\" (from \"%.*s\") does not parse back", again_text.c_str(),
                 static_cast<int>(text.size()), text.data());
  // Flipping the last bit inside the prefix leaves the network (unless the prefix is empty).
  if (cidr->prefix_length > 0) {
    std::array<uint8_t, 16> outside = cidr->network;
    const unsigned bit = cidr->prefix_length - 1u;
    outside[bit / 8] = static_cast<uint8_t>(outside[bit / 8] ^ (0x80 >> (bit % 8)));
    FUZZ_CHECK(!CidrContains(*cidr, cidr->ipv6, outside.data()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Own copy, so ASan flags any read past the end.
  const std::string buffer(reinterpret_cast<const char*>(data), size);
  const std::string_view text(buffer);
  CheckSize(text);
  CheckDuration(text);
  CheckHostPort(text);
  CheckCidr(text);
  return 0;
}
