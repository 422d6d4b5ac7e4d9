// Small helpers shared by wsbench, soak and echo_backend: clock, handshake accept key, RFC 6455
// frame headers, masking, a non-blocking receive loop, and a log-bucket latency histogram.
#pragma once

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

namespace wsb {

static_assert(std::endian::native == std::endian::little,
              "the word-wise masking assumes little endian");

inline uint64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

inline constexpr std::string_view kWebSocketGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

inline std::string Base64(const uint8_t* data, size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  int len =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
  out.resize(len > 0 ? static_cast<size_t>(len) : 0);
  return out;
}

// Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2).
inline std::string AcceptFor(std::string_view key) {
  std::string input(key);
  input.append(kWebSocketGuid);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &length, EVP_sha1(), nullptr) != 1) return {};
  return Base64(digest, length);
}

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// --- frames ---------------------------------------------------------------------------------

inline constexpr uint8_t kOpContinuation = 0x0;
inline constexpr uint8_t kOpText = 0x1;
inline constexpr uint8_t kOpBinary = 0x2;
inline constexpr uint8_t kOpClose = 0x8;
inline constexpr uint8_t kOpPing = 0x9;
inline constexpr uint8_t kOpPong = 0xA;
inline constexpr size_t kMaxFrameHeader = 14;

// Appends a frame header. `first` is FIN/RSV/opcode; `mask` (4 bytes) or nullptr.
inline void AppendHeader(std::vector<uint8_t>* out, uint8_t first, uint64_t length,
                         const uint8_t* mask) {
  uint8_t h[kMaxFrameHeader];
  size_t n = 0;
  h[n++] = first;
  uint8_t mask_bit = mask != nullptr ? 0x80 : 0x00;
  if (length < 126) {
    h[n++] = static_cast<uint8_t>(mask_bit | length);
  } else if (length <= 0xffff) {
    h[n++] = static_cast<uint8_t>(mask_bit | 126);
    h[n++] = static_cast<uint8_t>(length >> 8);
    h[n++] = static_cast<uint8_t>(length);
  } else {
    h[n++] = static_cast<uint8_t>(mask_bit | 127);
    for (int shift = 56; shift >= 0; shift -= 8) h[n++] = static_cast<uint8_t>(length >> shift);
  }
  if (mask != nullptr) {
    std::memcpy(h + n, mask, 4);
    n += 4;
  }
  out->insert(out->end(), h, h + n);
}

// Full header size, known once the first two bytes are in.
inline size_t HeaderSize(uint8_t second) {
  size_t n = 2;
  uint8_t len7 = second & 0x7f;
  if (len7 == 126) n += 2;
  if (len7 == 127) n += 8;
  if ((second & 0x80) != 0) n += 4;
  return n;
}

struct FrameHeader {
  bool fin = false;
  uint8_t rsv = 0;
  uint8_t opcode = 0;
  bool masked = false;
  uint64_t length = 0;
  uint8_t mask[4] = {0, 0, 0, 0};
};

// `h` holds exactly HeaderSize(h[1]) bytes.
inline FrameHeader DecodeHeader(const uint8_t* h) {
  FrameHeader f;
  f.fin = (h[0] & 0x80) != 0;
  f.rsv = static_cast<uint8_t>((h[0] >> 4) & 0x7);
  f.opcode = h[0] & 0x0f;
  f.masked = (h[1] & 0x80) != 0;
  uint8_t len7 = h[1] & 0x7f;
  size_t pos = 2;
  if (len7 == 126) {
    f.length = (static_cast<uint64_t>(h[2]) << 8) | h[3];
    pos = 4;
  } else if (len7 == 127) {
    f.length = 0;
    for (int i = 0; i < 8; ++i) f.length = (f.length << 8) | h[2 + i];
    pos = 10;
  } else {
    f.length = len7;
  }
  if (f.masked) std::memcpy(f.mask, h + pos, 4);
  return f;
}

// Collects one frame header across reads. Feed() consumes from data[*i..n) and returns true
// once a whole header has been decoded into |out|; bytes() keeps it until the next header.
class HeaderReader {
 public:
  bool Feed(const uint8_t* data, size_t n, size_t* i, FrameHeader* out) {
    while (true) {
      size_t take = std::min(n - *i, need_ - have_);
      std::memcpy(bytes_ + have_, data + *i, take);
      have_ += take;
      *i += take;
      if (have_ < need_) return false;
      if (need_ == 2) {
        need_ = HeaderSize(bytes_[1]);
        if (need_ > 2) continue;
      }
      *out = DecodeHeader(bytes_);
      Reset();
      return true;
    }
  }
  void Reset() {
    have_ = 0;
    need_ = 2;
  }
  const uint8_t* bytes() const { return bytes_; }

 private:
  uint8_t bytes_[kMaxFrameHeader] = {};
  size_t have_ = 0;
  size_t need_ = 2;
};

// dst[i] = src[i] ^ mask[(pos + i) % 4]; dst may equal src. Word-wise in the middle.
inline void XorMask(uint8_t* dst, const uint8_t* src, size_t n, const uint8_t mask[4],
                    uint64_t pos) {
  uint8_t rotated[8];
  for (size_t j = 0; j < 8; ++j) rotated[j] = mask[(pos + j) & 3];
  uint64_t word_mask;
  std::memcpy(&word_mask, rotated, 8);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, src + i, 8);
    w ^= word_mask;
    std::memcpy(dst + i, &w, 8);
  }
  for (; i < n; ++i) dst[i] = src[i] ^ rotated[i & 7];
}

// --- payload pattern (wsbench echo, soak) ---------------------------------------------------
// Byte k of message (conn id, seq) is byte k%8 of  seed ^ (uint8(k/8) * 0x0101010101010101),
// seed = SplitMix64 of id and seq: every connection and every message differs, and a shifted,
// truncated or reordered byte is caught.

inline uint64_t PatternWord(uint64_t seed, uint64_t block) {
  return seed ^ (static_cast<uint64_t>(static_cast<uint8_t>(block)) * 0x0101010101010101ull);
}

inline uint8_t PatternByte(uint64_t seed, uint64_t k) {
  return static_cast<uint8_t>(PatternWord(seed, k >> 3) >> (8 * (k & 7)));
}

// Writes bytes 0..n of message `seed`.
inline void FillPattern(uint64_t seed, uint8_t* p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word = PatternWord(seed, i >> 3);
    std::memcpy(p + i, &word, 8);
  }
  for (; i < n; ++i) p[i] = PatternByte(seed, i);
}

// Returns the offset of the first wrong byte in data[0..n) (message offset `pos`), or n.
inline size_t VerifyPattern(uint64_t seed, uint64_t pos, const uint8_t* data, size_t n) {
  size_t i = 0;
  while (i < n && ((pos + i) & 7) != 0) {
    if (data[i] != PatternByte(seed, pos + i)) return i;
    ++i;
  }
  for (; i + 8 <= n; i += 8) {
    uint64_t got;
    std::memcpy(&got, data + i, 8);
    if (got != PatternWord(seed, (pos + i) >> 3)) break;
  }
  for (; i < n; ++i) {
    if (data[i] != PatternByte(seed, pos + i)) return i;
  }
  return n;
}

// --- sockets and the client handshake (wsbench, soak) -----------------------------------------

inline timeval ToTimeval(double seconds) {
  if (seconds < 0) seconds = 0;
  timeval tv;
  tv.tv_sec = static_cast<time_t>(seconds);
  tv.tv_usec = static_cast<suseconds_t>((seconds - static_cast<double>(tv.tv_sec)) * 1e6);
  return tv;
}

enum class SendResult { kAll, kBlocked, kFailed };

// Sends out[*off..] until done or the socket is full; kAll empties *out. errno tells a kFailed.
inline SendResult SendQueued(int fd, std::vector<uint8_t>* out, size_t* off) {
  while (*off < out->size()) {
    ssize_t n = send(fd, out->data() + *off, out->size() - *off, MSG_NOSIGNAL);
    if (n > 0) {
      *off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return SendResult::kBlocked;
    return SendResult::kFailed;
  }
  out->clear();
  *off = 0;
  return SendResult::kAll;
}

// SendQueued, keeping |write_event| added exactly while bytes wait for the socket (|*watching|
// says whether it is): added when the socket is full, removed once everything went out.
inline SendResult SendWatchingWritable(int fd, std::vector<uint8_t>* out, size_t* off,
                                       event* write_event, bool* watching) {
  SendResult r = SendQueued(fd, out, off);
  bool want = r == SendResult::kBlocked;
  if (r != SendResult::kFailed && want != *watching) {
    if (want) {
      event_add(write_event, nullptr);
    } else {
      event_del(write_event);
    }
    *watching = want;
  }
  return r;
}

// Binds to source 127.0.0.`last`; connect() then picks the port for the whole 4-tuple
// (IP_BIND_ADDRESS_NO_PORT), so spreading over addresses multiplies the ephemeral ports.
// How RecvUntilBlocked stopped: |consume| said stop, the socket has nothing more for now, or
// the peer closed (recv returned 0) or failed (errno says why).
enum class RecvEnd { kStopped, kDrained, kClosed, kFailed };

// Read |fd| into |buf| and hand each chunk to |consume(data, n)| (false = stop) until the
// socket is drained: a short read means it is, which spares the extra EAGAIN recv.
template <typename Consume>
RecvEnd RecvUntilBlocked(int fd, std::vector<uint8_t>& buf, Consume&& consume) {
  while (true) {
    ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n > 0) {
      if (!consume(buf.data(), static_cast<size_t>(n))) return RecvEnd::kStopped;
      if (static_cast<size_t>(n) < buf.size()) return RecvEnd::kDrained;
      continue;
    }
    if (n == 0) return RecvEnd::kClosed;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? RecvEnd::kDrained : RecvEnd::kFailed;
  }
}

inline bool BindLoopbackSource(int fd, uint32_t last) {
  int one = 1;
  setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
  sockaddr_in src{};
  src.sin_family = AF_INET;
  src.sin_addr.s_addr = htonl((127u << 24) | last);
  return bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) == 0;
}

// The upgrade request with the key made of r1, r2; *expected_accept gets its accept value.
inline std::string UpgradeRequest(std::string_view host, uint16_t port, std::string_view path,
                                  uint64_t r1, uint64_t r2, std::string* expected_accept) {
  uint8_t key_bytes[16];
  std::memcpy(key_bytes, &r1, 8);
  std::memcpy(key_bytes + 8, &r2, 8);
  std::string key = Base64(key_bytes, sizeof(key_bytes));
  *expected_accept = AcceptFor(key);
  std::string request = "GET ";
  request.append(path).append(" HTTP/1.1\r\nHost: ").append(host).append(":");
  request.append(std::to_string(port));
  request.append("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
  request.append(key).append("\r\nSec-WebSocket-Version: 13\r\n\r\n");
  return request;
}

// Close code of a close frame's payload (1005 when it has none).
inline int CloseCode(std::string_view payload) {
  if (payload.size() < 2) return 1005;
  return (static_cast<uint8_t>(payload[0]) << 8) | static_cast<uint8_t>(payload[1]);
}

// --- HTTP head helpers ----------------------------------------------------------------------

inline bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] + 32) : a[i];
    char y = b[i] >= 'A' && b[i] <= 'Z' ? static_cast<char>(b[i] + 32) : b[i];
    if (x != y) return false;
  }
  return true;
}

inline bool IContains(std::string_view haystack, std::string_view needle) {
  if (needle.size() > haystack.size()) return false;
  for (size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    if (IEquals(haystack.substr(i, needle.size()), needle)) return true;
  }
  return false;
}

// Counts the header fields called `name` in `head` (status/request line first, CRLF lines) and
// stores the last one's value, trimmed, in *value.
inline int FindHeader(std::string_view head, std::string_view name, std::string_view* value) {
  int count = 0;
  size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos && pos + 2 < head.size()) {
    size_t start = pos + 2;
    size_t end = head.find("\r\n", start);
    if (end == std::string_view::npos) end = head.size();
    std::string_view line = head.substr(start, end - start);
    size_t colon = line.find(':');
    if (colon != std::string_view::npos && IEquals(line.substr(0, colon), name)) {
      std::string_view v = line.substr(colon + 1);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
      *value = v;
      ++count;
    }
    pos = end;
  }
  return count;
}

// Checks the head of an upgrade response (status line first, up to the blank line): "" for a
// 101 with Upgrade: websocket and the expected accept, else what is wrong. *status gets the
// status code (0 if the status line is not HTTP/1.1).
inline std::string CheckUpgradeResponse(std::string_view head, std::string_view expected_accept,
                                        int* status) {
  std::string_view line = head.substr(0, head.find("\r\n"));
  *status = 0;
  auto digit = [&](size_t i) { return line[i] >= '0' && line[i] <= '9'; };
  if (line.size() >= 12 && line.substr(0, 9) == "HTTP/1.1 " && digit(9) && digit(10) && digit(11)) {
    *status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  }
  if (*status != 101) return "status \"" + std::string(line) + "\"";
  std::string_view accept, upgrade;
  if (FindHeader(head, "Sec-WebSocket-Accept", &accept) != 1 || accept != expected_accept) {
    return "missing or wrong Sec-WebSocket-Accept \"" + std::string(accept) + "\"";
  }
  if (FindHeader(head, "Upgrade", &upgrade) < 1 || !IEquals(upgrade, "websocket")) {
    return "no Upgrade: websocket";
  }
  return "";
}

// What is wrong with a frame header from a server to a client sending binary messages, or
// nullptr: frames come unmasked without RSV bits, control frames final and at most 125 bytes,
// continuations inside a message, and a new message is binary and not inside another.
inline const char* ServerFrameProblem(const FrameHeader& f, bool in_msg) {
  if (f.masked) return "masked frame from the server";
  if (f.rsv != 0) return "RSV bits set";
  if ((f.opcode & 0x8) != 0) return f.length > 125 || !f.fin ? "bad control frame" : nullptr;
  if (f.opcode == kOpContinuation) return in_msg ? nullptr : "continuation without a message";
  if (f.opcode != kOpBinary) return "unexpected opcode";
  return in_msg ? "new message inside a fragmented one" : nullptr;
}

// --- latency histogram ----------------------------------------------------------------------

// HDR-style log-linear buckets: values below 128 are exact; above, every power of two is split
// into 128 equal sub-buckets, so a reported value is within 1/128 (< 0.8 %) of the true one.
class LogHistogram {
 public:
  static constexpr int kSubBits = 7;
  static constexpr uint64_t kSub = uint64_t{1} << kSubBits;
  static constexpr size_t kBuckets = (64 - kSubBits + 1) * kSub;

  LogHistogram() : counts_(kBuckets, 0) {}

  static size_t Index(uint64_t v) {
    if (v < kSub) return static_cast<size_t>(v);
    int msb = std::bit_width(v) - 1;
    int shift = msb - kSubBits;
    return static_cast<size_t>(shift + 1) * kSub + static_cast<size_t>((v >> shift) - kSub);
  }
  // Lowest value and width of a bucket.
  static void Range(size_t index, uint64_t* low, uint64_t* width) {
    if (index < kSub) {
      *low = index;
      *width = 1;
      return;
    }
    int shift = static_cast<int>(index / kSub) - 1;
    uint64_t sub = index % kSub + kSub;
    *low = sub << shift;
    *width = uint64_t{1} << shift;
  }

  void Record(uint64_t v) {
    ++counts_[Index(v)];
    ++total_;
    sum_ += static_cast<double>(v);
    if (v > max_) max_ = v;
    if (total_ == 1 || v < min_) min_ = v;
  }

  void Merge(const LogHistogram& other) {
    for (size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    if (other.total_ > 0) {
      if (total_ == 0 || other.min_ < min_) min_ = other.min_;
      if (other.max_ > max_) max_ = other.max_;
    }
    total_ += other.total_;
    sum_ += other.sum_;
  }

  // The value at percentile p (0..100): the middle of the bucket holding that rank.
  double Percentile(double p) const {
    if (total_ == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(p / 100.0 * static_cast<double>(total_) + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > total_) rank = total_;
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        uint64_t low = 0, width = 0;
        Range(i, &low, &width);
        double mid = static_cast<double>(low) + static_cast<double>(width - 1) / 2.0;
        if (mid > static_cast<double>(max_)) mid = static_cast<double>(max_);
        if (mid < static_cast<double>(min_)) mid = static_cast<double>(min_);
        return mid;
      }
    }
    return static_cast<double>(max_);
  }

  uint64_t total() const { return total_; }
  uint64_t max() const { return max_; }
  uint64_t min() const { return min_; }
  double mean() const { return total_ == 0 ? 0 : sum_ / static_cast<double>(total_); }

 private:
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
  uint64_t max_ = 0;
  uint64_t min_ = 0;
  double sum_ = 0;
};

}  // namespace wsb
