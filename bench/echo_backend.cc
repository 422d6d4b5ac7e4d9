// echo_backend: a WebSocket echo server for benchmarking wsgate.
//
// One event_base per thread, each with its own SO_REUSEPORT listening socket, so the kernel
// spreads connections over the threads. Answers the upgrade with 101 and the right
// Sec-WebSocket-Accept, then echoes every data frame as it arrives (same FIN/opcode, payload
// unmasked, streamed: nothing waits for a whole message), answers ping with pong and close with
// close (same status code), then closes the TCP connection.
#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ws_util.h"

namespace {

constexpr size_t kReadChunk = 256 * 1024;
constexpr size_t kMaxHead = 16 * 1024;
constexpr size_t kPauseAbove = 1024 * 1024;  // stop reading while this much output is unsent
constexpr uint64_t kMaxFrame = 64ull * 1024 * 1024;

struct Options {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  int threads = 1;
  std::string ready_file;
};

struct Worker {
  int index = 0;
  int listen_fd = -1;
  event_base* base = nullptr;
  evconnlistener* listener = nullptr;
  std::vector<uint8_t> rbuf;
};

struct Conn {
  Worker* w = nullptr;
  int fd = -1;
  event* rev = nullptr;
  event* wev = nullptr;
  bool writing = false;
  bool read_paused = false;
  bool upgraded = false;
  bool closing = false;  // a close frame (or an HTTP error) is queued: close once it is sent
  std::string head;
  std::vector<uint8_t> out;
  size_t out_off = 0;
  // Frame parser.
  wsb::HeaderReader header;
  bool in_payload = false;
  wsb::FrameHeader frame;
  uint64_t payload_left = 0;
  uint64_t payload_pos = 0;
  std::vector<uint8_t> ctrl;
};

void Destroy(Conn* c) {
  if (c->rev != nullptr) event_free(c->rev);
  if (c->wev != nullptr) event_free(c->wev);
  if (c->fd >= 0) close(c->fd);
  delete c;
}

void Append(Conn* c, std::string_view text) {
  c->out.insert(c->out.end(), text.begin(), text.end());
}

// Writes what is queued. Returns false if the connection is gone.
bool Flush(Conn* c) {
  wsb::SendResult r = wsb::SendWatchingWritable(c->fd, &c->out, &c->out_off, c->wev, &c->writing);
  if (r == wsb::SendResult::kBlocked) {
    if (!c->read_paused && c->out.size() - c->out_off > kPauseAbove) {
      event_del(c->rev);
      c->read_paused = true;
    }
    return true;
  }
  if (r == wsb::SendResult::kFailed) {
    Destroy(c);
    return false;
  }
  if (c->out.capacity() > 4 * kPauseAbove) c->out.shrink_to_fit();
  if (c->closing) {
    Destroy(c);
    return false;
  }
  if (c->read_paused) {
    event_add(c->rev, nullptr);
    c->read_paused = false;
  }
  return true;
}

// Queues a close frame with `code` and stops reading.
void StartClose(Conn* c, const uint8_t* code_bytes, size_t code_length) {
  wsb::AppendHeader(&c->out, 0x80 | wsb::kOpClose, code_length, nullptr);
  c->out.insert(c->out.end(), code_bytes, code_bytes + code_length);
  c->closing = true;
  event_del(c->rev);
}

void CloseWith(Conn* c, uint16_t code) {
  uint8_t bytes[2] = {static_cast<uint8_t>(code >> 8), static_cast<uint8_t>(code)};
  StartClose(c, bytes, 2);
}

void HttpError(Conn* c, std::string_view status) {
  Append(c, "HTTP/1.1 ");
  Append(c, status);
  Append(c, "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  c->closing = true;
  event_del(c->rev);
}

// Handles the request head; returns false when the connection must stop reading.
bool Upgrade(Conn* c, std::string_view head) {
  if (head.substr(0, 4) != "GET ") {
    HttpError(c, "405 Method Not Allowed");
    return false;
  }
  std::string_view key;
  if (wsb::FindHeader(head, "Sec-WebSocket-Key", &key) != 1 || key.empty()) {
    HttpError(c, "400 Bad Request");
    return false;
  }
  Append(c,
         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Accept: ");
  Append(c, wsb::AcceptFor(key));
  Append(c, "\r\n\r\n");
  c->upgraded = true;
  return true;
}

// A control frame's payload is complete.
bool ControlDone(Conn* c) {
  switch (c->frame.opcode) {
    case wsb::kOpPing:
      wsb::AppendHeader(&c->out, 0x80 | wsb::kOpPong, c->ctrl.size(), nullptr);
      c->out.insert(c->out.end(), c->ctrl.begin(), c->ctrl.end());
      break;
    case wsb::kOpPong:
      break;
    case wsb::kOpClose:
      if (c->ctrl.size() == 1) {
        CloseWith(c, 1002);
      } else {
        StartClose(c, c->ctrl.data(), c->ctrl.size() >= 2 ? 2 : 0);
      }
      c->ctrl.clear();
      return false;
    default:
      break;
  }
  c->ctrl.clear();
  return true;
}

// Consumes input bytes; returns false when reading must stop (close queued).
bool Process(Conn* c, const uint8_t* data, size_t n) {
  size_t i = 0;
  if (!c->upgraded) {
    size_t old = c->head.size();
    c->head.append(reinterpret_cast<const char*>(data), n);
    size_t end = c->head.find("\r\n\r\n", old >= 3 ? old - 3 : 0);
    if (end == std::string::npos) {
      if (c->head.size() > kMaxHead) {
        HttpError(c, "431 Request Header Fields Too Large");
        return false;
      }
      return true;
    }
    size_t head_length = end + 4;
    i = n - (c->head.size() - head_length);
    bool ok = Upgrade(c, std::string_view(c->head).substr(0, head_length));
    std::string().swap(c->head);
    if (!ok) return false;
  }
  while (i < n) {
    if (!c->in_payload) {
      if (!c->header.Feed(data, n, &i, &c->frame)) break;
      const wsb::FrameHeader& f = c->frame;
      bool control = (f.opcode & 0x8) != 0;
      if (!f.masked || f.rsv != 0 || (control && (f.length > 125 || !f.fin)) ||
          (f.opcode > wsb::kOpBinary && !control) || f.opcode > wsb::kOpPong) {
        CloseWith(c, 1002);
        return false;
      }
      if (f.length > kMaxFrame) {
        CloseWith(c, 1009);
        return false;
      }
      c->payload_left = f.length;
      c->payload_pos = 0;
      c->in_payload = true;
      if (!control) wsb::AppendHeader(&c->out, c->header.bytes()[0], f.length, nullptr);
      if (c->payload_left == 0) {
        c->in_payload = false;
        if (control && !ControlDone(c)) return false;
      }
      continue;
    }
    size_t take = static_cast<size_t>(std::min<uint64_t>(n - i, c->payload_left));
    if ((c->frame.opcode & 0x8) != 0) {
      size_t old = c->ctrl.size();
      c->ctrl.resize(old + take);
      wsb::XorMask(c->ctrl.data() + old, data + i, take, c->frame.mask, c->payload_pos);
    } else {
      size_t old = c->out.size();
      c->out.resize(old + take);
      wsb::XorMask(c->out.data() + old, data + i, take, c->frame.mask, c->payload_pos);
    }
    i += take;
    c->payload_pos += take;
    c->payload_left -= take;
    if (c->payload_left == 0) {
      c->in_payload = false;
      if ((c->frame.opcode & 0x8) != 0 && !ControlDone(c)) return false;
    }
  }
  return true;
}

void OnReadable(Conn* c) {
  bool gone = false;  // Flush() failed and destroyed the connection
  wsb::RecvEnd end =
      wsb::RecvUntilBlocked(c->fd, c->w->rbuf, [c, &gone](const uint8_t* data, size_t n) {
        bool more = Process(c, data, n);
        if (!Flush(c)) {
          gone = true;
          return false;
        }
        return more && !c->read_paused;
      });
  if (!gone && (end == wsb::RecvEnd::kClosed || end == wsb::RecvEnd::kFailed))
    Destroy(c);  // EOF or reset
}

void OnIo(evutil_socket_t, short what, void* arg) {
  Conn* c = static_cast<Conn*>(arg);
  if ((what & EV_WRITE) != 0) {
    if (!Flush(c)) return;
  }
  if ((what & EV_READ) != 0) OnReadable(c);
}

void OnAccept(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* arg) {
  Worker* w = static_cast<Worker*>(arg);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  Conn* c = new Conn;
  c->w = w;
  c->fd = fd;
  c->rev = event_new(w->base, fd, EV_READ | EV_PERSIST, OnIo, c);
  c->wev = event_new(w->base, fd, EV_WRITE | EV_PERSIST, OnIo, c);
  if (c->rev == nullptr || c->wev == nullptr) {
    Destroy(c);
    return;
  }
  event_add(c->rev, nullptr);
}

void OnAcceptError(evconnlistener*, void*) {
  int err = EVUTIL_SOCKET_ERROR();
  std::fprintf(stderr, "echo_backend: accept: %s\n", evutil_socket_error_to_string(err));
}

int OpenListener(const Options& opt, uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (inet_pton(AF_INET, opt.host.c_str(), &addr.sin_addr) != 1 ||
      bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 4096) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

constexpr const char* kUsage =
    "Usage: echo_backend [-a HOST] [-p PORT] [-t THREADS] [-r READY_FILE]\n"
    "  -a HOST        IPv4 address to listen on (default 127.0.0.1)\n"
    "  -p PORT        port (default 0: pick one; printed and written to READY_FILE)\n"
    "  -t THREADS     event loops, each with its own SO_REUSEPORT socket (default 1)\n"
    "  -r READY_FILE  write \"HOST:PORT\" there once listening\n";

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "echo_backend: %s needs a value\n%s", arg.c_str(), kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "-a") {
      opt.host = value();
    } else if (arg == "-p") {
      opt.port = static_cast<uint16_t>(std::atoi(value().c_str()));
    } else if (arg == "-t") {
      opt.threads = std::atoi(value().c_str());
    } else if (arg == "-r") {
      opt.ready_file = value();
    } else if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      std::fprintf(stderr, "echo_backend: unknown argument \"%s\"\n%s", arg.c_str(), kUsage);
      return 2;
    }
  }
  if (opt.threads < 1 || opt.threads > 256) {
    std::fprintf(stderr, "echo_backend: -t must be 1..256\n");
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);

  // SO_REUSEPORT would let us share the port silently with another server (a stale
  // echo_backend, say) and split the connections with it: make sure it is free first.
  if (opt.port != 0) {
    int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(opt.port);
    inet_pton(AF_INET, opt.host.c_str(), &addr.sin_addr);
    if (bind(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      std::fprintf(stderr, "echo_backend: cannot listen on %s:%u: %s\n", opt.host.c_str(), opt.port,
                   std::strerror(errno));
      close(probe);
      return 1;
    }
    close(probe);
  }

  std::vector<std::unique_ptr<Worker>> workers;
  uint16_t port = opt.port;
  for (int t = 0; t < opt.threads; ++t) {
    auto w = std::make_unique<Worker>();
    w->index = t;
    w->listen_fd = OpenListener(opt, port);
    if (w->listen_fd < 0) {
      std::fprintf(stderr, "echo_backend: cannot listen on %s:%u: %s\n", opt.host.c_str(), port,
                   std::strerror(errno));
      return 1;
    }
    if (t == 0) {
      sockaddr_in bound{};
      socklen_t length = sizeof(bound);
      getsockname(w->listen_fd, reinterpret_cast<sockaddr*>(&bound), &length);
      port = ntohs(bound.sin_port);
    }
    w->base = event_base_new();
    w->rbuf.resize(kReadChunk);
    if (w->base == nullptr) {
      std::fprintf(stderr, "echo_backend: event_base_new failed\n");
      return 1;
    }
    // backlog 0: the socket is listening already.
    w->listener =
        evconnlistener_new(w->base, OnAccept, w.get(), LEV_OPT_CLOSE_ON_FREE, 0, w->listen_fd);
    if (w->listener == nullptr) {
      std::fprintf(stderr, "echo_backend: evconnlistener_new failed\n");
      return 1;
    }
    evconnlistener_set_error_cb(w->listener, OnAcceptError);
    workers.push_back(std::move(w));
  }

  std::string where = opt.host + ":" + std::to_string(port);
  if (!opt.ready_file.empty()) {
    std::string tmp = opt.ready_file + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (f == nullptr || std::fprintf(f, "%s\n", where.c_str()) < 0 || std::fclose(f) != 0 ||
        std::rename(tmp.c_str(), opt.ready_file.c_str()) != 0) {
      std::fprintf(stderr, "echo_backend: cannot write %s\n", opt.ready_file.c_str());
      return 1;
    }
  }
  std::printf("echo_backend listening on %s with %d thread(s)\n", where.c_str(), opt.threads);
  std::fflush(stdout);

  std::vector<std::thread> threads;
  for (auto& w : workers) {
    threads.emplace_back([base = w->base] { event_base_dispatch(base); });
  }
  for (auto& t : threads) t.join();
  return 0;
}
