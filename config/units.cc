#include "config/units.h"

#include <arpa/inet.h>

#include <array>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

namespace wsgate::config {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Splits |text| into its leading decimal digits and the rest. Returns false when there are no
// digits or the number does not fit in uint64_t.
bool ParseLeadingUint(std::string_view text, uint64_t* value, std::string_view* rest) {
  size_t i = 0;
  uint64_t v = 0;
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  while (i < text.size() && IsDigit(text[i])) {
    const uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (v > (kMax - digit) / 10) return false;
    v = v * 10 + digit;
    ++i;
  }
  if (i == 0) return false;
  *value = v;
  *rest = text.substr(i);
  return true;
}

// True for the characters a hostname or IPv4 literal may never contain.
bool IsBadHostChar(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u <= 0x20 || u == 0x7f || c == '[' || c == ']' || c == '/';
}

// A light check on the inside of "[...]": hex digits, ':' and '.', with an optional "%zone".
bool IsPlausibleIpv6(std::string_view host) {
  if (host.find(':') == std::string_view::npos) return false;
  const size_t zone = host.find('%');
  const std::string_view addr = host.substr(0, zone);
  for (char c : addr) {
    const bool hex = IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!hex && c != ':' && c != '.') return false;
  }
  if (zone != std::string_view::npos) {
    const std::string_view id = host.substr(zone + 1);
    if (id.empty()) return false;
    for (char c : id) {
      if (IsBadHostChar(c) || c == '%') return false;
    }
  }
  return true;
}

}  // namespace

std::optional<Duration> ParseDuration(std::string_view text) {
  if (text == "0") return Duration{0};
  uint64_t value = 0;
  std::string_view unit;
  if (!ParseLeadingUint(text, &value, &unit)) return std::nullopt;

  static constexpr std::array<std::pair<std::string_view, int64_t>, 5> kUnits = {{
      {"ms", 1},
      {"s", 1000},
      {"m", 60 * 1000},
      {"h", 60 * 60 * 1000},
      {"d", 24 * 60 * 60 * 1000},
  }};
  for (const auto& [name, millis] : kUnits) {
    if (unit != name) continue;
    // Duration's rep is a signed 64-bit count of milliseconds.
    const auto max = static_cast<uint64_t>(std::numeric_limits<Duration::rep>::max());
    if (value > max / static_cast<uint64_t>(millis)) return std::nullopt;
    return Duration{static_cast<Duration::rep>(value) * millis};
  }
  return std::nullopt;
}

std::optional<uint64_t> ParseSize(std::string_view text) {
  uint64_t value = 0;
  std::string_view unit;
  if (!ParseLeadingUint(text, &value, &unit)) return std::nullopt;

  static constexpr std::array<std::pair<std::string_view, uint64_t>, 8> kUnits = {{
      {"", 1},
      {"B", 1},
      {"KiB", uint64_t{1} << 10},
      {"MiB", uint64_t{1} << 20},
      {"GiB", uint64_t{1} << 30},
      {"KB", 1000},
      {"MB", 1000 * 1000},
      {"GB", 1000 * 1000 * 1000},
  }};
  for (const auto& [name, multiplier] : kUnits) {
    if (unit != name) continue;
    if (value > std::numeric_limits<uint64_t>::max() / multiplier) return std::nullopt;
    return value * multiplier;
  }
  return std::nullopt;
}

std::optional<HostPort> ParseHostPort(std::string_view text, bool allow_port_zero) {
  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    if (!IsPlausibleIpv6(host)) return std::nullopt;
    const std::string_view after = text.substr(close + 1);
    if (after.empty() || after.front() != ':') return std::nullopt;
    port_text = after.substr(1);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    // A second colon means an IPv6 literal written without brackets.
    if (host.empty() || host.find(':') != std::string_view::npos) return std::nullopt;
    for (char c : host) {
      if (IsBadHostChar(c)) return std::nullopt;
    }
  }

  uint64_t port = 0;
  std::string_view rest;
  if (!ParseLeadingUint(port_text, &port, &rest) || !rest.empty()) return std::nullopt;
  if (port > 65535 || (port == 0 && !allow_port_zero)) return std::nullopt;

  HostPort result;
  result.host = std::string(host);
  result.port = static_cast<uint16_t>(port);
  result.text = std::string(text);
  return result;
}

bool IsIpLiteral(const std::string& host) {
  in6_addr v6{};
  in_addr v4{};
  return inet_pton(AF_INET, host.c_str(), &v4) == 1 || inet_pton(AF_INET6, host.c_str(), &v6) == 1;
}

std::optional<Cidr> ParseCidr(std::string_view text) {
  const size_t slash = text.find('/');
  const std::string address(text.substr(0, slash));
  Cidr cidr;
  cidr.ipv6 = address.find(':') != std::string::npos;
  const int family = cidr.ipv6 ? AF_INET6 : AF_INET;
  // inet_pton stops at a NUL, which must not hide trailing bytes.
  if (address.find('\0') != std::string::npos) return std::nullopt;
  if (inet_pton(family, address.c_str(), cidr.network.data()) != 1) return std::nullopt;
  const unsigned max_prefix = cidr.ipv6 ? 128 : 32;
  unsigned prefix = max_prefix;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    uint64_t value = 0;
    std::string_view rest;
    // No sign, no leading zeros ("/08"), nothing after the digits.
    if (!ParseLeadingUint(digits, &value, &rest) || !rest.empty() || value > max_prefix ||
        (digits.size() > 1 && digits.front() == '0')) {
      return std::nullopt;
    }
    prefix = static_cast<unsigned>(value);
  }
  cidr.prefix_length = static_cast<uint8_t>(prefix);
  for (unsigned bit = prefix; bit < max_prefix; ++bit) {
    if ((cidr.network[bit / 8] >> (7 - bit % 8)) & 1) return std::nullopt;  // host bits set
  }
  cidr.text = std::string(text);
  return cidr;
}

bool CidrContains(const Cidr& cidr, bool ipv6, const uint8_t* address) {
  if (ipv6 != cidr.ipv6) return false;
  const unsigned whole_bytes = cidr.prefix_length / 8u;
  if (std::memcmp(cidr.network.data(), address, whole_bytes) != 0) return false;
  const unsigned rest_bits = cidr.prefix_length % 8u;
  if (rest_bits == 0) return true;
  const auto mask = static_cast<uint8_t>(0xFF << (8 - rest_bits));
  return (address[whole_bytes] & mask) == cidr.network[whole_bytes];
}

std::string FormatDuration(Duration d) {
  static constexpr std::pair<int64_t, const char*> kUnits[] = {
      {86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
  const int64_t ms = d.count();
  if (ms == 0) return "0s";
  for (const auto& [multiplier, suffix] : kUnits) {
    if (ms != 0 && ms % multiplier == 0) return std::to_string(ms / multiplier) + suffix;
  }
  return std::to_string(ms) + "ms";
}

std::string FormatSize(uint64_t bytes) {
  static constexpr std::pair<uint64_t, const char*> kUnits[] = {
      {uint64_t{1} << 30, "GiB"}, {uint64_t{1} << 20, "MiB"}, {uint64_t{1} << 10, "KiB"}};
  for (const auto& [multiplier, suffix] : kUnits) {
    if (bytes != 0 && bytes % multiplier == 0) return std::to_string(bytes / multiplier) + suffix;
  }
  return std::to_string(bytes);
}

}  // namespace wsgate::config
