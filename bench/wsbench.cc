// wsbench: a WebSocket load generator on libevent.
//
//   echo       C connections in a closed loop: send one S-byte masked binary message, wait for
//              its echo, verify every byte, repeat for D seconds.
//   handshake  C concurrent loops of: connect, upgrade (Sec-WebSocket-Accept checked), one
//              echo, close handshake (1000), wait for the server's TCP close; for D seconds.
//   idle       open C connections, hold them H seconds without sending, report how many are
//              still open, then close them.
//
// With --cpu-core N and/or --cpu-pid PID, echo and handshake also sample the busy time of core
// N (/proc/stat) and the CPU time of the given processes (/proc/PID/stat) at the exact start
// and end of the measured window, and report them per completed operation.
//
// Each thread (-t) has its own event_base and a share of the connections. Connections are bound
// to source addresses 127.0.0.2..127.0.0.254 in turn (when the target is on 127/8) so the
// ephemeral ports of one address never run out. Any error -- connect failure, bad upgrade,
// wrong echo byte, unexpected close, timeout -- is counted and makes the exit status 1.
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
#include <barrier>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ws_util.h"

namespace {

constexpr size_t kReadChunk = 256 * 1024;
constexpr size_t kMaxHead = 16 * 1024;
constexpr double kDrainSeconds = 5.0;     // after D: how long in-flight work may take
constexpr double kBackoffSeconds = 0.01;  // handshake mode: pause after a failed cycle

enum class Mode { kEcho, kHandshake, kIdle };

struct Options {
  Mode mode = Mode::kEcho;
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string path = "/";
  int conns = 10;
  size_t size = 64;
  double duration = 5;
  double hold = 5;
  int threads = 1;
  int src_first = 2;
  int src_last = 254;
  bool spread = true;
  int connect_concurrency = 256;
  double timeout = 10;
  int verbose_errors = 5;
  int cpu_core = -1;          // --cpu-core: sample this core's busy time over the window
  std::vector<int> cpu_pids;  // --cpu-pid: sample these processes' utime+stime
};

enum ErrorKind { kErrConnect, kErrHandshake, kErrData, kErrClosed, kErrTimeout, kErrKinds };
constexpr const char* kErrNames[kErrKinds] = {"connect", "handshake", "data", "closed", "timeout"};

enum class St { kIdle, kConnecting, kUpgrading, kOpen, kClosing, kBackoff, kDone };
enum class Phase { kConnect, kMeasure, kHold, kClose };

struct Worker;

struct Conn {
  Worker* w = nullptr;
  uint64_t id = 0;
  int fd = -1;
  event* rev = nullptr;
  event* wev = nullptr;
  event* timer = nullptr;
  bool writing = false;
  bool upgraded = false;
  bool task = false;  // counts towards Worker::pending in the current phase
  St st = St::kIdle;
  std::string head;
  std::string expected_accept;
  std::vector<uint8_t> out;
  size_t out_off = 0;
  // Frame parser.
  wsb::HeaderReader header;
  bool in_payload = false;
  wsb::FrameHeader frame;
  uint64_t payload_left = 0;
  bool in_msg = false;
  uint64_t msg_bytes = 0;
  std::string ctrl;
  // The message in flight.
  bool awaiting = false;
  uint64_t seq = 0;
  uint64_t seed = 0;
  uint64_t sent_ns = 0;
  uint64_t cycle_start_ns = 0;
  bool close_received = false;
};

struct Worker {
  const Options* opt = nullptr;
  int index = 0;
  event_base* base = nullptr;
  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<uint8_t> rbuf;
  wsb::LogHistogram hist;   // echo: round trip; handshake: connect -> verified 101
  wsb::LogHistogram hist2;  // handshake: whole cycle
  uint64_t messages = 0;
  uint64_t cycles = 0;
  uint64_t errors[kErrKinds] = {};
  Phase phase = Phase::kConnect;
  int pending = 0;
  size_t next_open = 0;
  int connecting = 0;
  int connect_cap = 1;
  uint64_t src_counter = 0;
  uint64_t id_counter = 0;
  uint64_t rng = 0;
  uint64_t end_ns = 0;
  bool stop = false;
  event* end_timer = nullptr;
  int open_now = 0;
  int opened = 0;       // open after the connect phase (read by main after the barrier)
  int open_at_end = 0;  // open when the hold ended
};

// CPU time in clock ticks (USER_HZ) at one edge of the measured window.
struct CpuSample {
  bool core_ok = false;
  uint64_t core_busy = 0;  // cpuN: user+nice+system+irq+softirq+steal (not idle, iowait)
  bool pids_ok = false;
  uint64_t proc = 0;  // sum of utime+stime over --cpu-pid processes (all their threads)
};

bool ReadCoreBusy(int core, uint64_t* busy) {
  std::ifstream in("/proc/stat");
  std::string line, want = "cpu" + std::to_string(core);
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string name;
    fields >> name;
    if (name != want) continue;
    // guest and guest_nice are already counted in user and nice, so they are left out.
    uint64_t v[8] = {};
    for (uint64_t& x : v) fields >> x;
    if (!fields) return false;
    *busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    return true;
  }
  return false;
}

bool ReadProcTicks(int pid, uint64_t* ticks) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = text.rfind(')');  // the command name may hold spaces and parentheses
  if (paren == std::string::npos) return false;
  std::istringstream fields(text.substr(paren + 1));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int k = 3; k <= 15 && fields >> field; ++k) {  // field 3 is the state; 14, 15 the times
    if (k == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (k == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  if (!fields) return false;
  *ticks = utime + stime;
  return true;
}

const Options* g_opt = nullptr;

CpuSample SampleCpu() {
  CpuSample s;
  if (g_opt->cpu_core >= 0) s.core_ok = ReadCoreBusy(g_opt->cpu_core, &s.core_busy);
  if (!g_opt->cpu_pids.empty()) {
    s.pids_ok = true;
    for (int pid : g_opt->cpu_pids) {
      uint64_t t = 0;
      s.pids_ok = s.pids_ok && ReadProcTicks(pid, &t);
      s.proc += t;
    }
  }
  return s;
}

std::atomic<int> g_reported{0};
uint64_t g_phase_start_ns = 0;
CpuSample g_cpu_start, g_cpu_end;

struct PhaseStart {
  void operator()() noexcept {
    g_cpu_start = SampleCpu();  // before the clock starts: the window is [start, start + D]
    g_phase_start_ns = wsb::NowNs();
  }
};

uint64_t NextRandom(Worker* w) {
  w->rng = wsb::SplitMix64(w->rng);
  return w->rng;
}

using wsb::ToTimeval;

void ArmTimer(Conn* c, double seconds) {
  timeval tv = ToTimeval(seconds);
  evtimer_add(c->timer, &tv);
}

// --- connection plumbing --------------------------------------------------------------------

void OnIo(evutil_socket_t, short what, void* arg);
void StartCycle(Conn* c);
void OpenMore(Worker* w);

// The connection's work in the current phase is over (RunLoop returns once none is left).
void Finish(Conn* c) {
  if (!c->task) return;
  c->task = false;
  --c->w->pending;
}

void CloseFd(Conn* c) {
  if (c->rev != nullptr) event_free(c->rev);
  if (c->wev != nullptr) event_free(c->wev);
  c->rev = c->wev = nullptr;
  c->writing = false;
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  if (c->upgraded) --c->w->open_now;
  c->upgraded = false;
  c->awaiting = false;
  evtimer_del(c->timer);
  c->out.clear();
  c->out_off = 0;
}

// A connection of the connect phase has either opened or failed.
void ConnectSettled(Conn* c) {
  Worker* w = c->w;
  if (w->phase != Phase::kConnect) return;
  --w->connecting;
  Finish(c);
  OpenMore(w);
}

void Fail(Conn* c, ErrorKind kind, const std::string& what) {
  Worker* w = c->w;
  ++w->errors[kind];
  if (g_reported.fetch_add(1) < w->opt->verbose_errors) {
    std::fprintf(stderr, "wsbench: connection %" PRIu64 ": %s error: %s\n", c->id, kErrNames[kind],
                 what.c_str());
  }
  St was = c->st;
  CloseFd(c);
  c->st = St::kDone;
  if (was == St::kConnecting || was == St::kUpgrading) {
    if (w->phase == Phase::kConnect) {
      ConnectSettled(c);
      return;
    }
  }
  if (w->opt->mode == Mode::kHandshake && w->phase == Phase::kMeasure && !w->stop &&
      wsb::NowNs() < w->end_ns) {
    c->st = St::kBackoff;
    ArmTimer(c, kBackoffSeconds);
    return;
  }
  Finish(c);
}

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// Writes what is queued; returns false if the connection failed.
bool Flush(Conn* c) {
  wsb::SendResult r = wsb::SendWatchingWritable(c->fd, &c->out, &c->out_off, c->wev, &c->writing);
  if (r == wsb::SendResult::kFailed) {
    bool opening = c->st == St::kConnecting || c->st == St::kUpgrading;
    Fail(c, opening ? kErrConnect : kErrClosed, Errno("send"));
    return false;
  }
  return true;
}

void StartConnect(Conn* c) {
  Worker* w = c->w;
  const Options& o = *w->opt;
  c->id = (static_cast<uint64_t>(w->index) << 40) | w->id_counter++;
  c->head.clear();
  c->header.Reset();
  c->in_payload = false;
  c->in_msg = false;
  c->msg_bytes = 0;
  c->ctrl.clear();
  c->awaiting = false;
  c->seq = 0;
  c->close_received = false;
  c->cycle_start_ns = wsb::NowNs();

  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    c->st = St::kConnecting;
    Fail(c, kErrConnect, Errno("socket"));
    return;
  }
  c->st = St::kConnecting;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (o.spread) {
    int span = o.src_last - o.src_first + 1;
    uint32_t last = static_cast<uint32_t>(o.src_first) +
                    static_cast<uint32_t>((w->src_counter++ * static_cast<uint64_t>(o.threads) +
                                           static_cast<uint64_t>(w->index)) %
                                          static_cast<uint64_t>(span));
    if (!wsb::BindLoopbackSource(c->fd, last)) {
      Fail(c, kErrConnect, Errno("bind"));
      return;
    }
  }
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(o.port);
  inet_pton(AF_INET, o.host.c_str(), &dst.sin_addr);
  if (connect(c->fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) != 0 && errno != EINPROGRESS) {
    Fail(c, kErrConnect, Errno("connect"));
    return;
  }
  c->rev = event_new(w->base, c->fd, EV_READ | EV_PERSIST, OnIo, c);
  c->wev = event_new(w->base, c->fd, EV_WRITE | EV_PERSIST, OnIo, c);
  event_add(c->wev, nullptr);
  c->writing = true;
  ArmTimer(c, o.timeout);
}

void OnConnected(Conn* c) {
  int err = 0;
  socklen_t length = sizeof(err);
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &length) != 0) err = errno;
  if (err != 0) {
    Fail(c, kErrConnect, std::string("connect: ") + std::strerror(err));
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

void SendMessage(Conn* c) {
  Worker* w = c->w;
  size_t size = w->opt->size;
  ++c->seq;
  c->seed = wsb::SplitMix64(c->id * 0x9e3779b97f4a7c15ull ^ c->seq);
  uint64_t r = NextRandom(w);
  uint8_t mask[4];
  std::memcpy(mask, &r, 4);
  c->out.clear();
  c->out_off = 0;
  wsb::AppendHeader(&c->out, 0x80 | wsb::kOpBinary, size, mask);
  size_t start = c->out.size();
  c->out.resize(start + size);
  uint8_t* p = c->out.data() + start;
  wsb::FillPattern(c->seed, p, size);
  wsb::XorMask(p, p, size, mask, 0);
  c->awaiting = true;
  c->msg_bytes = 0;
  c->sent_ns = wsb::NowNs();
  Flush(c);
}

void SendClose(Conn* c) {
  uint64_t r = NextRandom(c->w);
  uint8_t mask[4];
  std::memcpy(mask, &r, 4);
  uint8_t payload[2] = {0x03, 0xe8};  // 1000
  wsb::XorMask(payload, payload, 2, mask, 0);
  wsb::AppendHeader(&c->out, 0x80 | wsb::kOpClose, 2, mask);
  c->out.insert(c->out.end(), payload, payload + 2);
  c->st = St::kClosing;
  ArmTimer(c, c->w->opt->timeout);
  Flush(c);
}

void OnUpgraded(Conn* c) {
  Worker* w = c->w;
  c->upgraded = true;
  c->st = St::kOpen;
  ++w->open_now;
  evtimer_del(c->timer);
  switch (w->opt->mode) {
    case Mode::kEcho:
    case Mode::kIdle:
      ConnectSettled(c);
      break;
    case Mode::kHandshake:
      w->hist.Record(wsb::NowNs() - c->cycle_start_ns);
      ArmTimer(c, w->opt->timeout);
      SendMessage(c);
      break;
  }
}

// The server's TCP close after both close frames.
void OnClosed(Conn* c) {
  Worker* w = c->w;
  CloseFd(c);
  c->st = St::kDone;
  if (w->opt->mode == Mode::kHandshake && w->phase == Phase::kMeasure) {
    uint64_t now = wsb::NowNs();
    if (now < w->end_ns) {
      ++w->cycles;
      w->hist2.Record(now - c->cycle_start_ns);
    }
    if (!w->stop && now < w->end_ns) {
      StartCycle(c);
      return;
    }
  }
  Finish(c);
}

void OnMessage(Conn* c) {
  Worker* w = c->w;
  c->awaiting = false;
  uint64_t now = wsb::NowNs();
  if (w->opt->mode == Mode::kHandshake) {
    SendClose(c);
    return;
  }
  if (now < w->end_ns) {
    ++w->messages;
    w->hist.Record(now - c->sent_ns);
  }
  if (w->stop || now >= w->end_ns) {
    Finish(c);
    return;
  }
  SendMessage(c);
}

bool CheckUpgrade(Conn* c, std::string_view head) {
  int status = 0;
  std::string problem = wsb::CheckUpgradeResponse(head, c->expected_accept, &status);
  if (problem.empty()) return true;
  Fail(c, kErrHandshake, problem);
  return false;
}

bool ControlDone(Conn* c) {
  switch (c->frame.opcode) {
    case wsb::kOpPing: {
      uint64_t r = NextRandom(c->w);
      uint8_t mask[4];
      std::memcpy(mask, &r, 4);
      std::string payload = c->ctrl;
      wsb::XorMask(reinterpret_cast<uint8_t*>(payload.data()),
                   reinterpret_cast<const uint8_t*>(payload.data()), payload.size(), mask, 0);
      wsb::AppendHeader(&c->out, 0x80 | wsb::kOpPong, payload.size(), mask);
      c->out.insert(c->out.end(), payload.begin(), payload.end());
      c->ctrl.clear();
      return Flush(c);
    }
    case wsb::kOpPong:
      c->ctrl.clear();
      return true;
    case wsb::kOpClose: {
      int code = wsb::CloseCode(c->ctrl);
      c->ctrl.clear();
      if (c->st != St::kClosing) {
        Fail(c, kErrClosed, "unexpected close frame, code " + std::to_string(code));
        return false;
      }
      if (code != 1000) {
        Fail(c, kErrClosed, "close answered with code " + std::to_string(code));
        return false;
      }
      c->close_received = true;  // now wait for the server's TCP close
      return true;
    }
    default:
      Fail(c, kErrData, "unknown opcode " + std::to_string(c->frame.opcode));
      return false;
  }
}

// Consumes input; returns false if the connection failed or was closed.
bool Consume(Conn* c, const uint8_t* data, size_t n) {
  size_t i = 0;
  if (c->st == St::kUpgrading) {
    size_t old = c->head.size();
    c->head.append(reinterpret_cast<const char*>(data), n);
    size_t end = c->head.find("\r\n\r\n", old >= 3 ? old - 3 : 0);
    if (end == std::string::npos) {
      if (c->head.size() > kMaxHead) {
        Fail(c, kErrHandshake, "response head too long");
        return false;
      }
      return true;
    }
    size_t head_length = end + 4;
    i = n - (c->head.size() - head_length);
    if (!CheckUpgrade(c, std::string_view(c->head).substr(0, head_length))) return false;
    std::string().swap(c->head);
    OnUpgraded(c);
    if (c->fd < 0) return false;
  }
  while (i < n) {
    if (c->close_received) {
      Fail(c, kErrData, "data after the close frame");
      return false;
    }
    if (!c->in_payload) {
      if (!c->header.Feed(data, n, &i, &c->frame)) break;
      const wsb::FrameHeader& f = c->frame;
      if (const char* problem = wsb::ServerFrameProblem(f, c->in_msg)) {
        Fail(c, kErrData, std::string(problem) + " (opcode " + std::to_string(f.opcode) + ")");
        return false;
      }
      if ((f.opcode & 0x8) == 0) {
        if (f.opcode != wsb::kOpContinuation) {
          if (!c->awaiting) {
            Fail(c, kErrData, "unsolicited message");
            return false;
          }
          c->in_msg = true;
          c->msg_bytes = 0;
        }
        if (c->msg_bytes + f.length > c->w->opt->size) {
          Fail(c, kErrData, "echo longer than the message sent");
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
        size_t bad = wsb::VerifyPattern(c->seed, c->msg_bytes, data + i, take);
        if (bad != take) {
          Fail(c, kErrData,
               "wrong echo byte at offset " + std::to_string(c->msg_bytes + bad) + " of message " +
                   std::to_string(c->seq));
          return false;
        }
        c->msg_bytes += take;
      }
      i += take;
      c->payload_left -= take;
      if (c->payload_left > 0) continue;
      c->in_payload = false;
    }
    // A whole frame is in.
    if ((c->frame.opcode & 0x8) != 0) {
      if (!ControlDone(c)) return false;
    } else if (c->frame.fin) {
      c->in_msg = false;
      if (c->msg_bytes != c->w->opt->size) {
        Fail(c, kErrData, "echo shorter than the message sent");
        return false;
      }
      OnMessage(c);
      if (c->fd < 0) return false;
    }
  }
  return true;
}

void OnReadable(Conn* c) {
  wsb::RecvEnd end = wsb::RecvUntilBlocked(c->fd, c->w->rbuf, [c](const uint8_t* data, size_t n) {
    return Consume(c, data, n) && c->fd >= 0;
  });
  if (end == wsb::RecvEnd::kStopped || end == wsb::RecvEnd::kDrained) return;
  if (c->st == St::kClosing && c->close_received) {
    OnClosed(c);  // EOF (or reset) after the close handshake: done
    return;
  }
  Fail(c, kErrClosed,
       end == wsb::RecvEnd::kClosed ? "connection closed by the peer" : Errno("recv"));
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

void OnTimer(evutil_socket_t, short, void* arg) {
  Conn* c = static_cast<Conn*>(arg);
  switch (c->st) {
    case St::kConnecting:
      Fail(c, kErrTimeout, "connect timed out");
      break;
    case St::kUpgrading:
      Fail(c, kErrTimeout, "no upgrade response in time");
      break;
    case St::kOpen:
      Fail(c, kErrTimeout, "no echo in time");
      break;
    case St::kClosing:
      Fail(c, kErrTimeout,
           c->close_received ? "server did not close TCP after the close frames"
                             : "no close frame in time");
      break;
    case St::kBackoff:
      if (c->w->stop || wsb::NowNs() >= c->w->end_ns) {
        c->st = St::kDone;
        Finish(c);
      } else {
        StartCycle(c);
      }
      break;
    default:
      break;
  }
}

void StartCycle(Conn* c) { StartConnect(c); }

void OpenMore(Worker* w) {
  while (w->next_open < w->conns.size() && w->connecting < w->connect_cap) {
    Conn* c = w->conns[w->next_open++].get();
    ++w->connecting;
    StartConnect(c);
  }
}

// End of the measured window: stop starting work, then give in-flight work kDrainSeconds.
void OnEndTimer(evutil_socket_t, short, void* arg) {
  Worker* w = static_cast<Worker*>(arg);
  if (!w->stop) {
    w->stop = true;
    for (auto& c : w->conns) {
      if (c->st == St::kBackoff && c->task) {
        evtimer_del(c->timer);
        c->st = St::kDone;
        Finish(c.get());
      }
    }
    if (w->pending == 0) return;
    timeval tv = ToTimeval(kDrainSeconds);
    evtimer_add(w->end_timer, &tv);
    return;
  }
  for (auto& c : w->conns) {
    if (c->task) Fail(c.get(), kErrTimeout, "still busy after the end of the run");
  }
}

// Runs the event loop until every connection has finished its work in this phase.
void RunLoop(Worker* w) {
  while (w->pending > 0) {
    if (event_base_loop(w->base, EVLOOP_ONCE) != 0) break;  // nothing left to wait for
  }
}

void OnHoldTimer(evutil_socket_t, short, void* arg) { *static_cast<bool*>(arg) = true; }

void ClosePhase(Worker* w) {
  w->phase = Phase::kClose;
  w->pending = 0;
  for (auto& c : w->conns) {
    if (c->fd >= 0 && c->upgraded && c->st == St::kOpen) {
      c->task = true;
      ++w->pending;
    }
  }
  for (auto& c : w->conns) {
    if (c->task) SendClose(c.get());
  }
  RunLoop(w);
}

void RunWorker(Worker* w, std::barrier<PhaseStart>* sync) {
  const Options& o = *w->opt;
  for (auto& c : w->conns) {
    c->w = w;
    c->timer = evtimer_new(w->base, OnTimer, c.get());
  }
  w->end_timer = evtimer_new(w->base, OnEndTimer, w);

  if (o.mode == Mode::kEcho || o.mode == Mode::kIdle) {
    w->phase = Phase::kConnect;
    w->pending = static_cast<int>(w->conns.size());
    for (auto& c : w->conns) c->task = true;
    OpenMore(w);
    RunLoop(w);
  }
  w->opened = w->open_now;
  sync->arrive_and_wait();
  uint64_t start = g_phase_start_ns;

  if (o.mode == Mode::kIdle) {
    w->phase = Phase::kHold;
    w->end_ns = start + static_cast<uint64_t>(o.hold * 1e9);
    w->pending = 0;
    bool held = false;
    event* hold_timer = evtimer_new(w->base, OnHoldTimer, &held);
    timeval tv =
        ToTimeval(static_cast<double>(w->end_ns - std::min(w->end_ns, wsb::NowNs())) / 1e9);
    evtimer_add(hold_timer, &tv);
    while (!held) {
      if (event_base_loop(w->base, EVLOOP_ONCE) != 0) break;
    }
    event_free(hold_timer);
    w->open_at_end = w->open_now;
  } else {
    w->phase = Phase::kMeasure;
    w->end_ns = start + static_cast<uint64_t>(o.duration * 1e9);
    w->pending = 0;
    for (auto& c : w->conns) {
      if (o.mode == Mode::kHandshake || (c->upgraded && c->st == St::kOpen)) {
        c->task = true;
        ++w->pending;
      }
    }
    for (auto& c : w->conns) {
      if (!c->task) continue;
      if (o.mode == Mode::kHandshake) {
        StartCycle(c.get());
      } else {
        SendMessage(c.get());
      }
    }
    timeval tv =
        ToTimeval(static_cast<double>(w->end_ns - std::min(w->end_ns, wsb::NowNs())) / 1e9);
    evtimer_add(w->end_timer, &tv);
    RunLoop(w);
    evtimer_del(w->end_timer);
  }
  ClosePhase(w);

  for (auto& c : w->conns) {
    if (c->fd >= 0) CloseFd(c.get());
    event_free(c->timer);
    c->timer = nullptr;
  }
  event_free(w->end_timer);
}

constexpr const char* kUsage =
    "Usage: wsbench echo|handshake|idle [options]\n"
    "  -a HOST        target IPv4 address (default 127.0.0.1)\n"
    "  -p PORT        target port (required)\n"
    "  -P PATH        request path (default /)\n"
    "  -c N           connections (echo, idle) or concurrent loops (handshake) (default 10)\n"
    "  -s BYTES       message size (default 64)\n"
    "  -d SECONDS     measured duration of echo and handshake (default 5)\n"
    "  -H SECONDS     how long idle holds its connections (default 5)\n"
    "  -t THREADS     threads, one event_base each (default 1)\n"
    "  --src A-B      source addresses 127.0.0.A..127.0.0.B (default 2-254)\n"
    "  --no-spread    do not bind a source address\n"
    "  --connect-concurrency N  connects in flight at once while opening (default 256)\n"
    "  --timeout SECONDS  per-step timeout: connect+upgrade, echo, close (default 10)\n"
    "  --cpu-core N   echo, handshake: busy time of core N over the measured window\n"
    "  --cpu-pid PID  echo, handshake: utime+stime of PID over the window (repeat or a,b,c)\n"
    "Prints a human summary and one 'RESULT mode=... key=value ...' line. Exit status 1 if any\n"
    "error was counted, 2 on bad usage. idle prints 'IDLE_READY open=N' once all are open.\n";

[[noreturn]] void Usage(const std::string& message) {
  std::fprintf(stderr, "wsbench: %s\n%s", message.c_str(), kUsage);
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
  if (argc < 2) Usage("a mode is required");
  std::string mode = argv[1];
  if (mode == "echo") {
    o.mode = Mode::kEcho;
  } else if (mode == "handshake") {
    o.mode = Mode::kHandshake;
  } else if (mode == "idle") {
    o.mode = Mode::kIdle;
  } else if (mode == "-h" || mode == "--help") {
    std::fputs(kUsage, stdout);
    std::exit(0);
  } else {
    Usage("unknown mode \"" + mode + "\"");
  }
  bool spread_set = false;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Usage(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "-a") {
      o.host = value();
    } else if (arg == "-p") {
      o.port = static_cast<uint16_t>(ParseNumber(arg, value()));
    } else if (arg == "-P") {
      o.path = value();
    } else if (arg == "-c") {
      o.conns = static_cast<int>(ParseNumber(arg, value()));
    } else if (arg == "-s") {
      o.size = static_cast<size_t>(ParseNumber(arg, value()));
    } else if (arg == "-d") {
      o.duration = ParseNumber(arg, value());
    } else if (arg == "-H") {
      o.hold = ParseNumber(arg, value());
    } else if (arg == "-t") {
      o.threads = static_cast<int>(ParseNumber(arg, value()));
    } else if (arg == "--src") {
      std::string v = value();
      if (std::sscanf(v.c_str(), "%d-%d", &o.src_first, &o.src_last) != 2 || o.src_first < 1 ||
          o.src_last > 254 || o.src_first > o.src_last) {
        Usage("--src wants A-B within 1-254");
      }
      spread_set = true;
    } else if (arg == "--no-spread") {
      o.spread = false;
      spread_set = true;
    } else if (arg == "--connect-concurrency") {
      o.connect_concurrency = static_cast<int>(ParseNumber(arg, value()));
    } else if (arg == "--timeout") {
      o.timeout = ParseNumber(arg, value());
    } else if (arg == "--cpu-core") {
      o.cpu_core = static_cast<int>(ParseNumber(arg, value()));
    } else if (arg == "--cpu-pid") {
      std::istringstream list(value());
      std::string pid;
      while (std::getline(list, pid, ',')) {
        if (!pid.empty()) o.cpu_pids.push_back(static_cast<int>(ParseNumber(arg, pid)));
      }
    } else {
      Usage("unknown argument \"" + arg + "\"");
    }
  }
  in_addr probe{};
  if (inet_pton(AF_INET, o.host.c_str(), &probe) != 1) Usage("-a wants an IPv4 address");
  if (o.port == 0) Usage("-p PORT is required");
  if (o.conns < 1) Usage("-c must be at least 1");
  if (o.threads < 1 || o.threads > 256) Usage("-t must be 1..256");
  if (o.connect_concurrency < 1) Usage("--connect-concurrency must be at least 1");
  if (o.mode != Mode::kIdle && o.size < 1) Usage("-s must be at least 1");
  // Source addresses only make sense towards loopback.
  if (!spread_set || o.spread) o.spread = (ntohl(probe.s_addr) >> 24) == 127;
  if (o.threads > o.conns) o.threads = o.conns;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = ParseArgs(argc, argv);
  g_opt = &o;
  std::signal(SIGPIPE, SIG_IGN);

  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < o.threads; ++t) {
    auto w = std::make_unique<Worker>();
    w->opt = &o;
    w->index = t;
    w->base = event_base_new();
    if (w->base == nullptr) {
      std::fprintf(stderr, "wsbench: event_base_new failed\n");
      return 1;
    }
    w->rbuf.resize(kReadChunk);
    w->rng = wsb::SplitMix64(wsb::NowNs() ^ (static_cast<uint64_t>(t) << 48) ^
                             static_cast<uint64_t>(getpid()));
    int share = o.conns / o.threads + (t < o.conns % o.threads ? 1 : 0);
    for (int i = 0; i < share; ++i) w->conns.push_back(std::make_unique<Conn>());
    w->connect_cap = std::max(1, o.connect_concurrency / o.threads);
    workers.push_back(std::move(w));
  }

  std::barrier<PhaseStart> sync(o.threads + 1);
  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back(RunWorker, w.get(), &sync);

  sync.arrive_and_wait();  // every thread has opened its connections (echo, idle)
  if (o.mode == Mode::kIdle) {
    int opened = 0;
    for (auto& w : workers) opened += w->opened;
    std::printf("IDLE_READY open=%d\n", opened);
    std::fflush(stdout);
  } else {
    // The workers count only what completes before start + D; sample the CPU right then.
    uint64_t end_ns = g_phase_start_ns + static_cast<uint64_t>(o.duration * 1e9);
    timespec until{static_cast<time_t>(end_ns / 1000000000ull),
                   static_cast<long>(end_ns % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, nullptr) == EINTR) {
    }
    g_cpu_end = SampleCpu();
  }
  for (auto& t : threads) t.join();

  wsb::LogHistogram hist, hist2;
  uint64_t messages = 0, cycles = 0, errors[kErrKinds] = {};
  int opened = 0, open_at_end = 0;
  for (auto& w : workers) {
    hist.Merge(w->hist);
    hist2.Merge(w->hist2);
    messages += w->messages;
    cycles += w->cycles;
    for (int k = 0; k < kErrKinds; ++k) errors[k] += w->errors[k];
    opened += w->opened;
    open_at_end += w->open_at_end;
    event_base_free(w->base);
  }
  uint64_t total_errors = 0;
  std::string breakdown;
  for (int k = 0; k < kErrKinds; ++k) {
    total_errors += errors[k];
    breakdown += std::string(k == 0 ? "" : ", ") + kErrNames[k] + " " + std::to_string(errors[k]);
  }
  auto us = [](double ns) { return ns / 1000.0; };
  std::string target = o.host + ":" + std::to_string(o.port);

  // CPU per completed operation (echoed message or handshake cycle) over the window.
  std::string cpu_human, cpu_result;
  uint64_t ops = o.mode == Mode::kEcho ? messages : cycles;
  if (o.mode != Mode::kIdle && (o.cpu_core >= 0 || !o.cpu_pids.empty())) {
    double tick_s = 1.0 / static_cast<double>(sysconf(_SC_CLK_TCK));
    char buf[256];
    cpu_result += " ops=" + std::to_string(ops);
    auto add = [&](const char* name, bool ok, uint64_t a, uint64_t b) {
      if (!ok || b < a || ops == 0) {
        cpu_result += std::string(" ") + name + "_cpu_s=na " + name + "_us_per_op=na";
        cpu_human += std::string("  cpu       ") + name + ": no sample\n";
        return;
      }
      double secs = static_cast<double>(b - a) * tick_s;
      double per_op = secs * 1e6 / static_cast<double>(ops);
      std::snprintf(buf, sizeof buf, " %s_cpu_s=%.2f %s_us_per_op=%.2f", name, secs, name, per_op);
      cpu_result += buf;
      std::snprintf(buf, sizeof buf,
                    "  cpu       %s: %.2f s busy in the %.1f s window, %.2f us per op\n", name,
                    secs, o.duration, per_op);
      cpu_human += buf;
    };
    if (o.cpu_core >= 0) {
      add("core", g_cpu_start.core_ok && g_cpu_end.core_ok, g_cpu_start.core_busy,
          g_cpu_end.core_busy);
    }
    if (!o.cpu_pids.empty()) {
      add("proc", g_cpu_start.pids_ok && g_cpu_end.pids_ok, g_cpu_start.proc, g_cpu_end.proc);
    }
  }

  switch (o.mode) {
    case Mode::kEcho: {
      double rate = static_cast<double>(messages) / o.duration;
      double mb = rate * static_cast<double>(o.size) * 2 / 1e6;
      std::printf("wsbench echo -> %s: %d connections x %zu B, %.1f s, %d thread(s)\n",
                  target.c_str(), o.conns, o.size, o.duration, o.threads);
      std::printf("  messages  %" PRIu64
                  " echoed and verified: %.0f msgs/s, %.2f MB/s payload "
                  "(both ways)\n",
                  messages, rate, mb);
      std::printf(
          "  latency   p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us, mean %.1f us\n",
          us(hist.Percentile(50)), us(hist.Percentile(99)), us(hist.Percentile(99.9)),
          us(static_cast<double>(hist.max())), us(hist.mean()));
      std::printf("  errors    %" PRIu64 " (%s)\n", total_errors, breakdown.c_str());
      std::fputs(cpu_human.c_str(), stdout);
      std::printf(
          "RESULT mode=echo conns=%d size=%zu msgs_per_s=%.0f mb_per_s=%.2f p50_us=%.1f "
          "p99_us=%.1f p999_us=%.1f%s errors=%" PRIu64 "\n",
          o.conns, o.size, rate, mb, us(hist.Percentile(50)), us(hist.Percentile(99)),
          us(hist.Percentile(99.9)), cpu_result.c_str(), total_errors);
      break;
    }
    case Mode::kHandshake: {
      double rate = static_cast<double>(cycles) / o.duration;
      std::printf("wsbench handshake -> %s: %d loops, %.1f s, %d thread(s)\n", target.c_str(),
                  o.conns, o.duration, o.threads);
      std::printf("  cycles    %" PRIu64
                  " (connect, upgrade, %zu B echo, close 1000): %.0f "
                  "handshakes/s\n",
                  cycles, o.size, rate);
      std::printf("  upgrade   p50 %.1f us, p99 %.1f us (connect -> verified 101)\n",
                  us(hist.Percentile(50)), us(hist.Percentile(99)));
      std::printf("  cycle     p50 %.1f us, p99 %.1f us (connect -> server's TCP close)\n",
                  us(hist2.Percentile(50)), us(hist2.Percentile(99)));
      std::printf("  errors    %" PRIu64 " (%s)\n", total_errors, breakdown.c_str());
      std::fputs(cpu_human.c_str(), stdout);
      std::printf(
          "RESULT mode=handshake conns=%d handshakes_per_s=%.0f p50_us=%.1f p99_us=%.1f "
          "p999_us=%.1f cycle_p50_us=%.1f cycle_p99_us=%.1f%s errors=%" PRIu64 "\n",
          o.conns, rate, us(hist.Percentile(50)), us(hist.Percentile(99)),
          us(hist.Percentile(99.9)), us(hist2.Percentile(50)), us(hist2.Percentile(99)),
          cpu_result.c_str(), total_errors);
      break;
    }
    case Mode::kIdle:
      std::printf("wsbench idle -> %s: %d connections held %.1f s, %d thread(s)\n", target.c_str(),
                  o.conns, o.hold, o.threads);
      std::printf("  open      %d after opening, %d at the end of the hold\n", opened, open_at_end);
      std::printf("  errors    %" PRIu64 " (%s)\n", total_errors, breakdown.c_str());
      std::printf("RESULT mode=idle conns=%d open=%d opened=%d errors=%" PRIu64 "\n", o.conns,
                  open_at_end, opened, total_errors);
      break;
  }
  return total_errors == 0 ? 0 : 1;
}
