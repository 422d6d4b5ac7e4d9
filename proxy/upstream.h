// Upstream (backend-side) connection helpers: address resolution and non-blocking connect.
#pragma once

#include <string>

#include "config/config.h"
#include "proxy/balancer.h"
#include "proxy/core/libevent_ptr.h"
#include "proxy/tls/tls_context.h"

namespace wsgate {

// Resolve |address| (numeric or DNS name, blocking; done at start-up) with
// config::ResolveHostPort, the resolver config validation uses too.
bool ResolveAddress(const config::HostPort& address, sockaddr_storage* out, socklen_t* out_len,
                    std::string* error);

// Start a non-blocking connect to |backend|. The bufferevent reports BEV_EVENT_CONNECTED or an
// error through its event callback (callbacks are deferred, never run inside this call).
// With |tls| the connection speaks TLS and BEV_EVENT_CONNECTED comes after a verified handshake.
// Returns null if the socket could not even be created.
BufferEventPtr StartConnect(event_base* base, const Backend& backend,
                            const tls::ClientContext* tls = nullptr);

// A non-blocking TCP_NODELAY socket with a connect() to |backend| under way (or done). Returns -1,
// with errno, if the socket could not be made or the connect failed at once.
evutil_socket_t StartConnectSocket(const Backend& backend);

// Set TCP_NODELAY: frames are small and latency matters more than packet count.
void SetNoDelay(evutil_socket_t fd);

// "1.2.3.4:5678" or "[::1]:5678".
std::string FormatSockaddr(const sockaddr* addr);
// The address alone, for X-Forwarded-For.
std::string FormatIp(const sockaddr* addr);

}  // namespace wsgate
