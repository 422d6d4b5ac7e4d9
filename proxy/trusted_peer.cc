#include "proxy/trusted_peer.h"

#include <netinet/in.h>

#include "config/units.h"

namespace wsgate {

bool IsTrustedPeer(const std::vector<config::Cidr>& trusted_proxies, const sockaddr* peer) {
  if (trusted_proxies.empty() || peer == nullptr) return false;
  const uint8_t* v4 = nullptr;
  const uint8_t* v6 = nullptr;
  if (peer->sa_family == AF_INET) {
    v4 = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(peer)->sin_addr);
  } else if (peer->sa_family == AF_INET6) {
    const in6_addr& address = reinterpret_cast<const sockaddr_in6*>(peer)->sin6_addr;
    v6 = address.s6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&address)) v4 = address.s6_addr + 12;
  }
  for (const config::Cidr& cidr : trusted_proxies) {
    if (v6 != nullptr && config::CidrContains(cidr, true, v6)) return true;
    if (v4 != nullptr && config::CidrContains(cidr, false, v4)) return true;
  }
  return false;
}

}  // namespace wsgate
