#include "proxy/upgrade_request.h"

#include <vector>

#include "proxy/http/extensions.h"
#include "proxy/http/request_target.h"
#include "proxy/trusted_peer.h"
#include "proxy/upstream.h"

namespace wsgate {

namespace {

// limits.compression: strip means no deflate offer reaches the backend, so nothing is
// compressed; inspect drops the per-frame deflate drafts, which are never inflated (a backend
// that took one would let a compressed message pass counted by its compressed size). Other
// offers stay. Appends the kept offers to |proxy_fields|; true if any offer was removed.
bool StripCompressionOffers(const http::HeadView& request,
                            config::LimitsConfig::Compression compression,
                            std::string* proxy_fields) {
  if (compression == config::LimitsConfig::Compression::kPassthrough ||
      request.FieldCount("sec-websocket-extensions") == 0) {
    return false;
  }
  bool per_frame_only = compression == config::LimitsConfig::Compression::kInspect;
  std::string kept_fields;
  bool changed = false;
  for (const auto& field : request.parser().fields()) {
    if (!http::EqualsIgnoreCase(request.Get(field.name), "sec-websocket-extensions")) continue;
    std::string kept = http::StripDeflateOffers(request.Get(field.value), per_frame_only);
    if (kept != request.Get(field.value)) changed = true;
    if (!kept.empty()) kept_fields.append("Sec-WebSocket-Extensions: " + kept + "\r\n");
  }
  if (changed) proxy_fields->append(kept_fields);
  return changed;
}

}  // namespace

UpgradePlan PlanUpgrade(const http::HeadView& request, const http::ClientHandshake& handshake,
                        const config::ProxyConfig& config, const UpgradeClient& client,
                        UpstreamAttempt& placement) {
  UpgradePlan plan;
  std::string target;
  http::TargetError target_error =
      http::NormalizeTarget(request.Get(request.parser().target()), config.paths, &target);
  if (target_error != http::TargetError::kNone) {
    plan.status = 400;
    plan.reason = http::TargetErrorReason(target_error);
    return plan;
  }
  std::string_view path = std::string_view(target).substr(0, target.find('?'));
  std::string client_ip = FormatIp(client.peer);
  UpstreamRefusal refusal;
  if (!placement.Place(request, handshake.host, path, client_ip, &refusal)) {
    plan.status = refusal.status;
    plan.reason = refusal.reason;
    return plan;
  }
  plan.expected_accept = http::ComputeAccept(handshake.key);
  plan.path.assign(path);
  std::string id(client.connection_id);
  http::ForwardingInfo info{client_ip, client.tls, id,
                            IsTrustedPeer(config.trusted_proxies, client.peer)};
  info.target = target;
  std::string proxy_fields;
  if (!client.callback_base.empty()) {
    proxy_fields = "X-Wsgate-Connection-Id: " + id +
                   "\r\nX-Wsgate-Callback-Url: " + std::string(client.callback_base) +
                   "/connections/" + id + "\r\n";
  } else if (placement.pool_config().migrate) {
    // A moved session is found again by its id, on any backend of the pool.
    proxy_fields = "X-Wsgate-Connection-Id: " + id + "\r\n";
  }
  const config::AuthConfig& auth = config.auth;
  const config::RouteConfig& route = config.routes[static_cast<size_t>(placement.route_index())];
  plan.authorize = auth.enabled && route.auth && client.auth_available;
  // On every route, a client cannot send the headers the auth service vouches for itself.
  const std::vector<std::string>* drop_fields = &auth.copy_headers;
  std::vector<std::string> drop_with_extensions;
  if (StripCompressionOffers(request, config.limits.compression, &proxy_fields)) {
    drop_with_extensions = auth.copy_headers;
    drop_with_extensions.emplace_back("sec-websocket-extensions");
    drop_fields = &drop_with_extensions;
  }
  plan.upstream_request = http::BuildUpstreamRequest(request, info, proxy_fields, drop_fields);
  if (plan.authorize) {
    plan.auth_headers = AuthRequestHeaders(request, auth, client_ip, id, target);
    if (auth.cache_ttl.count() > 0) plan.auth_cache_key = AuthCacheKey(request, auth, target);
  }
  return plan;
}

}  // namespace wsgate
