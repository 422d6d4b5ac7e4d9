// Pull a sticky-routing key out of an upgrade request: a cookie, a header, a query parameter,
// the client address or the path. Pure; no libevent.
#pragma once

#include <string>
#include <string_view>

#include "config/config.h"
#include "proxy/http/head_parser.h"

namespace wsgate::http {

// Value of cookie |name| in the request's Cookie fields (RFC 6265 §5.4 "a=b; c=d"), if present.
bool FindCookie(const HeadView& request, std::string_view name, std::string_view* value);

// Value of query parameter |name| in |target| ("/p?a=1&b=2"), raw (not percent-decoded).
bool FindQueryParameter(std::string_view target, std::string_view name, std::string_view* value);

// The key |config| asks for; false when the request has none (or it is empty).
bool ExtractStickyKey(const HeadView& request, const config::StickyConfig& config,
                      std::string_view client_ip, std::string_view path, std::string* key);

}  // namespace wsgate::http
