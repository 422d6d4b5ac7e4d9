#include "proxy/handover.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "proxy/core/log.h"

namespace wsgate {
namespace {

constexpr const char* kRequest = "TAKEOVER 1\n";
constexpr size_t kMaxSockets = 64;

bool MakeAddress(const std::string& path, sockaddr_un* addr, std::string* error) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr->sun_path)) {
    *error = "upgrade socket path too long: " + path;
    return false;
  }
  std::memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return true;
}

// Read one '\n'-terminated line from a blocking socket, waiting at most |timeout_ms|.
bool ReadLine(int fd, int timeout_ms, std::string* line) {
  line->clear();
  while (line->size() < 256) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    char c = 0;
    ssize_t n = read(fd, &c, 1);
    if (n <= 0) return false;
    if (c == '\n') return true;
    line->push_back(c);
  }
  return false;
}

bool WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// New process.

std::unique_ptr<TakeoverClient> TakeoverClient::Connect(const std::string& path,
                                                        std::string* error) {
  sockaddr_un addr{};
  if (!MakeAddress(path, &addr, error)) return nullptr;
  std::unique_ptr<TakeoverClient> client(new TakeoverClient());
  client->fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (client->fd_ < 0 ||
      connect(client->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    *error = std::string("no running wsgate at ") + path + ": " + std::strerror(errno);
    return nullptr;
  }
  if (!WriteAll(client->fd_, kRequest)) {
    *error = "cannot talk to the running wsgate";
    return nullptr;
  }
  pollfd p{client->fd_, POLLIN, 0};
  if (poll(&p, 1, 5000) <= 0) {
    *error = "the running wsgate did not answer the takeover request";
    return nullptr;
  }
  char payload[4096];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxSockets)];
  iovec iov{payload, sizeof(payload) - 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = recvmsg(client->fd_, &msg, MSG_CMSG_CLOEXEC);
  if (n <= 0) {
    *error = "the running wsgate closed the takeover connection";
    return nullptr;
  }
  std::vector<int> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const int* data = reinterpret_cast<const int*>(CMSG_DATA(c));
    fds.assign(data, data + count);
  }
  // Payload: one listener name per line, in the order of the descriptors.
  std::string names(payload, static_cast<size_t>(n));
  size_t pos = 0;
  for (int fd : fds) {
    size_t newline = names.find('\n', pos);
    if (newline == std::string::npos) {
      close(fd);
      continue;
    }
    client->sockets_[names.substr(pos, newline - pos)] = fd;
    pos = newline + 1;
  }
  return client;
}

TakeoverClient::~TakeoverClient() {
  for (auto& [name, fd] : sockets_) {
    if (fd >= 0) close(fd);
  }
  if (fd_ >= 0) close(fd_);
}

int TakeoverClient::Take(const std::string& name) {
  auto it = sockets_.find(name);
  if (it == sockets_.end()) return -1;
  int fd = it->second;
  sockets_.erase(it);
  return fd;
}

bool TakeoverClient::SendReady(std::string* error) {
  std::string line;
  if (!WriteAll(fd_, "READY\n") || !ReadLine(fd_, 5000, &line) || line != "OK") {
    *error = "the old wsgate did not acknowledge the takeover";
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Old process.

std::unique_ptr<HandoverServer> HandoverServer::Create(event_base* base, const std::string& path,
                                                       Callbacks& callbacks, std::string* error) {
  sockaddr_un addr{};
  if (!MakeAddress(path, &addr, error)) return nullptr;
  std::unique_ptr<HandoverServer> server(new HandoverServer(callbacks));
  server->path_ = path;
  server->listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  // A previous process's socket file (stale, or the one we just took over from) is replaced.
  unlink(path.c_str());
  mode_t old_mask = umask(0077);  // only the same user may take the listeners over
  int rc = server->listen_fd_ < 0
               ? -1
               : bind(server->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  umask(old_mask);
  if (rc != 0 || listen(server->listen_fd_, 4) != 0) {
    *error = "cannot listen on upgrade socket " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  server->accept_event_.reset(event_new(base, server->listen_fd_, EV_READ | EV_PERSIST,
                                        &HandoverServer::OnAccept, server.get()));
  event_add(server->accept_event_.get(), nullptr);
  return server;
}

HandoverServer::~HandoverServer() {
  accept_event_.reset();
  ClosePeer();
  if (listen_fd_ >= 0) close(listen_fd_);
}

void HandoverServer::ClosePeer() {
  peer_event_.reset();
  if (peer_fd_ >= 0) close(peer_fd_);
  peer_fd_ = -1;
}

void HandoverServer::OnAccept(evutil_socket_t fd, short, void* ctx) {
  auto* self = static_cast<HandoverServer*>(ctx);
  int peer = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (peer < 0) return;
  if (self->peer_fd_ >= 0) {
    close(peer);  // one takeover at a time
    return;
  }
  // The exchange is a few bytes on a local socket: do the request part synchronously.
  std::string line;
  if (!ReadLine(peer, 1000, &line) || line + "\n" != kRequest) {
    close(peer);
    return;
  }
  std::string names;
  std::vector<int> fds;
  for (const auto& [name, listener_fd] : self->callbacks_.ListenerSockets()) {
    if (fds.size() == kMaxSockets) break;
    names += name + "\n";
    fds.push_back(listener_fd);
  }
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxSockets)];
  std::memset(control, 0, sizeof(control));
  iovec iov{names.data(), names.size()};
  if (names.empty()) iov = iovec{const_cast<char*>("\n"), 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  if (sendmsg(peer, &msg, MSG_NOSIGNAL) < 0) {
    close(peer);
    return;
  }
  LOG_INFO("upgrade: handed " + std::to_string(fds.size()) +
           " listening socket(s) to a new process; waiting for it to be ready");
  self->peer_fd_ = peer;
  evutil_make_socket_nonblocking(peer);
  self->peer_event_.reset(event_new(event_get_base(self->accept_event_.get()), peer,
                                    EV_READ | EV_PERSIST, &HandoverServer::OnPeerReadable, self));
  event_add(self->peer_event_.get(), nullptr);
}

void HandoverServer::OnPeerReadable(evutil_socket_t fd, short, void* ctx) {
  auto* self = static_cast<HandoverServer*>(ctx);
  char buffer[64];
  ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    // The new process went away before it was ready: keep serving as before.
    LOG_WARN("upgrade: the new process disconnected before taking over; still serving");
    self->ClosePeer();
    return;
  }
  if (std::string(buffer, static_cast<size_t>(n)).find("READY") == std::string::npos) return;
  self->callbacks_.OnHandedOver();
  WriteAll(fd, "OK\n");
  self->ClosePeer();
  // The new process owns the path now; stop answering on our copy.
  self->accept_event_.reset();
  close(self->listen_fd_);
  self->listen_fd_ = -1;
}

}  // namespace wsgate
