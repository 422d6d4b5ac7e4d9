// HTTP/1.1 message framing (RFC 9112 §6): where a request or response body ends, and a strict,
// incremental chunked-coding decoder.
//
// Pure: no libevent, so it is unit-tested and fuzzed directly. The framing decisions refuse every
// ambiguity a request smuggler relies on: Content-Length with Transfer-Encoding, differing
// Content-Length values, any Transfer-Encoding but a single final "chunked", and, inside chunked
// bodies, anything but strict CRLF, hex sizes that fit 64 bits and well-formed extensions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proxy/http/head_parser.h"

namespace wsgate::http {

enum class BodyKind {
  kNone,        // no body at all
  kLength,      // exactly |length| bytes
  kChunked,     // chunked transfer coding, ends with the last chunk and trailers
  kUntilClose,  // responses only: the body ends when the backend closes
};

struct Framing {
  BodyKind kind = BodyKind::kNone;
  uint64_t length = 0;
  const char* error = nullptr;  // set when the head's framing is invalid (answer 400 / 502)
};

// A request's framing (RFC 9112 §6.1-6.3). Anything ambiguous is an error, never a guess.
Framing RequestFraming(const HeadView& request);

// A response's framing, given the request's method and the response's status (RFC 9112 §6.3).
// A Transfer-Encoding that does not end in chunked makes the body close-delimited; a response
// with both Content-Length and Transfer-Encoding, or differing lengths, is an error.
Framing ResponseFraming(const HeadView& response, bool request_was_head);

// Parse a Content-Length field value list ("42" or "42, 42"): false if invalid or differing.
bool ParseContentLength(std::string_view value, uint64_t* out);

struct ChunkLimits {
  size_t max_line_bytes = 4096;      // one chunk-size line, extensions included
  size_t max_trailer_bytes = 16384;  // the whole trailer section
  size_t max_trailer_fields = 64;
};

// Incremental chunked-body decoder (RFC 9112 §7.1). Framing bytes are fed through Feed(); while
// in_data(), the caller moves up to data_left() payload bytes itself (zero-copy) and reports them
// with ConsumeData(). Feed() returns how many bytes it consumed; it stops at the start of chunk
// data, at the end of the body, or at an error.
class ChunkedDecoder {
 public:
  explicit ChunkedDecoder(ChunkLimits limits = {}) : limits_(limits) {}

  size_t Feed(std::string_view bytes);
  bool in_data() const { return state_ == State::kData; }
  uint64_t data_left() const { return data_left_; }
  void ConsumeData(uint64_t n);
  bool done() const { return state_ == State::kDone; }
  bool failed() const { return state_ == State::kError; }
  const char* error() const { return error_; }
  uint64_t body_bytes() const { return body_bytes_; }  // payload bytes seen so far

 private:
  enum class State {
    kSize,           // chunk-size hex digits
    kSizeWs,         // BWS after the size, before ';'
    kExtBeforeName,  // after ';', BWS then the extension name
    kExtName,
    kExtAfterName,  // BWS, then '=' or ';' or CR
    kExtBeforeValue,
    kExtToken,
    kExtQuoted,
    kExtQuotedEscape,
    kExtAfterQuoted,
    kLineLf,  // CR seen at the end of a size line, need LF
    kData,
    kDataCr,  // CRLF after the chunk data
    kDataLf,
    kTrailerStart,  // at the start of a trailer line (or the final CRLF)
    kTrailerLine,   // inside a trailer field line
    kTrailerLf,     // CR seen in a trailer line
    kFinalLf,       // CR of the empty line that ends the body
    kDone,
    kError,
  };
  size_t Fail(const char* why, size_t consumed);
  bool EndSizeLine();  // the size line is complete: go to data or trailers

  ChunkLimits limits_;
  State state_ = State::kSize;
  const char* error_ = nullptr;
  uint64_t size_ = 0;
  size_t size_digits_ = 0;
  size_t line_bytes_ = 0;
  uint64_t data_left_ = 0;
  uint64_t body_bytes_ = 0;
  size_t trailer_bytes_ = 0;
  size_t trailer_fields_ = 0;
  bool trailer_seen_colon_ = false;  // inside the current trailer line
};

}  // namespace wsgate::http
