#include "proxy/server.h"

#include <csignal>
#include <cstdio>
#include <fstream>

#include "proxy/core/log.h"
#include "proxy/upstream.h"

namespace wsgate {

Server::Server(config::ProxyConfig config) : config_(std::move(config)) {}

Server::~Server() {
  // Sessions hold bufferevents on loop_'s base: free them before the loop goes.
  listeners_.clear();
  registry_.Clear();
}

std::unique_ptr<Server> Server::Create(config::ProxyConfig config, std::string* error) {
  std::unique_ptr<Server> server(new Server(std::move(config)));
  std::vector<std::string> pool_names;
  for (const auto& pool_config : server->config_.pools) {
    Pool pool;
    pool.name = pool_config.name;
    pool.balancer = MakeBalancer(pool_config.balance);
    for (const auto& backend_config : pool_config.backends) {
      Backend backend;
      backend.address = backend_config.address.text;
      backend.weight = backend_config.weight;
      if (!ResolveAddress(backend_config.address, &backend.sockaddr, &backend.sockaddr_len,
                          error)) {
        *error = "pool " + pool.name + ": " + *error;
        return nullptr;
      }
      pool.backends.push_back(std::move(backend));
    }
    pool_names.push_back(pool.name);
    server->pools_.push_back(std::move(pool));
  }
  server->router_.emplace(server->config_.routes, pool_names);
  server->context_.emplace(SessionContext{server->loop_, server->config_, *server->router_,
                                          server->pools_, server->registry_});
  for (const auto& listener_config : server->config_.listeners) {
    auto listener = std::make_unique<Listener>(*server->context_, listener_config);
    if (!listener->Bind(error)) return nullptr;
    LOG_INFO("listener=" + listener->name() + " listening on " + listener->BoundAddress());
    server->listeners_.push_back(std::move(listener));
  }
  if (server->config_.workers != 1) {
    LOG_WARN("workers=" + std::to_string(server->config_.workers) +
             " requested; this build runs one event-loop thread");
  }
  for (int signo : {SIGTERM, SIGINT}) {
    EventPtr ev(evsignal_new(server->loop_.base(), signo, &Server::OnStopSignal, server.get()));
    evsignal_add(ev.get(), nullptr);
    server->signal_events_.push_back(std::move(ev));
  }
  return server;
}

bool Server::WriteReadyFile(const std::string& path, std::string* error) const {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) {
      *error = "cannot write ready file " + tmp;
      return false;
    }
    for (const auto& listener : listeners_) {
      out << listener->name() << " " << listener->BoundAddress() << "\n";
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    *error = "cannot rename ready file to " + path;
    return false;
  }
  return true;
}

void Server::OnStopSignal(evutil_socket_t signo, short, void* ctx) {
  auto* self = static_cast<Server*>(ctx);
  LOG_INFO(std::string("received ") + (signo == SIGTERM ? "SIGTERM" : "SIGINT") + ", stopping with " +
           std::to_string(self->registry_.size()) + " connections open");
  self->loop_.Exit();
}

int Server::Run() {
  loop_.Run();
  listeners_.clear();
  registry_.Clear();
  LOG_INFO("stopped");
  return 0;
}

}  // namespace wsgate
