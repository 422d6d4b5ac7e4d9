// Whether a connecting peer is one of the configured trusted_proxies, whose X-Forwarded-*,
// X-Real-IP and Forwarded fields wsgate believes (http::ForwardingInfo::peer_trusted). Pure.
#pragma once

#include <sys/socket.h>

#include <vector>

#include "config/config.h"

namespace wsgate {

// An IPv4-mapped IPv6 peer (::ffff:a.b.c.d on a dual-stack listener) matches IPv4 entries too.
bool IsTrustedPeer(const std::vector<config::Cidr>& trusted_proxies, const sockaddr* peer);

}  // namespace wsgate
