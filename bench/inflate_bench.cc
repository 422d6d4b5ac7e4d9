// inflate_bench: CPU cost of limits.compression: inspect, without the network in the way.
//
// Times ws::InflateCounter (the code wsgate runs per compressed message) over messages a
// permessage-deflate sender made, with and without context takeover, and prints ns per
// message and MB/s of inflated output. Usage: inflate_bench [SIZE] [MESSAGES] [WINDOW_BITS]
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "proxy/ws/inflate_counter.h"

namespace {

// JSON-like text, compressible about 5:1 like typical API traffic.
std::string Message(size_t size, unsigned seed) {
  std::string out = "[";
  for (unsigned i = seed; out.size() < size; ++i) {
    out += "{\"id\":" + std::to_string(i) + ",\"name\":\"user" + std::to_string(i % 97) +
           "\",\"price\":" + std::to_string(i * 25 / 100.0) + ",\"tags\":[\"alpha\",\"beta\"]},";
  }
  out.resize(size);
  return out;
}

std::vector<std::string> Compress(const std::vector<std::string>& messages, int bits,
                                  bool takeover) {
  z_stream z{};
  deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY);
  std::vector<std::string> out;
  for (const std::string& m : messages) {
    std::string c(m.size() + 1024, '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(m.data()));
    z.avail_in = static_cast<uInt>(m.size());
    z.next_out = reinterpret_cast<Bytef*>(c.data());
    z.avail_out = static_cast<uInt>(c.size());
    deflate(&z, Z_SYNC_FLUSH);
    c.resize(c.size() - z.avail_out - 4);
    out.push_back(std::move(c));
    if (!takeover) deflateReset(&z);
  }
  deflateEnd(&z);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  size_t size = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 16384;
  size_t count = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 20000;
  int bits = argc > 3 ? std::atoi(argv[3]) : 15;
  std::vector<std::string> messages;
  for (size_t i = 0; i < 64; ++i) messages.push_back(Message(size, static_cast<unsigned>(i * 7)));
  for (bool takeover : {true, false}) {
    std::vector<std::string> compressed = Compress(messages, bits, takeover);
    size_t compressed_bytes = 0;
    for (const auto& c : compressed) compressed_bytes += c.size();
    // With takeover every message depends on the ones before: replay the 64 in order, from a
    // fresh counter each round.
    auto start = std::chrono::steady_clock::now();
    uint64_t inflated = 0;
    for (size_t done = 0; done < count;) {
      wsgate::ws::InflateCounter counter(static_cast<uint8_t>(bits), takeover);
      for (size_t i = 0; i < compressed.size() && done < count; ++i, ++done) {
        counter.BeginMessage(UINT64_MAX);
        const auto* data = reinterpret_cast<const uint8_t*>(compressed[i].data());
        if (counter.Feed(data, compressed[i].size()) != wsgate::ws::InflateCounter::Status::kOk ||
            counter.EndMessage() != wsgate::ws::InflateCounter::Status::kOk) {
          std::fprintf(stderr, "inflate failed\n");
          return 1;
        }
        inflated += counter.message_bytes();
      }
    }
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double ratio =
        static_cast<double>(size * compressed.size()) / static_cast<double>(compressed_bytes);
    std::printf(
        "takeover=%s size=%zu bits=%d ratio=%.1f ns_per_message=%.0f "
        "inflated_mb_per_s=%.0f\n",
        takeover ? "yes" : "no", size, bits, ratio, seconds * 1e9 / static_cast<double>(count),
        static_cast<double>(inflated) / seconds / 1e6);
  }
  return 0;
}
