// Which admin requests may come from a browser: the checks against cross-origin requests and DNS
// rebinding that run before the bearer token (pure, fuzzed: fuzz/admin_guard_fuzz.cc).
//
// A web page can make the browser send requests to the admin listener: cross-origin ones always
// carry Origin (and Sec-Fetch-Site), and a DNS-rebinding page reaches it under the attacker's
// host name, which the browser sends as Host. So: Host must name this listener (an address it is
// bound to, a loopback name, public_url's host, admin.allowed_hosts; any IP literal when bound to
// a wildcard address, since a rebinding attack always uses a name), and Origin must be absent or
// listed in admin.allowed_origins.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsgate {

struct AdminRequestPolicy {
  std::vector<std::string> hosts;    // lower case, IPv6 without brackets, no port
  bool any_ip_literal = false;       // bound to 0.0.0.0 or ::
  std::vector<std::string> origins;  // exact Origin values
};

// The headers the check looks at; count = how many times the field occurred.
struct AdminRequestHeaders {
  std::optional<std::string_view> host;
  int host_count = 0;
  std::optional<std::string_view> origin;
  int origin_count = 0;
  std::optional<std::string_view> fetch_site;
};

enum class AdminVerdict { kAllowed, kBadHost, kBadOrigin, kBadFetchSite };

// The host of a Host header value ("Name:80", "[::1]:9901", "10.0.0.5"): lower case, IPv6
// without brackets, port dropped. Null if malformed (empty, bad port, characters a host cannot
// hold).
std::optional<std::string> HostOfHostHeader(std::string_view value);

// True for a dotted-quad IPv4 address or an IPv6 address (without brackets).
bool IsIpLiteral(const std::string& host);

// |bound_host| is the address the listener is bound to (as getsockname reports it, no brackets),
// |configured_host| the host of admin.address as written, |public_url| admin.public_url.
AdminRequestPolicy MakeAdminRequestPolicy(const std::string& bound_host,
                                          const std::string& configured_host,
                                          const std::string& public_url,
                                          const std::vector<std::string>& allowed_hosts,
                                          const std::vector<std::string>& allowed_origins);

// A request without Host (HTTP/1.0) is allowed: browsers always send one.
AdminVerdict CheckAdminRequest(const AdminRequestPolicy& policy,
                               const AdminRequestHeaders& headers);

}  // namespace wsgate
