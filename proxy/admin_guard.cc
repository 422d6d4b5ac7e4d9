#include "proxy/admin_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>

namespace wsgate {
namespace {

std::string Lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool IsHostChar(char c) {
  // RFC 3986 reg-name characters (unreserved and sub-delims) and '%'; no ':' outside brackets.
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
         c == '~' || c == '%' || c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' ||
         c == ')' || c == '*' || c == '+' || c == ',' || c == ';' || c == '=';
}

bool IsPort(std::string_view port) {
  if (port.empty() || port.size() > 5) return false;
  return std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

std::optional<std::string> HostOfHostHeader(std::string_view value) {
  if (value.empty()) return std::nullopt;
  std::string_view host;
  std::string_view rest;
  if (value.front() == '[') {
    const size_t close = value.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = value.substr(1, close - 1);
    rest = value.substr(close + 1);
    std::string v6(host);
    in6_addr addr{};
    if (inet_pton(AF_INET6, v6.c_str(), &addr) != 1) return std::nullopt;
  } else {
    const size_t colon = value.find(':');
    host = value.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view() : value.substr(colon);
    if (host.empty() || !std::all_of(host.begin(), host.end(), IsHostChar)) return std::nullopt;
  }
  if (!rest.empty() && (rest.front() != ':' || !IsPort(rest.substr(1)))) return std::nullopt;
  return Lower(host);
}

bool IsIpLiteral(const std::string& host) {
  in_addr v4{};
  in6_addr v6{};
  return inet_pton(AF_INET, host.c_str(), &v4) == 1 || inet_pton(AF_INET6, host.c_str(), &v6) == 1;
}

AdminRequestPolicy MakeAdminRequestPolicy(const std::string& bound_host,
                                          const std::string& configured_host,
                                          const std::string& public_url,
                                          const std::vector<std::string>& allowed_hosts,
                                          const std::vector<std::string>& allowed_origins) {
  AdminRequestPolicy policy;
  policy.hosts = {"localhost", "127.0.0.1", "::1", Lower(bound_host), Lower(configured_host)};
  if (size_t scheme = public_url.find("://"); scheme != std::string::npos) {
    std::string_view authority = std::string_view(public_url).substr(scheme + 3);
    authority = authority.substr(0, authority.find('/'));
    if (std::optional<std::string> host = HostOfHostHeader(authority)) {
      policy.hosts.push_back(*host);
    }
  }
  for (const std::string& host : allowed_hosts) policy.hosts.push_back(Lower(host));
  policy.any_ip_literal = bound_host == "0.0.0.0" || bound_host == "::";
  policy.origins = allowed_origins;
  return policy;
}

AdminVerdict CheckAdminRequest(const AdminRequestPolicy& policy,
                               const AdminRequestHeaders& headers) {
  if (headers.host_count > 1) return AdminVerdict::kBadHost;
  if (headers.host) {
    std::optional<std::string> host = HostOfHostHeader(*headers.host);
    if (!host) return AdminVerdict::kBadHost;
    const bool listed =
        std::find(policy.hosts.begin(), policy.hosts.end(), *host) != policy.hosts.end();
    if (!listed && !(policy.any_ip_literal && IsIpLiteral(*host))) return AdminVerdict::kBadHost;
  }
  bool origin_allowed = false;
  if (headers.origin_count > 1) return AdminVerdict::kBadOrigin;
  if (headers.origin) {
    origin_allowed = std::find(policy.origins.begin(), policy.origins.end(), *headers.origin) !=
                     policy.origins.end();
    if (!origin_allowed) return AdminVerdict::kBadOrigin;
  }
  // Browsers send Sec-Fetch-Site: none only for what the user typed or bookmarked.
  if (headers.fetch_site && *headers.fetch_site != "none" && !origin_allowed) {
    return AdminVerdict::kBadFetchSite;
  }
  return AdminVerdict::kAllowed;
}

}  // namespace wsgate
