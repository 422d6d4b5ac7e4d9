#include "proxy/ws/inflate_counter.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <random>
#include <string>
#include <vector>

namespace wsgate::ws {
namespace {

using Bytes = std::vector<uint8_t>;
using Status = InflateCounter::Status;

// A permessage-deflate sender: raw DEFLATE with |window_bits|, each message flushed with
// Z_SYNC_FLUSH and its 0x00 0x00 0xff 0xff tail removed (RFC 7692 §7.2.1).
class Deflater {
 public:
  Deflater(int window_bits, bool context_takeover) : takeover_(context_takeover) {
    // zlib refuses 8 for raw deflate (and uses 9 for it in the zlib format).
    EXPECT_EQ(deflateInit2(&z_, Z_BEST_COMPRESSION, Z_DEFLATED, -std::max(window_bits, 9), 9,
                           Z_DEFAULT_STRATEGY),
              Z_OK);
  }
  ~Deflater() { deflateEnd(&z_); }

  Bytes Compress(const std::string& message) {
    Bytes out(message.size() + 1024);
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(message.data()));
    z_.avail_in = static_cast<uInt>(message.size());
    z_.next_out = out.data();
    z_.avail_out = static_cast<uInt>(out.size());
    EXPECT_EQ(deflate(&z_, Z_SYNC_FLUSH), Z_OK);
    EXPECT_EQ(z_.avail_in, 0u);
    out.resize(out.size() - z_.avail_out);
    EXPECT_GE(out.size(), 4u);
    out.resize(out.size() - 4);  // the tail
    if (!takeover_) deflateReset(&z_);
    return out;
  }

 private:
  z_stream z_{};
  bool takeover_;
};

// Feed |data| in pieces of |piece| bytes, then end the message.
Status Count(InflateCounter& counter, const Bytes& data, uint64_t limit = 1ull << 40,
             size_t piece = SIZE_MAX) {
  counter.BeginMessage(limit);
  for (size_t at = 0; at < data.size(); at += std::min(piece, data.size() - at)) {
    Status s = counter.Feed(data.data() + at, std::min(piece, data.size() - at));
    if (s != Status::kOk) return s;
  }
  return counter.EndMessage();
}

std::string RandomText(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, ' ');
  for (char& c : s) c = static_cast<char>('a' + rng() % 26);
  return s;
}

TEST(InflateCounterTest, Rfc7692Examples) {
  // §7.2.3.1: "Hello" in one message, and in two fragments.
  InflateCounter counter(15, true);
  EXPECT_FALSE(counter.holds_state());  // allocated on first use only
  EXPECT_EQ(Count(counter, {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}), Status::kOk);
  EXPECT_EQ(counter.message_bytes(), 5u);
  EXPECT_TRUE(counter.holds_state());
  // §7.2.3.2: the same message again with context takeover refers back to the first.
  EXPECT_EQ(Count(counter, {0xf2, 0x00, 0x11, 0x00, 0x00}), Status::kOk);
  EXPECT_EQ(counter.message_bytes(), 5u);
  const uint8_t first[] = {0xf2, 0x48, 0xcd};
  const uint8_t second[] = {0xc9, 0xc9, 0x07, 0x00};
  InflateCounter fresh(15, true);
  fresh.BeginMessage(100);
  EXPECT_EQ(fresh.Feed(first, sizeof(first)), Status::kOk);
  EXPECT_EQ(fresh.Feed(second, sizeof(second)), Status::kOk);
  EXPECT_EQ(fresh.EndMessage(), Status::kOk);
  EXPECT_EQ(fresh.message_bytes(), 5u);

  // §7.2.3.3: a stored (uncompressed) block.
  InflateCounter stored(15, false);
  EXPECT_EQ(Count(stored, {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f}),
            Status::kOk);
  EXPECT_EQ(stored.message_bytes(), 5u);
  EXPECT_FALSE(stored.holds_state());  // no context takeover: released after each message

  // §7.2.3.4: a block with BFINAL set; the next message (a new stream) still counts.
  InflateCounter final_block(15, true);
  EXPECT_EQ(Count(final_block, {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00}), Status::kOk);
  EXPECT_EQ(final_block.message_bytes(), 5u);
  EXPECT_EQ(Count(final_block, {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}), Status::kOk);
  EXPECT_EQ(final_block.message_bytes(), 5u);

  // §7.2.3.5: two DEFLATE blocks in one message.
  InflateCounter two_blocks(15, false);
  EXPECT_EQ(Count(two_blocks,
                  {0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00}),
            Status::kOk);
  EXPECT_EQ(two_blocks.message_bytes(), 5u);
}

TEST(InflateCounterTest, ExactCountsAcrossSplitFeeds) {
  Deflater deflater(15, true);
  InflateCounter counter(15, true);
  for (size_t size : {0u, 1u, 1000u, 70000u, 300000u}) {
    std::string text = RandomText(size, static_cast<uint32_t>(size)) + std::string(size, 'x');
    Bytes data = deflater.Compress(text);
    // Fed a byte at a time, or 7 at a time: reads may split anywhere.
    EXPECT_EQ(Count(counter, data, 1ull << 40, size % 2 == 0 ? 1 : 7), Status::kOk) << size;
    EXPECT_EQ(counter.message_bytes(), text.size());
  }
}

TEST(InflateCounterTest, LimitStopsAtOnce) {
  // A bomb: 100 MB of zeros is about 100 KB compressed; counting stops right past the limit.
  Deflater deflater(15, false);
  std::string zeros(10 * 1024 * 1024, '\0');
  Bytes data = deflater.Compress(zeros);
  InflateCounter counter(15, false);
  EXPECT_EQ(Count(counter, data, 4096), Status::kTooBig);
  EXPECT_GT(counter.message_bytes(), 4096u);
  EXPECT_LE(counter.message_bytes(), 4096u + 16 * 1024);  // at most one scratch buffer past it
  EXPECT_FALSE(counter.holds_state());
  // Exactly at the limit passes; one byte less does not.
  Bytes hello = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
  EXPECT_EQ(Count(counter, hello, 5), Status::kOk);
  EXPECT_EQ(Count(counter, hello, 4), Status::kTooBig);
}

TEST(InflateCounterTest, ContextTakeoverMatters) {
  // The second message repeats the first: with takeover it is a back-reference into the
  // first message's data, which a counter without takeover cannot resolve.
  std::string text = RandomText(2000, 7);
  Deflater sender(15, true);
  Bytes one = sender.Compress(text);
  Bytes two = sender.Compress(text);
  ASSERT_LT(two.size(), 100u);
  InflateCounter with(15, true);
  EXPECT_EQ(Count(with, one), Status::kOk);
  EXPECT_EQ(Count(with, two), Status::kOk);
  EXPECT_EQ(with.message_bytes(), text.size());
  InflateCounter without(15, false);
  EXPECT_EQ(Count(without, one), Status::kOk);
  EXPECT_FALSE(without.holds_state());
  EXPECT_EQ(Count(without, two), Status::kInvalid);
  // A sender without takeover is read the same by both.
  Deflater fresh_sender(15, false);
  Bytes a = fresh_sender.Compress(text);
  Bytes b = fresh_sender.Compress(text);
  InflateCounter reader(15, false);
  EXPECT_EQ(Count(reader, a), Status::kOk);
  EXPECT_EQ(Count(reader, b), Status::kOk);
  EXPECT_EQ(reader.message_bytes(), text.size());
}

TEST(InflateCounterTest, EveryWindowSize) {
  for (int bits = 8; bits <= 15; ++bits) {
    SCOPED_TRACE(bits);
    // Repeats at a distance just inside the window (zlib's deflate uses 9 when asked for 8).
    size_t distance = (size_t{1} << std::max(bits, 9)) - 300;
    std::string block = RandomText(distance, static_cast<uint32_t>(bits));
    std::string text = block + block + block;
    Deflater deflater(bits, true);
    InflateCounter counter(static_cast<uint8_t>(bits), true);
    for (int round = 0; round < 3; ++round) {
      EXPECT_EQ(Count(counter, deflater.Compress(text), 1ull << 40, 100), Status::kOk);
      EXPECT_EQ(counter.message_bytes(), text.size());
    }
  }
  // A sender that uses a larger window than it agreed cannot be read.
  std::string block = RandomText(20000, 1);
  Deflater wide(15, false);
  Bytes data = wide.Compress(block + block);
  InflateCounter narrow(10, false);
  EXPECT_EQ(Count(narrow, data), Status::kInvalid);
}

TEST(InflateCounterTest, InvalidData) {
  InflateCounter counter(15, true);
  // BTYPE 11 is reserved.
  EXPECT_EQ(Count(counter, {0xff, 0xff, 0xff, 0xff}), Status::kInvalid);
  EXPECT_FALSE(counter.holds_state());  // an error releases the state
  // A stored block whose length check fails.
  InflateCounter stored(15, true);
  EXPECT_EQ(Count(stored, {0x00, 0x05, 0x00, 0x00, 0x00, 0x48}), Status::kInvalid);
  // Split across feeds: the error shows once the bytes that make it arrive.
  InflateCounter split(15, false);
  split.BeginMessage(1000);
  const uint8_t start[] = {0x00, 0x05, 0x00};
  const uint8_t rest[] = {0x00, 0x48};
  EXPECT_EQ(split.Feed(start, sizeof(start)), Status::kOk);
  EXPECT_EQ(split.Feed(rest, sizeof(rest)), Status::kInvalid);
  // Fixed Huffman: a back-reference before any data ("distance too far back").
  InflateCounter too_far(15, false);
  EXPECT_EQ(Count(too_far, {0x03, 0x02}), Status::kInvalid);
}

}  // namespace
}  // namespace wsgate::ws
