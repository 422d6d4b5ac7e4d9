// What the server listens on: the public listeners and the admin listener, kept across reloads
// (an unchanged address keeps its socket and accept queue), taken over from the previous
// process on a binary upgrade, and retried while the admin address is still taken.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "proxy/core/log.h"
#include "proxy/server.h"
#include "proxy/upstream.h"

namespace wsgate {

void AppendServerError(std::string* errors, const std::string& error) {
  if (!errors->empty()) *errors += "; ";
  *errors += error;
}

namespace {

// Whether |fd| listens on |address|: the same IP address (as binding it would resolve it) and
// port (any port is fine for port 0). A socket on another IP must not be adopted: moving the
// admin listener from 0.0.0.0:9901 (with a token) to 127.0.0.1:9901 (where none is required)
// would otherwise leave the token-less admin API on every interface.
bool ListensOn(int fd, const config::HostPort& address) {
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) != 0) return false;
  sockaddr_storage wanted{};
  socklen_t wanted_len = 0;
  std::string error;
  if (!ResolveAddress(address, &wanted, &wanted_len, &error)) return false;
  if (bound.ss_family != wanted.ss_family) return false;
  if (bound.ss_family == AF_INET) {
    const auto& b = reinterpret_cast<const sockaddr_in&>(bound);
    const auto& w = reinterpret_cast<const sockaddr_in&>(wanted);
    return b.sin_addr.s_addr == w.sin_addr.s_addr &&
           (address.port == 0 || ntohs(b.sin_port) == address.port);
  }
  if (bound.ss_family == AF_INET6) {
    const auto& b = reinterpret_cast<const sockaddr_in6&>(bound);
    const auto& w = reinterpret_cast<const sockaddr_in6&>(wanted);
    return std::memcmp(&b.sin6_addr, &w.sin6_addr, sizeof(in6_addr)) == 0 &&
           (address.port == 0 || ntohs(b.sin6_port) == address.port);
  }
  return false;
}

}  // namespace

Status Server::SyncListeners() {
  std::string errors;
  const auto& wanted = current_->config.listeners;
  // Keep every listener whose name is still configured: one with an unchanged address keeps its
  // socket (and accept queue), so no connection attempt is refused across a reload; one whose
  // address changed is replaced only once the new address is bound.
  std::vector<std::unique_ptr<Listener>> kept;
  for (auto& listener : listeners_) {
    bool still_wanted = false;
    for (const auto& config : wanted) {
      if (config.name == listener->name()) still_wanted = true;
    }
    if (still_wanted) {
      kept.push_back(std::move(listener));
    } else {
      LOG_INFO("listener=" + listener->name() + " closed");
    }
  }
  listeners_ = std::move(kept);
  for (const auto& config : wanted) {
    auto existing = std::find_if(listeners_.begin(), listeners_.end(),
                                 [&](const auto& l) { return l->name() == config.name; });
    if (existing != listeners_.end() && (*existing)->address_text() == config.address.text) {
      continue;
    }
    auto on_accept = [this](evutil_socket_t fd, const sockaddr* peer, const std::string& name) {
      OnAccept(fd, peer, name);
    };
    auto listener = std::make_unique<Listener>(loop_.base(), config, on_accept);
    int inherited = takeover_ != nullptr ? takeover_->Take(config.name) : -1;
    bool adopted = false;
    if (inherited >= 0) {
      std::string adopt_error;  // not fatal: bound afresh below
      adopted = listener->Adopt(inherited, &adopt_error);
      // A listener whose address changed in the new config is bound afresh.
      if (adopted && config.address.port != 0 && listener->BoundAddress() != config.address.text &&
          listener->BoundAddress().substr(listener->BoundAddress().rfind(':')) !=
              ":" + std::to_string(config.address.port)) {
        listener = std::make_unique<Listener>(loop_.base(), config, on_accept);
        adopted = false;
      }
    }
    std::string bind_error;
    if (!adopted && !listener->Bind(&bind_error)) {
      if (existing != listeners_.end()) {
        bind_error += " (listener=" + config.name + " keeps listening on " +
                      (*existing)->BoundAddress() + ")";
      }
      AppendServerError(&errors, bind_error);
      continue;
    }
    LOG_INFO("listener=" + listener->name() + (adopted ? " took over " : " listening on ") +
             listener->BoundAddress());
    if (existing != listeners_.end()) {
      LOG_INFO("listener=" + config.name + " closed " + (*existing)->BoundAddress());
      *existing = std::move(listener);
    } else {
      listeners_.push_back(std::move(listener));
    }
  }
  if (!errors.empty()) return Fail(std::move(errors));
  return {};
}

Status Server::SyncAdmin() {
  const config::AdminConfig& admin = current_->config.admin;
  if (!admin.enabled) {
    admin_.reset();
    admin_address_text_.clear();
    return {};
  }
  std::string kept_error;  // the new address failed, the old one still serves
  if (!admin_ || admin.address.text != admin_address_text_) {
    int inherited = takeover_ != nullptr ? takeover_->Take(kAdminHandoverSocket) : -1;
    if (inherited >= 0 && !ListensOn(inherited, admin.address)) {
      close(inherited);  // the new config moved the admin listener: bind afresh
      inherited = -1;
    }
    // A new address is bound before the old one closes, so a failed reload keeps the old.
    std::string bind_error;
    std::unique_ptr<AdminServer> next = AdminServer::Create(
        loop_.base(), admin.address, admin.token, *this, inherited, &bind_error);
    if (next) {
      admin_ = std::move(next);
      admin_address_text_ = admin.address.text;
      LOG_INFO(std::string("admin ") + (inherited >= 0 ? "took over " : "listening on ") +
               admin_->BoundAddress());
    } else if (!admin_ && takeover_ != nullptr && inherited < 0) {
      // Upgrading from a wsgate that does not hand its admin socket over: it holds the address
      // until it exits, so bind it then instead of failing the upgrade.
      LOG_WARN("upgrade: " + bind_error +
               "; binding it again every 500ms until the old process "
               "releases it");
      ArmAdminRetry();
      return {};
    } else if (!admin_) {
      return Fail(std::move(bind_error));
    } else {
      kept_error = bind_error + " (admin keeps listening on " + admin_->BoundAddress() + ")";
    }
  }
  // A listener kept on its old address never loses its token: "no token" is only allowed for the
  // new (loopback) address, and the kept one may be on 0.0.0.0. A new token still applies.
  if (kept_error.empty() || !admin.token.empty()) admin_->set_token(admin.token);
  admin_->set_request_policy(admin);
  // A pushed message may be as large as a relayed one; bodies beyond that never reach us.
  uint64_t max_message = current_->config.limits.max_message_bytes;
  admin_->set_max_body_size(static_cast<size_t>(std::max<uint64_t>(64 * 1024, max_message + 1)));
  admin_->set_connections_api(connections_api_.get());
  connections_api_->set_max_message_bytes(max_message);
  connection_index_.set_public_url(admin.public_url.empty() ? "http://" + admin_->BoundAddress()
                                                            : admin.public_url);
  if (!kept_error.empty()) return Fail(std::move(kept_error));
  return {};
}

Status Server::JoinFleet() {
  const config::ProxyConfig& config = current_->config;
  if (!config.cluster.enabled) return {};
  if (!admin_) {
    return Fail("cluster: the admin listener is not up, so no other instance can reach us");
  }
  std::string advertise = config.cluster.advertise;
  if (advertise.empty()) advertise = connection_index_.public_url();
  if (advertise.rfind("http://", 0) != 0) {
    return Fail("cluster: admin.public_url " + advertise +
                " is not http://; set cluster.advertise to the admin listener's http:// URL");
  }
  fleet_ = std::make_unique<Fleet>(loop_, config.cluster, advertise, config.admin.token,
                                   connection_index_);
  connection_index_.set_observer(fleet_.get());
  connection_index_.set_user_gate(fleet_.get());
  connections_api_->set_fleet(fleet_.get());
  fleet_->Start([this](const GroupOp& op) { connections_api_->DeliverGroup(op, [](size_t) {}); });
  return {};
}

void Server::ArmAdminRetry() {
  if (!admin_retry_timer_) {
    admin_retry_timer_.reset(evtimer_new(loop_.base(), &Server::OnAdminRetry, this));
  }
  timeval half_second{0, 500 * 1000};
  evtimer_add(admin_retry_timer_.get(), &half_second);
}

void Server::OnAdminRetry(evutil_socket_t, short, void* ctx) {
  auto* self = static_cast<Server*>(ctx);
  if (self->admin_ || self->phase_ != Phase::kServing) return;
  if (!self->SyncAdmin()) {
    self->ArmAdminRetry();
    return;
  }
  std::string error;
  if (!self->ready_file_.empty() && !self->WriteReadyFile(self->ready_file_, &error)) {
    LOG_ERROR(error);
  }
}

}  // namespace wsgate
