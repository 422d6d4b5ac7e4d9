#include "proxy/ws/inflate_counter.h"

#include <zlib.h>

#include <algorithm>

namespace wsgate::ws {

struct InflateCounter::Stream {
  z_stream z{};
};

namespace {

// Output is counted and dropped: the scratch size only sets how often inflate() returns.
constexpr size_t kScratchBytes = 16 * 1024;
constexpr uint8_t kTail[4] = {0x00, 0x00, 0xff, 0xff};

}  // namespace

InflateCounter::InflateCounter(uint8_t window_bits, bool context_takeover)
    // A zlib deflater asked for an 8-bit window uses 9 (see zlib.h, deflateInit2), and a 9-bit
    // window decodes everything an 8-bit one does, so 8 is read with 9.
    : window_bits_(window_bits < 9 ? 9 : (window_bits > 15 ? 15 : window_bits)),
      context_takeover_(context_takeover) {}

InflateCounter::~InflateCounter() { Release(); }

void InflateCounter::Release() {
  if (stream_ == nullptr) return;
  inflateEnd(&stream_->z);
  stream_.reset();
}

void InflateCounter::BeginMessage(uint64_t limit) {
  message_bytes_ = 0;
  limit_ = limit;
  stream_ended_ = false;
}

InflateCounter::Status InflateCounter::Feed(const uint8_t* data, size_t length) {
  Status status = Status::kOk;
  // Bytes after a BFINAL block are ignored; zlib counts input in 32 bits.
  while (length > 0 && !stream_ended_ && status == Status::kOk) {
    size_t chunk = std::min<size_t>(length, 1u << 30);
    status = Inflate(data, chunk);
    data += chunk;
    length -= chunk;
  }
  if (status != Status::kOk) Release();  // the connection ends; hold nothing until it does
  return status;
}

InflateCounter::Status InflateCounter::EndMessage() {
  Status status = Status::kOk;
  if (!stream_ended_) status = Inflate(kTail, sizeof(kTail));
  if (status == Status::kOk && stream_ != nullptr && context_takeover_ && stream_ended_) {
    // A BFINAL block ended the DEFLATE stream, but the next message may still refer back to
    // this one's data: start a new stream that keeps the window.
    uint8_t window[1u << 15];
    uInt window_length = sizeof(window);
    if (inflateGetDictionary(&stream_->z, window, &window_length) != Z_OK ||
        inflateReset(&stream_->z) != Z_OK ||
        inflateSetDictionary(&stream_->z, window, window_length) != Z_OK) {
      status = Status::kInvalid;
    }
  }
  if (!context_takeover_ || status != Status::kOk) Release();
  return status;
}

InflateCounter::Status InflateCounter::Inflate(const uint8_t* data, size_t length) {
  if (stream_ == nullptr) {
    stream_ = std::make_unique<Stream>();
    // Negative window bits: raw DEFLATE, no zlib header (RFC 7692 §7.2.1).
    if (inflateInit2(&stream_->z, -static_cast<int>(window_bits_)) != Z_OK) {
      stream_.reset();
      return Status::kNoMemory;
    }
  }
  z_stream& z = stream_->z;
  uint8_t scratch[kScratchBytes];
  z.next_in = const_cast<Bytef*>(data);
  z.avail_in = static_cast<uInt>(length);
  while (true) {
    z.next_out = scratch;
    z.avail_out = sizeof(scratch);
    int rc = inflate(&z, Z_SYNC_FLUSH);
    message_bytes_ += sizeof(scratch) - z.avail_out;
    if (message_bytes_ > limit_) return Status::kTooBig;
    switch (rc) {
      case Z_OK:
        break;
      case Z_STREAM_END:
        stream_ended_ = true;
        return Status::kOk;
      case Z_BUF_ERROR:
        return Status::kOk;  // no progress possible: all input used, nothing pending
      case Z_MEM_ERROR:
        return Status::kNoMemory;
      default:  // Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR
        return Status::kInvalid;
    }
    // More output may be pending even when all input is in.
    if (z.avail_in == 0 && z.avail_out != 0) return Status::kOk;
  }
}

}  // namespace wsgate::ws
