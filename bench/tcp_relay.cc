// tcp_relay: the cheapest possible proxy, a reference target for compare.sh (`relay`).
//
// It accepts TCP connections, opens one to the backend with the fewest active connections and
// copies bytes both ways: no HTTP, no WebSocket, no parsing. It uses raw epoll on purpose, not
// libevent like the rest of the tree: it stands for the floor of any epoll-based user-space
// proxy, one read() and one write() per chunk and an epoll_ctl only when backpressure starts
// or ends, so what it costs on the proxy's core is the kernel's TCP work and little else.
// Single-threaded, level-triggered, IPv4 only.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr size_t kBufferSize = 256 * 1024;  // one read()'s worth, shared by every connection

struct Backend {
  sockaddr_in addr{};
  int active = 0;  // open pairs, for least-connections
};

struct Pair;
struct End {  // one socket of a pair; epoll_event.data.ptr points here
  int fd = -1;
  uint32_t mask = 0;  // events registered with epoll; 0 = not in the epoll set
  Pair* pair = nullptr;
};

// One direction: bytes read from `from`, written to `to`.
struct Flow {
  Flow(End* source, End* sink) : from(source), to(sink) {}
  End* from;
  End* to;
  std::vector<char> pending;  // what `to` did not take yet; freed once drained
  size_t sent = 0;            // of pending
  bool eof = false;           // `from` reached EOF
  bool done = false;          // all written and `to` shut down for writing
};

struct Pair {
  End client, backend;
  Flow up{&client, &backend};
  Flow down{&backend, &client};
  Backend* target = nullptr;
  bool connected = false;  // the backend connect completed
  bool closed = false;     // fds closed; freed after the current epoll_wait batch
  size_t slot = 0;         // index in Relay::pairs_

  // Bytes for the backend wait until its connect has completed.
  bool CanWrite(const Flow& flow) const { return flow.to != &backend || connected; }
};

class Relay {
 public:
  Relay(int epoll_fd, std::vector<Backend> backends)
      : epoll_(epoll_fd), backends_(std::move(backends)), buffer_(kBufferSize) {}

  // Accepts until EAGAIN; each client gets its backend connection at once.
  void AcceptAll(int listen_fd) {
    for (;;) {
      int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        Open(fd);
      } else if (errno == EINTR || errno == ECONNABORTED) {
        continue;
      } else {
        // EAGAIN: all taken. EMFILE and the like: the listener stays readable and is tried
        // again on the next wakeup (said once, not on every try).
        if (errno != EAGAIN && errno != EWOULDBLOCK && !accept_failed_) {
          std::perror("tcp_relay: accept4");
          accept_failed_ = true;
        }
        return;
      }
    }
  }

  void OnEvent(End& end, uint32_t events) {
    Pair& p = *end.pair;
    if (p.closed) return;  // closed by an earlier event of this batch
    if (events & EPOLLERR) return Close(p);
    bool is_backend = &end == &p.backend;
    if (is_backend && !p.connected) {  // first EPOLLOUT after connect(): did it succeed?
      int error = 0;
      socklen_t length = sizeof(error);
      if (getsockopt(end.fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0) {
        return Close(p);
      }
      p.connected = true;
    }
    Flow& into = is_backend ? p.up : p.down;  // writes to this socket
    Flow& from = is_backend ? p.down : p.up;  // reads from it
    if ((events & EPOLLOUT) && !Flush(p, into)) return;
    // EPOLLHUP comes with the peer's FIN in (and our SHUT_WR out): read what is left even if
    // `from` has pending bytes, or the level-triggered HUP would fire again and again.
    if ((events & (EPOLLIN | EPOLLHUP)) && !from.eof && !Read(p, from)) return;
    Update(p);
  }

  void FreeClosed() { closed_.clear(); }

 private:
  Backend& LeastConnected() {
    // Ties go round-robin, so equally loaded backends share the new connections.
    size_t best = next_ % backends_.size();
    for (size_t i = 1; i < backends_.size(); ++i) {
      size_t b = (next_ + i) % backends_.size();
      if (backends_[b].active < backends_[best].active) best = b;
    }
    ++next_;
    return backends_[best];
  }

  void Open(int client_fd) {
    Backend& target = LeastConnected();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
      if (fd >= 0) close(fd);
      close(client_fd);
      return;
    }
    int rc = connect(fd, reinterpret_cast<const sockaddr*>(&target.addr), sizeof(target.addr));
    if (rc != 0 && errno != EINPROGRESS) {
      close(fd);
      close(client_fd);
      return;
    }
    auto owned = std::make_unique<Pair>();
    Pair& p = *owned;
    p.client = {client_fd, 0, &p};
    p.backend = {fd, 0, &p};
    p.target = &target;
    p.connected = rc == 0;
    p.slot = pairs_.size();
    pairs_.push_back(std::move(owned));
    ++target.active;
    Update(p);
  }

  // write() that closes the pair on a real error: bytes taken (0 if the socket is full), or -1
  // if the pair was closed.
  ssize_t WriteOrClose(Pair& p, int fd, const char* data, size_t n) {
    ssize_t w = write(fd, data, n);
    if (w >= 0) return w;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    Close(p);
    return -1;
  }

  // Writes to `flow.to` what it takes and keeps the rest. False if the pair was closed.
  bool Send(Pair& p, Flow& flow, const char* data, size_t n) {
    if (p.CanWrite(flow) && flow.pending.empty()) {
      ssize_t w = WriteOrClose(p, flow.to->fd, data, n);
      if (w < 0) return false;
      data += w;
      n -= static_cast<size_t>(w);
    }
    flow.pending.insert(flow.pending.end(), data, data + n);
    return true;
  }

  bool Flush(Pair& p, Flow& flow) {
    if (flow.pending.empty()) return true;
    ssize_t w = WriteOrClose(p, flow.to->fd, flow.pending.data() + flow.sent,
                             flow.pending.size() - flow.sent);
    if (w < 0) return false;
    flow.sent += static_cast<size_t>(w);
    if (flow.sent == flow.pending.size()) {  // drained: give the memory back
      std::vector<char>().swap(flow.pending);
      flow.sent = 0;
    }
    return true;
  }

  bool Read(Pair& p, Flow& flow) {
    ssize_t n = read(flow.from->fd, buffer_.data(), buffer_.size());
    if (n > 0) return Send(p, flow, buffer_.data(), static_cast<size_t>(n));
    if (n == 0) {
      flow.eof = true;
      return true;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return true;
    Close(p);
    return false;
  }

  // Passes a finished direction's EOF on, closes the pair when both are done, and otherwise
  // sets each socket's epoll events to what it is waiting for.
  void Update(Pair& p) {
    for (Flow* flow : {&p.up, &p.down}) {
      if (flow->eof && !flow->done && flow->pending.empty() && p.CanWrite(*flow)) {
        shutdown(flow->to->fd, SHUT_WR);
        flow->done = true;
      }
    }
    if (p.up.done && p.down.done) return Close(p);
    // Read from a socket only while nothing it sent is still waiting: that is the backpressure.
    auto reading = [](const Flow& f) { return !f.eof && f.pending.empty() ? EPOLLIN : 0u; };
    auto writing = [](const Flow& f) { return f.pending.empty() ? 0u : EPOLLOUT; };
    Watch(p.client, reading(p.up) | writing(p.down));
    Watch(p.backend, p.connected ? reading(p.down) | writing(p.up) : EPOLLOUT);
  }

  // One epoll_ctl, only when the events change. A socket that waits for nothing leaves the set
  // (a registered one would still report EPOLLHUP, over and over).
  void Watch(End& end, uint32_t mask) {
    if (mask == end.mask || end.pair->closed) return;
    epoll_event ev{};
    ev.events = mask;
    ev.data.ptr = &end;
    int op = end.mask == 0 ? EPOLL_CTL_ADD : mask == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(epoll_, op, end.fd, &ev) != 0) {
      std::perror("tcp_relay: epoll_ctl");
      return Close(*end.pair);
    }
    end.mask = mask;
  }

  void Close(Pair& p) {
    if (p.closed) return;
    p.closed = true;
    close(p.client.fd);  // also leaves the epoll set
    close(p.backend.fd);
    --p.target->active;
    // Swap-remove from pairs_; the memory lives until FreeClosed, as the current batch of
    // events may still point into it.
    size_t slot = p.slot;
    closed_.push_back(std::move(pairs_[slot]));
    if (slot + 1 != pairs_.size()) {
      pairs_[slot] = std::move(pairs_.back());
      pairs_[slot]->slot = slot;
    }
    pairs_.pop_back();
  }

  int epoll_;
  std::vector<Backend> backends_;
  std::vector<char> buffer_;
  size_t next_ = 0;  // where the least-connections scan starts
  bool accept_failed_ = false;
  std::vector<std::unique_ptr<Pair>> pairs_;
  std::vector<std::unique_ptr<Pair>> closed_;
};

bool ParseAddress(const std::string& text, sockaddr_in* addr) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = text.substr(0, colon);
  int port = std::atoi(text.c_str() + colon + 1);
  addr->sin_family = AF_INET;
  addr->sin_port = htons(static_cast<uint16_t>(port));
  return port > 0 && port < 65536 && inet_pton(AF_INET, host.c_str(), &addr->sin_addr) == 1;
}

int Listen(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // accepted sockets inherit it
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 4096) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

constexpr const char* kUsage =
    "Usage: tcp_relay -l PORT [-r READY_FILE] -b HOST:PORT [-b HOST:PORT ...]\n"
    "  -l PORT          listen on 127.0.0.1:PORT (0: pick one, printed and written to READY_FILE)\n"
    "  -r READY_FILE    write \"127.0.0.1:PORT\" there once listening\n"
    "  -b HOST:PORT     a backend (IPv4); new connections go to the least connected\n";

}  // namespace

int main(int argc, char** argv) {
  int listen_port = -1;
  std::string ready_file;
  std::vector<Backend> backends;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc || (arg != "-l" && arg != "-r" && arg != "-b")) {
      std::fprintf(stderr, "tcp_relay: bad argument \"%s\"\n%s", arg.c_str(), kUsage);
      return 2;
    }
    std::string value = argv[++i];
    if (arg == "-l") {
      listen_port = std::atoi(value.c_str());
    } else if (arg == "-r") {
      ready_file = value;
    } else if (Backend b; ParseAddress(value, &b.addr)) {
      backends.push_back(b);
    } else {
      std::fprintf(stderr, "tcp_relay: bad backend \"%s\" (want IPv4:PORT)\n", value.c_str());
      return 2;
    }
  }
  if (listen_port < 0 || listen_port > 65535 || backends.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }

  // Two descriptors per proxied connection: take all the open files we are allowed.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  std::signal(SIGPIPE, SIG_IGN);  // a write to a reset peer returns EPIPE instead
  // SIGTERM and SIGINT arrive through a signalfd in the epoll set: the loop ends cleanly.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigprocmask(SIG_BLOCK, &stop_signals, nullptr);
  int signal_fd = signalfd(-1, &stop_signals, SFD_NONBLOCK | SFD_CLOEXEC);

  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0 || signal_fd < 0) {
    std::perror("tcp_relay: epoll_create1/signalfd");
    return 1;
  }
  int listen_fd = Listen(static_cast<uint16_t>(listen_port));
  if (listen_fd < 0) {
    std::fprintf(stderr, "tcp_relay: cannot listen on 127.0.0.1:%d: %s\n", listen_port,
                 std::strerror(errno));
    return 1;
  }
  // data.ptr tells the events apart: these two tags, or a connection's End.
  static char listener_tag, signal_tag;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &listener_tag;
  epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev);
  ev.data.ptr = &signal_tag;
  epoll_ctl(epoll_fd, EPOLL_CTL_ADD, signal_fd, &ev);

  sockaddr_in bound{};
  socklen_t length = sizeof(bound);
  getsockname(listen_fd, reinterpret_cast<sockaddr*>(&bound), &length);
  std::string where = "127.0.0.1:" + std::to_string(ntohs(bound.sin_port));
  if (!ready_file.empty()) {
    std::string tmp = ready_file + ".tmp";  // renamed into place: readers never see it half
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (f == nullptr || std::fprintf(f, "%s\n", where.c_str()) < 0 || std::fclose(f) != 0 ||
        std::rename(tmp.c_str(), ready_file.c_str()) != 0) {
      std::fprintf(stderr, "tcp_relay: cannot write %s\n", ready_file.c_str());
      return 1;
    }
  }
  std::printf("tcp_relay listening on %s, %zu backend(s)\n", where.c_str(), backends.size());
  std::fflush(stdout);

  Relay relay(epoll_fd, std::move(backends));
  epoll_event events[256];
  for (;;) {
    int n = epoll_wait(epoll_fd, events, 256, -1);
    if (n < 0 && errno != EINTR) {
      std::perror("tcp_relay: epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; ++i) {
      void* tag = events[i].data.ptr;
      if (tag == &signal_tag) return 0;
      if (tag == &listener_tag) {
        relay.AcceptAll(listen_fd);
      } else {
        relay.OnEvent(*static_cast<End*>(tag), events[i].events);
      }
    }
    relay.FreeClosed();
  }
}
