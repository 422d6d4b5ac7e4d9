// soak: a long-running WebSocket churn load on libevent, the client half of bench/soak.sh.
//
// Every one of C connection slots loops for D seconds: connect, upgrade (Sec-WebSocket-Accept
// checked), send a random number of masked binary messages of log-uniform random size (up to W
// in flight, a random think time between them), then close with 1000 -- right after the last
// send, while its echoes are still on the way -- wait for the close reply and the server's TCP
// close, pause briefly and open the slot again. A connection also closes once its random
// lifetime is over. Every byte of every echo is checked against the pattern of (connection,
// sequence number), in order.
//
// An outcome is counted for every connection: clean (close handshake 1000 both ways), cut by a
// backend restart (close 1014 or 1001 from the proxy; the messages then in flight are counted),
// an unexpected close code, TCP closed or reset without a close frame, connect failed,
// handshake answered with a non-101 status (by status), bad handshake, echo mismatch, timeout.
// "Lost" are messages still unanswered when the close reply of a clean close arrived: must be 0.
//
// Prints a PROGRESS line every --report seconds and a SOAK_RESULT line at the end.
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ws_util.h"

namespace {

constexpr size_t kReadChunk = 256 * 1024;
constexpr size_t kMaxHead = 16 * 1024;
constexpr size_t kMaxStatus = 600;
constexpr size_t kMaxCode = 5000;

struct Options {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string path = "/";
  int conns = 100;
  double duration = 60;
  int threads = 1;
  size_t max_size = 64 * 1024;    // message sizes are log-uniform in 1..max_size
  int max_messages = 100;         // per connection: log-uniform in 1..max_messages
  int window = 4;                 // messages in flight per connection: random 1..window
  double think_ms = 4000;         // pause after an echo: uniform 0..think_ms
  double max_lifetime = 60;       // per connection: uniform 1..max_lifetime seconds
  double reconnect_ms = 200;      // pause before a slot reconnects: uniform 0..reconnect_ms
  double error_backoff_ms = 500;  // pause before a slot reconnects after an error
  double open_spread = 10;        // the first connects are spread over this many seconds
  double timeout = 30;            // connect+upgrade, echo progress, close
  double drain = 30;              // after D: how long closing connections get
  double report = 5;
  int verbose_errors = 10;
};

// Outcomes of a connection (one each) and of its messages.
struct Counters {
  std::atomic<uint64_t> opened{0}, open_now{0}, clean{0}, restart_cut{0}, inflight_at_cut{0},
      unexpected_close{0}, abrupt{0}, inflight_at_abrupt{0}, connect_failed{0}, handshake_status{0},
      handshake_bad{0}, mismatch{0}, timeouts{0}, lost_clean{0}, sent{0}, echoed{0},
      echoed_bytes{0};
};

void Inc(std::atomic<uint64_t>& a, uint64_t by = 1) {
  a.store(a.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}
void Dec(std::atomic<uint64_t>& a) {
  a.store(a.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
}

enum class St { kWait, kConnecting, kUpgrading, kOpen, kClosing, kDone };

struct Worker;

struct Pending {
  uint64_t seq;
  uint64_t seed;
  size_t size;
};

struct Conn {
  Worker* w = nullptr;
  uint64_t id = 0;
  int fd = -1;
  event* rev = nullptr;
  event* wev = nullptr;
  event* step_timer = nullptr;   // timeout of the current step
  event* pause_timer = nullptr;  // think time, reconnect pause
  bool writing = false;
  bool upgraded = false;
  St st = St::kWait;
  std::string head;
  std::string expected_accept;
  std::vector<uint8_t> out;
  size_t out_off = 0;
  wsb::HeaderReader header;
  bool in_payload = false;
  wsb::FrameHeader frame;
  uint64_t payload_left = 0;
  bool in_msg = false;
  uint64_t msg_bytes = 0;
  std::string ctrl;
  std::deque<Pending> pending;  // sent, echo not yet complete, oldest first
  uint64_t seq = 0;
  int budget = 0;  // messages left to send
  int window = 1;
  uint64_t deadline_ns = 0;
  bool thinking = false;
  bool close_received = false;
};

struct Worker {
  const Options* opt = nullptr;
  int index = 0;
  event_base* base = nullptr;
  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<uint8_t> rbuf;
  Counters n;
  std::vector<uint64_t> by_status = std::vector<uint64_t>(kMaxStatus, 0);
  std::vector<uint64_t> by_code = std::vector<uint64_t>(kMaxCode, 0);
  uint64_t src_counter = 0;
  uint64_t id_counter = 0;
  uint64_t rng = 0;
  uint64_t end_ns = 0;
  bool stopping = false;
  int live = 0;  // slots not yet kDone
  event* end_timer = nullptr;
};

std::atomic<int> g_reported{0};

uint64_t NextRandom(Worker* w) {
  w->rng = wsb::SplitMix64(w->rng);
  return w->rng;
}
double Uniform(Worker* w) { return static_cast<double>(NextRandom(w) >> 11) * 0x1.0p-53; }
// Log-uniform integer in 1..max.
uint64_t LogUniform(Worker* w, uint64_t max) {
  double v = std::exp2(Uniform(w) * std::log2(static_cast<double>(max) + 1));
  return std::clamp<uint64_t>(static_cast<uint64_t>(v), 1, max);
}

void Arm(event* e, double seconds) {
  timeval tv = wsb::ToTimeval(seconds);
  evtimer_add(e, &tv);
}

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

void StartConnect(Conn* c);
void OnIo(evutil_socket_t, short what, void* arg);

void CloseFd(Conn* c) {
  if (c->rev != nullptr) event_free(c->rev);
  if (c->wev != nullptr) event_free(c->wev);
  c->rev = c->wev = nullptr;
  c->writing = false;
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  if (c->upgraded) Dec(c->w->n.open_now);
  c->upgraded = false;
  evtimer_del(c->step_timer);
  evtimer_del(c->pause_timer);
  c->thinking = false;
  c->out.clear();
  c->out_off = 0;
  c->pending.clear();
}

// The connection is over: the slot opens a new one after a pause, or retires at the end.
void Recycle(Conn* c, double pause_ms) {
  Worker* w = c->w;
  if (c->st == St::kDone) return;
  CloseFd(c);
  if (w->stopping || wsb::NowNs() >= w->end_ns) {
    c->st = St::kDone;
    --w->live;
    if (w->live == 0) event_base_loopbreak(w->base);
    return;
  }
  c->st = St::kWait;
  Arm(c->pause_timer, Uniform(w) * pause_ms / 1000.0);
}

void Report(Conn* c, const char* kind, const std::string& what) {
  if (g_reported.fetch_add(1) < c->w->opt->verbose_errors) {
    std::fprintf(stderr, "soak: connection %" PRIx64 ": %s: %s\n", c->id, kind, what.c_str());
  }
}

// An outcome counted in `counter` that ends the connection.
void Fail(Conn* c, std::atomic<uint64_t>& counter, const char* kind, const std::string& what) {
  Inc(counter);
  Report(c, kind, what);
  Recycle(c, c->w->opt->error_backoff_ms);
}

// Writes what is queued; returns false if the connection ended.
bool Flush(Conn* c) {
  wsb::SendResult r = wsb::SendWatchingWritable(c->fd, &c->out, &c->out_off, c->wev, &c->writing);
  if (r == wsb::SendResult::kFailed) {
    if (c->st == St::kConnecting || c->st == St::kUpgrading) {
      Fail(c, c->w->n.connect_failed, "connect failed", Errno("send"));
    } else {
      Inc(c->w->n.inflight_at_abrupt, c->pending.size());
      Fail(c, c->w->n.abrupt, "closed without a close frame", Errno("send"));
    }
    return false;
  }
  return true;
}

void QueueFrame(Conn* c, uint8_t opcode, const uint8_t* payload, size_t n) {
  uint64_t r = NextRandom(c->w);
  uint8_t mask[4];
  std::memcpy(mask, &r, 4);
  wsb::AppendHeader(&c->out, 0x80 | opcode, n, mask);
  size_t start = c->out.size();
  c->out.insert(c->out.end(), payload, payload + n);
  wsb::XorMask(c->out.data() + start, c->out.data() + start, n, mask, 0);
}

void SendClose(Conn* c, uint16_t code) {
  uint8_t payload[2] = {static_cast<uint8_t>(code >> 8), static_cast<uint8_t>(code)};
  QueueFrame(c, wsb::kOpClose, payload, 2);
  c->st = St::kClosing;
  evtimer_del(c->pause_timer);
  c->thinking = false;
  Arm(c->step_timer, c->w->opt->timeout);
  Flush(c);
}

// Sends one message, or the close once the budget or lifetime is used up; false if it ended.
bool SendNext(Conn* c) {
  Worker* w = c->w;
  if (c->budget <= 0 || w->stopping || wsb::NowNs() >= c->deadline_ns) {
    SendClose(c, 1000);
    return c->fd >= 0;
  }
  --c->budget;
  Pending p;
  p.seq = ++c->seq;
  p.seed = wsb::SplitMix64(c->id * 0x9e3779b97f4a7c15ull ^ p.seq);
  p.size = static_cast<size_t>(LogUniform(w, w->opt->max_size));
  uint64_t r = NextRandom(w);
  uint8_t mask[4];
  std::memcpy(mask, &r, 4);
  wsb::AppendHeader(&c->out, 0x80 | wsb::kOpBinary, p.size, mask);
  size_t start = c->out.size();
  c->out.resize(start + p.size);
  uint8_t* data = c->out.data() + start;
  wsb::FillPattern(p.seed, data, p.size);
  wsb::XorMask(data, data, p.size, mask, 0);
  if (c->pending.empty()) Arm(c->step_timer, w->opt->timeout);
  c->pending.push_back(p);
  Inc(w->n.sent);
  return Flush(c);
}

// Fills the window (or sends the close); false if the connection ended.
bool Pump(Conn* c) {
  while (c->st == St::kOpen && !c->thinking && static_cast<int>(c->pending.size()) < c->window) {
    if (!SendNext(c)) return false;
  }
  return c->fd >= 0;
}

void OnPause(evutil_socket_t, short, void* arg) {
  Conn* c = static_cast<Conn*>(arg);
  if (c->st == St::kWait) {
    if (c->w->stopping) {
      Recycle(c, 0);
      return;
    }
    StartConnect(c);
    return;
  }
  if (c->st == St::kOpen && c->thinking) {
    c->thinking = false;
    Pump(c);
  }
}

void OnStep(evutil_socket_t, short, void* arg) {
  Conn* c = static_cast<Conn*>(arg);
  Worker* w = c->w;
  switch (c->st) {
    case St::kConnecting:
      Fail(c, w->n.connect_failed, "connect failed", "timed out");
      break;
    case St::kUpgrading:
      Fail(c, w->n.timeouts, "timeout", "no upgrade response");
      break;
    case St::kOpen:
      Fail(c, w->n.timeouts, "timeout", "no echo progress");
      break;
    case St::kClosing:
      Fail(c, w->n.timeouts, "timeout",
           c->close_received ? "no TCP close after the close frames" : "no close reply");
      break;
    default:
      break;
  }
}

void StartConnect(Conn* c) {
  Worker* w = c->w;
  const Options& o = *w->opt;
  c->id = (static_cast<uint64_t>(w->index) << 48) | w->id_counter++;
  c->head.clear();
  c->header.Reset();
  c->in_payload = false;
  c->in_msg = false;
  c->msg_bytes = 0;
  c->ctrl.clear();
  c->pending.clear();
  c->seq = 0;
  c->close_received = false;
  c->st = St::kConnecting;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    Fail(c, w->n.connect_failed, "connect failed", Errno("socket"));
    return;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(o.port);
  inet_pton(AF_INET, o.host.c_str(), &dst.sin_addr);
  if ((ntohl(dst.sin_addr.s_addr) >> 24) == 127) {
    // Loopback: rotate the source over 127.0.0.2..254 so ephemeral ports never run out.
    uint64_t turn =
        w->src_counter++ * static_cast<uint64_t>(o.threads) + static_cast<uint64_t>(w->index);
    if (!wsb::BindLoopbackSource(c->fd, 2 + static_cast<uint32_t>(turn % 253))) {
      Fail(c, w->n.connect_failed, "connect failed", Errno("bind"));
      return;
    }
  }
  if (connect(c->fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) != 0 && errno != EINPROGRESS) {
    Fail(c, w->n.connect_failed, "connect failed", Errno("connect"));
    return;
  }
  c->rev = event_new(w->base, c->fd, EV_READ | EV_PERSIST, OnIo, c);
  c->wev = event_new(w->base, c->fd, EV_WRITE | EV_PERSIST, OnIo, c);
  event_add(c->wev, nullptr);
  c->writing = true;
  Arm(c->step_timer, o.timeout);
}

void OnConnected(Conn* c) {
  int err = 0;
  socklen_t length = sizeof(err);
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &length) != 0) err = errno;
  if (err != 0) {
    Fail(c, c->w->n.connect_failed, "connect failed", std::strerror(err));
    return;
  }
  const Options& o = *c->w->opt;
  uint64_t r1 = NextRandom(c->w), r2 = NextRandom(c->w);
  std::string request = wsb::UpgradeRequest(o.host, o.port, o.path, r1, r2, &c->expected_accept);
  c->out.assign(request.begin(), request.end());
  c->out_off = 0;
  c->st = St::kUpgrading;
  event_add(c->rev, nullptr);
  Flush(c);
}

bool CheckUpgrade(Conn* c, std::string_view head) {
  Worker* w = c->w;
  int status = 0;
  std::string problem = wsb::CheckUpgradeResponse(head, c->expected_accept, &status);
  if (problem.empty()) return true;
  if (status != 0 && status != 101) {
    if (static_cast<size_t>(status) < kMaxStatus) ++w->by_status[static_cast<size_t>(status)];
    Fail(c, w->n.handshake_status, "handshake status", problem);
  } else {
    Fail(c, w->n.handshake_bad, "bad handshake", problem);
  }
  return false;
}

void OnUpgraded(Conn* c) {
  Worker* w = c->w;
  const Options& o = *w->opt;
  c->upgraded = true;
  c->st = St::kOpen;
  Inc(w->n.opened);
  Inc(w->n.open_now);
  evtimer_del(c->step_timer);
  c->budget = static_cast<int>(LogUniform(w, static_cast<uint64_t>(o.max_messages)));
  c->window = 1 + static_cast<int>(NextRandom(w) % static_cast<uint64_t>(o.window));
  c->deadline_ns =
      wsb::NowNs() + static_cast<uint64_t>((1 + Uniform(w) * (o.max_lifetime - 1)) * 1e9);
  Pump(c);
}

// A close frame from the server; false if the connection ended.
bool OnCloseFrame(Conn* c) {
  Worker* w = c->w;
  int code = wsb::CloseCode(c->ctrl);
  c->ctrl.clear();
  if (c->st == St::kClosing && code == 1000) {
    if (!c->pending.empty()) {
      Inc(w->n.lost_clean, c->pending.size());
      Report(c, "lost",
             std::to_string(c->pending.size()) + " message(s) unanswered at the close reply");
    }
    c->close_received = true;  // now the server's TCP close
    return true;
  }
  size_t inflight = c->pending.size();
  if (code == 1014 || code == 1001) {
    Inc(w->n.restart_cut);
    Inc(w->n.inflight_at_cut, inflight);
    ++w->by_code[static_cast<size_t>(code)];
    if (c->st != St::kClosing) {
      // Answer the close (best effort: the connection ends here either way).
      uint8_t payload[2] = {static_cast<uint8_t>(code >> 8), static_cast<uint8_t>(code)};
      QueueFrame(c, wsb::kOpClose, payload, 2);
      send(c->fd, c->out.data() + c->out_off, c->out.size() - c->out_off,
           MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    Recycle(c, w->opt->reconnect_ms);
    return false;
  }
  if (static_cast<size_t>(code) < kMaxCode) ++w->by_code[static_cast<size_t>(code)];
  Fail(c, w->n.unexpected_close, "unexpected close",
       "code " + std::to_string(code) + (c->st == St::kClosing ? " (answering our 1000)" : ""));
  return false;
}

bool ControlDone(Conn* c) {
  switch (c->frame.opcode) {
    case wsb::kOpPing: {
      std::string payload;
      payload.swap(c->ctrl);
      QueueFrame(c, wsb::kOpPong, reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
      return Flush(c);
    }
    case wsb::kOpPong:
      c->ctrl.clear();
      return true;
    case wsb::kOpClose:
      return OnCloseFrame(c);
    default:
      Fail(c, c->w->n.mismatch, "echo mismatch",
           "unknown opcode " + std::to_string(c->frame.opcode));
      return false;
  }
}

// A whole echo is in; false if the connection ended.
bool OnEcho(Conn* c) {
  Worker* w = c->w;
  Inc(w->n.echoed);
  Inc(w->n.echoed_bytes, c->pending.front().size);
  c->pending.pop_front();
  if (c->pending.empty()) {
    evtimer_del(c->step_timer);
  } else {
    Arm(c->step_timer, w->opt->timeout);
  }
  if (c->st != St::kOpen) return true;  // closing: echoes of what was sent before the close
  if (w->opt->think_ms > 0 && !c->thinking) {
    c->thinking = true;
    Arm(c->pause_timer, Uniform(w) * w->opt->think_ms / 1000.0);
    return true;
  }
  return Pump(c);
}

// Consumes input; returns false if the connection ended.
bool Consume(Conn* c, const uint8_t* data, size_t n) {
  Worker* w = c->w;
  size_t i = 0;
  if (c->st == St::kUpgrading) {
    size_t old = c->head.size();
    c->head.append(reinterpret_cast<const char*>(data), n);
    size_t end = c->head.find("\r\n\r\n", old >= 3 ? old - 3 : 0);
    if (end == std::string::npos) {
      if (c->head.size() > kMaxHead) {
        Fail(c, w->n.handshake_bad, "bad handshake", "response head too long");
        return false;
      }
      return true;
    }
    size_t head_length = end + 4;
    i = n - (c->head.size() - head_length);
    if (!CheckUpgrade(c, std::string_view(c->head).substr(0, head_length))) return false;
    std::string().swap(c->head);
    OnUpgraded(c);
    if (c->fd < 0 || c->st == St::kWait || c->st == St::kDone) return false;
  }
  while (i < n) {
    if (c->close_received) {
      Fail(c, w->n.mismatch, "echo mismatch", "data after the close frame");
      return false;
    }
    if (!c->in_payload) {
      if (!c->header.Feed(data, n, &i, &c->frame)) break;
      const wsb::FrameHeader& f = c->frame;
      if (const char* problem = wsb::ServerFrameProblem(f, c->in_msg)) {
        Fail(c, w->n.mismatch, "echo mismatch", problem);
        return false;
      }
      if ((f.opcode & 0x8) == 0) {
        if (f.opcode != wsb::kOpContinuation) {
          if (c->pending.empty()) {
            Fail(c, w->n.mismatch, "echo mismatch", "unsolicited message");
            return false;
          }
          c->in_msg = true;
          c->msg_bytes = 0;
        }
        if (c->msg_bytes + f.length > c->pending.front().size) {
          Fail(c, w->n.mismatch, "echo mismatch", "echo longer than the message sent");
          return false;
        }
      }
      c->payload_left = f.length;
      c->in_payload = c->payload_left > 0;
      if (c->in_payload) continue;
    } else {
      size_t take = static_cast<size_t>(std::min<uint64_t>(n - i, c->payload_left));
      if ((c->frame.opcode & 0x8) != 0) {
        c->ctrl.append(reinterpret_cast<const char*>(data + i), take);
      } else {
        const Pending& p = c->pending.front();
        size_t bad = wsb::VerifyPattern(p.seed, c->msg_bytes, data + i, take);
        if (bad != take) {
          Fail(c, w->n.mismatch, "echo mismatch",
               "wrong byte at offset " + std::to_string(c->msg_bytes + bad) + " of message " +
                   std::to_string(p.seq));
          return false;
        }
        c->msg_bytes += take;
      }
      i += take;
      c->payload_left -= take;
      if (c->payload_left > 0) continue;
      c->in_payload = false;
    }
    if ((c->frame.opcode & 0x8) != 0) {
      if (!ControlDone(c)) return false;
    } else if (c->frame.fin) {
      c->in_msg = false;
      if (c->msg_bytes != c->pending.front().size) {
        Fail(c, w->n.mismatch, "echo mismatch", "echo shorter than the message sent");
        return false;
      }
      if (!OnEcho(c)) return false;
    }
  }
  return true;
}

void OnReadable(Conn* c) {
  wsb::RecvEnd end = wsb::RecvUntilBlocked(c->fd, c->w->rbuf, [c](const uint8_t* data, size_t n) {
    return Consume(c, data, n) && c->fd >= 0;
  });
  if (end == wsb::RecvEnd::kStopped || end == wsb::RecvEnd::kDrained) return;
  Worker* w = c->w;
  if (c->st == St::kClosing && c->close_received) {
    Inc(w->n.clean);
    Recycle(c, w->opt->reconnect_ms);
    return;
  }
  std::string why = end == wsb::RecvEnd::kClosed ? "EOF" : Errno("recv");
  if (c->st == St::kConnecting || c->st == St::kUpgrading) {
    Fail(c, w->n.connect_failed, "connect failed", why + " before the upgrade");
    return;
  }
  Inc(w->n.inflight_at_abrupt, c->pending.size());
  Fail(c, w->n.abrupt, "closed without a close frame", why);
}

void OnIo(evutil_socket_t, short what, void* arg) {
  Conn* c = static_cast<Conn*>(arg);
  if ((what & EV_WRITE) != 0) {
    if (c->st == St::kConnecting) {
      OnConnected(c);
      return;
    }
    if (!Flush(c)) return;
  }
  if ((what & EV_READ) != 0 && c->fd >= 0) OnReadable(c);
}

// End of D: open connections close (with their echoes in flight), waiting slots retire.
void OnEnd(evutil_socket_t, short, void* arg) {
  Worker* w = static_cast<Worker*>(arg);
  if (w->stopping) {  // the drain is over
    for (auto& c : w->conns) {
      if (c->st != St::kDone) Fail(c.get(), w->n.timeouts, "timeout", "still busy after the drain");
    }
    event_base_loopbreak(w->base);
    return;
  }
  w->stopping = true;
  for (auto& c : w->conns) {
    if (c->st == St::kWait) {
      Recycle(c.get(), 0);
    } else if (c->st == St::kOpen) {
      SendClose(c.get(), 1000);
    }
  }
  if (w->live > 0) Arm(w->end_timer, w->opt->drain);
}

void RunWorker(Worker* w) {
  const Options& o = *w->opt;
  w->end_ns = wsb::NowNs() + static_cast<uint64_t>(o.duration * 1e9);
  w->end_timer = evtimer_new(w->base, OnEnd, w);
  Arm(w->end_timer, o.duration);
  w->live = static_cast<int>(w->conns.size());
  for (auto& c : w->conns) {
    c->w = w;
    c->step_timer = evtimer_new(w->base, OnStep, c.get());
    c->pause_timer = evtimer_new(w->base, OnPause, c.get());
    c->st = St::kWait;
    Arm(c->pause_timer, Uniform(w) * o.open_spread);
  }
  event_base_dispatch(w->base);
  for (auto& c : w->conns) {
    CloseFd(c.get());
    event_free(c->step_timer);
    event_free(c->pause_timer);
  }
  event_free(w->end_timer);
}

constexpr const char* kUsage =
    "Usage: soak -p PORT [options]\n"
    "  -a HOST            target IPv4 address (default 127.0.0.1)\n"
    "  -P PATH            request path (default /)\n"
    "  -c N               connection slots (default 100)\n"
    "  -d SECONDS         duration (default 60)\n"
    "  -t THREADS         threads, one event_base each (default 1)\n"
    "  --max-size BYTES   message sizes log-uniform in 1..BYTES (default 65536)\n"
    "  --max-messages N   messages per connection log-uniform in 1..N (default 100)\n"
    "  --window N         messages in flight per connection: random 1..N (default 4)\n"
    "  --think-ms MS      pause after an echo: uniform 0..MS (default 4000)\n"
    "  --max-lifetime S   connection lifetime uniform 1..S seconds (default 60)\n"
    "  --reconnect-ms MS  pause before a slot reconnects: uniform 0..MS (default 200)\n"
    "  --open-spread S    spread the first connects over S seconds (default 10)\n"
    "  --timeout S        connect+upgrade, echo progress, close reply (default 30)\n"
    "  --drain S          time closing connections get after the end (default 30)\n"
    "  --report S         PROGRESS line interval (default 5)\n"
    "Exit status 1 if a message was lost on a clean close or an echo did not match, 2 on bad\n"
    "usage; the other outcomes are counted and reported only.\n";

[[noreturn]] void Usage(const std::string& message) {
  std::fprintf(stderr, "soak: %s\n%s", message.c_str(), kUsage);
  std::exit(2);
}

double ParseNumber(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || v < 0) Usage("bad value for " + flag + ": " + text);
  return v;
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) Usage(arg + " needs a value");
    std::string v = argv[++i];
    if (arg == "-a") {
      o.host = v;
    } else if (arg == "-p") {
      o.port = static_cast<uint16_t>(ParseNumber(arg, v));
    } else if (arg == "-P") {
      o.path = v;
    } else if (arg == "-c") {
      o.conns = static_cast<int>(ParseNumber(arg, v));
    } else if (arg == "-d") {
      o.duration = ParseNumber(arg, v);
    } else if (arg == "-t") {
      o.threads = static_cast<int>(ParseNumber(arg, v));
    } else if (arg == "--max-size") {
      o.max_size = static_cast<size_t>(ParseNumber(arg, v));
    } else if (arg == "--max-messages") {
      o.max_messages = static_cast<int>(ParseNumber(arg, v));
    } else if (arg == "--window") {
      o.window = static_cast<int>(ParseNumber(arg, v));
    } else if (arg == "--think-ms") {
      o.think_ms = ParseNumber(arg, v);
    } else if (arg == "--max-lifetime") {
      o.max_lifetime = ParseNumber(arg, v);
    } else if (arg == "--reconnect-ms") {
      o.reconnect_ms = ParseNumber(arg, v);
    } else if (arg == "--open-spread") {
      o.open_spread = ParseNumber(arg, v);
    } else if (arg == "--timeout") {
      o.timeout = ParseNumber(arg, v);
    } else if (arg == "--drain") {
      o.drain = ParseNumber(arg, v);
    } else if (arg == "--report") {
      o.report = ParseNumber(arg, v);
    } else {
      Usage("unknown argument \"" + arg + "\"");
    }
  }
  in_addr probe{};
  if (inet_pton(AF_INET, o.host.c_str(), &probe) != 1) Usage("-a wants an IPv4 address");
  if (o.port == 0) Usage("-p PORT is required");
  if (o.conns < 1) Usage("-c must be at least 1");
  if (o.threads < 1 || o.threads > 64) Usage("-t must be 1..64");
  if (o.max_size < 1 || o.max_messages < 1 || o.window < 1) Usage("sizes and counts must be >= 1");
  if (o.max_lifetime < 1) Usage("--max-lifetime must be at least 1");
  if (o.report <= 0) Usage("--report must be > 0");
  if (o.threads > o.conns) o.threads = o.conns;
  return o;
}

uint64_t Sum(const std::vector<std::unique_ptr<Worker>>& ws,
             std::atomic<uint64_t> Counters::*field) {
  uint64_t s = 0;
  for (auto& w : ws) s += (w->n.*field).load(std::memory_order_relaxed);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = ParseArgs(argc, argv);
  std::signal(SIGPIPE, SIG_IGN);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < o.threads; ++t) {
    auto w = std::make_unique<Worker>();
    w->opt = &o;
    w->index = t;
    w->base = event_base_new();
    if (w->base == nullptr) {
      std::fprintf(stderr, "soak: event_base_new failed\n");
      return 2;
    }
    w->rbuf.resize(kReadChunk);
    w->rng = wsb::SplitMix64(wsb::NowNs() ^ (static_cast<uint64_t>(t) << 48) ^
                             static_cast<uint64_t>(getpid()));
    int share = o.conns / o.threads + (t < o.conns % o.threads ? 1 : 0);
    for (int i = 0; i < share; ++i) w->conns.push_back(std::make_unique<Conn>());
    workers.push_back(std::move(w));
  }
  uint64_t start = wsb::NowNs();
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back(RunWorker, w.get());

  // Progress: the script joins these with its RSS samples.
  std::thread reporter([&] {
    uint64_t next = start;
    while (!done.load()) {
      next += static_cast<uint64_t>(o.report * 1e9);
      while (!done.load() && wsb::NowNs() < next) {  // short naps: the end is not kept waiting
        uint64_t nap = std::min<uint64_t>(next - std::min(next, wsb::NowNs()), 50000000);
        timespec ts{0, static_cast<long>(nap)};
        nanosleep(&ts, nullptr);
      }
      if (done.load()) break;
      std::printf("PROGRESS t=%.0f open=%" PRIu64 " opened=%" PRIu64 " clean=%" PRIu64
                  " cut=%" PRIu64 " sent=%" PRIu64 " echoed=%" PRIu64 "\n",
                  static_cast<double>(wsb::NowNs() - start) / 1e9,
                  Sum(workers, &Counters::open_now), Sum(workers, &Counters::opened),
                  Sum(workers, &Counters::clean), Sum(workers, &Counters::restart_cut),
                  Sum(workers, &Counters::sent), Sum(workers, &Counters::echoed));
      std::fflush(stdout);
    }
  });
  for (auto& t : threads) t.join();
  done.store(true);
  reporter.join();

  std::vector<uint64_t> by_status(kMaxStatus, 0), by_code(kMaxCode, 0);
  for (auto& w : workers) {
    for (size_t k = 0; k < kMaxStatus; ++k) by_status[k] += w->by_status[k];
    for (size_t k = 0; k < kMaxCode; ++k) by_code[k] += w->by_code[k];
    event_base_free(w->base);
  }
  auto list = [](const std::vector<uint64_t>& v) {
    std::string s;
    for (size_t k = 0; k < v.size(); ++k) {
      if (v[k] == 0) continue;
      s += (s.empty() ? "" : ",") + std::to_string(k) + ":" + std::to_string(v[k]);
    }
    return s.empty() ? std::string("-") : s;
  };
  uint64_t lost = Sum(workers, &Counters::lost_clean);
  uint64_t mismatch = Sum(workers, &Counters::mismatch);
  std::printf("SOAK_RESULT conns=%d seconds=%.0f opened=%" PRIu64 " clean=%" PRIu64
              " restart_cut=%" PRIu64 " inflight_at_cut=%" PRIu64
              " close_codes=%s"
              " unexpected_close=%" PRIu64 " abrupt=%" PRIu64 " inflight_at_abrupt=%" PRIu64
              " connect_failed=%" PRIu64 " handshake_status=%" PRIu64
              " statuses=%s"
              " handshake_bad=%" PRIu64 " mismatch=%" PRIu64 " timeouts=%" PRIu64 " sent=%" PRIu64
              " echoed=%" PRIu64 " echoed_mib=%.1f lost_clean=%" PRIu64 "\n",
              o.conns, static_cast<double>(wsb::NowNs() - start) / 1e9,
              Sum(workers, &Counters::opened), Sum(workers, &Counters::clean),
              Sum(workers, &Counters::restart_cut), Sum(workers, &Counters::inflight_at_cut),
              list(by_code).c_str(), Sum(workers, &Counters::unexpected_close),
              Sum(workers, &Counters::abrupt), Sum(workers, &Counters::inflight_at_abrupt),
              Sum(workers, &Counters::connect_failed), Sum(workers, &Counters::handshake_status),
              list(by_status).c_str(), Sum(workers, &Counters::handshake_bad), mismatch,
              Sum(workers, &Counters::timeouts), Sum(workers, &Counters::sent),
              Sum(workers, &Counters::echoed),
              static_cast<double>(Sum(workers, &Counters::echoed_bytes)) / 1048576.0, lost);
  return lost == 0 && mismatch == 0 ? 0 : 1;
}
