// Parsers for the duration ("250ms", "5s", "2m", "1h", "1d") and size ("512", "64KiB", "16MiB")
// values used in the config. Pure functions, fuzzed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"

namespace wsgate::config {

// Accepts a non-negative integer followed by ms, s, m, h or d ("0" alone is also accepted).
std::optional<Duration> ParseDuration(std::string_view text);

// Accepts a non-negative integer, optionally followed by B, KiB, MiB, GiB (also KB/MB/GB as
// powers of 1000). Rejects overflow.
std::optional<uint64_t> ParseSize(std::string_view text);

// Accepts "host:port" and "[v6]:port"; port 1..65535 (0 allowed when |allow_port_zero|).
std::optional<HostPort> ParseHostPort(std::string_view text, bool allow_port_zero);

// True if |host| is a numeric IPv4 or IPv6 address (no name to resolve).
bool IsIpLiteral(const std::string& host);

// Accepts "10.0.0.0/8", "2001:db8::/32" and a bare address (a /32 or /128). The address is
// strict inet_pton syntax (no zone); bits past the prefix must be zero.
std::optional<Cidr> ParseCidr(std::string_view text);

// True if the |ipv6| (16 bytes) or IPv4 (4 bytes) |address| lies in |cidr|; an address of the
// other family never does.
bool CidrContains(const Cidr& cidr, bool ipv6, const uint8_t* address);

// The inverse of the parsers above, the way an operator would write the value: "250ms", "5s",
// "2m", "0s"; "256", "1KiB", "64MiB". Parsing the result gives the value back.
std::string FormatDuration(Duration d);
std::string FormatSize(uint64_t bytes);

}  // namespace wsgate::config
