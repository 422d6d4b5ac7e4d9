// Fuzz target: permessage-deflate (proxy/http/extensions.h and proxy/ws/inflate_counter.h).
//
// Input layout: byte 0 is a selector.
//   bit 0 = 0: the rest is a Sec-WebSocket-Extensions value (and one element of it).
//     * ParseDeflateResponse either fails with a reason or gives window bits in 8..15, and
//       parameters printed back from its result parse to the same result;
//     * StripDeflateOffers leaves no deflate element, keeps the others, and is idempotent;
//     * RequireClientNoContextTakeover on a 101 answering it adds exactly that parameter, and
//       a valid answer without it still parses, now with it.
//   bit 0 = 1: the rest is one compressed message; bits 1-3 pick the window (8..15), bit 4
//     context takeover, bits 5-6 the limit profile.
//     * the count is the same however the message is split into feeds;
//     * a message that inflates within the limit counts exactly what zlib's own inflate
//       produces; past the limit the count stops within one scratch buffer of it.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "proxy/http/extensions.h"
#include "proxy/http/head_parser.h"
#include "proxy/ws/inflate_counter.h"

namespace {

using wsgate::ws::InflateCounter;

void FuzzExtensions(std::string_view value) {
  wsgate::http::DeflateParams params;
  std::string error = wsgate::http::ParseDeflateResponse(value, &params);
  if (error.empty()) {
    FUZZ_CHECK(params.server_max_window_bits >= 8 && params.server_max_window_bits <= 15);
    FUZZ_CHECK(params.client_max_window_bits >= 8 && params.client_max_window_bits <= 15);
    std::string printed = "permessage-deflate";
    if (params.server_no_context_takeover) printed += "; server_no_context_takeover";
    if (params.client_no_context_takeover) printed += "; client_no_context_takeover";
    printed += "; server_max_window_bits=" + std::to_string(params.server_max_window_bits);
    printed += "; client_max_window_bits=" + std::to_string(params.client_max_window_bits);
    wsgate::http::DeflateParams again;
    FUZZ_CHECK(wsgate::http::ParseDeflateResponse(printed, &again).empty());
    FUZZ_CHECK(again.server_no_context_takeover == params.server_no_context_takeover &&
               again.client_no_context_takeover == params.client_no_context_takeover &&
               again.server_max_window_bits == params.server_max_window_bits &&
               again.client_max_window_bits == params.client_max_window_bits);
  }
  // A 101 answering |value|: the rewrite adds client_no_context_takeover to that answer alone.
  std::string head = "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: ";
  head.append(value).append("\r\n\r\n");
  std::string required = wsgate::http::RequireClientNoContextTakeover(head);
  FUZZ_CHECK(required.find("; client_no_context_takeover\r\n") != std::string::npos);
  std::string_view answer = value;
  while (!answer.empty() && (answer.back() == ' ' || answer.back() == '\t')) {
    answer.remove_suffix(1);
  }
  if (value.find_first_of("\r\n") == std::string_view::npos) {
    // One line: exactly that field line, its trailing blanks dropped, plus the parameter.
    std::string line = "Sec-WebSocket-Extensions: " + std::string(answer);
    while (line.back() == ' ') line.pop_back();
    FUZZ_CHECK(required == "HTTP/1.1 101 Switching Protocols\r\n" + line +
                               "; client_no_context_takeover\r\n\r\n");
    std::string forced_answer = std::string(answer) + "; client_no_context_takeover";
    wsgate::http::DeflateParams forced;
    if (error.empty() && !params.client_no_context_takeover && !answer.empty() &&
        wsgate::http::ParseDeflateResponse(forced_answer, &forced).empty()) {
      FUZZ_CHECK(forced.client_no_context_takeover);
      FUZZ_CHECK(forced.server_max_window_bits == params.server_max_window_bits);
    }
  }
  std::string stripped = wsgate::http::StripDeflateOffers(value);
  FUZZ_CHECK(wsgate::http::StripDeflateOffers(stripped) == stripped);
  if (stripped.empty()) return;
  wsgate::http::ForEachListItem(stripped, [](std::string_view item) {
    std::string_view name = wsgate::http::ListItemName(item);
    FUZZ_CHECK(!name.empty());
    FUZZ_CHECK(!wsgate::http::EqualsIgnoreCase(name, "permessage-deflate"));
    FUZZ_CHECK(!wsgate::http::EqualsIgnoreCase(name, "x-webkit-deflate-frame"));
    return false;
  });
}

// zlib's own count of what |message| (plus the tail) inflates to, up to |cap| bytes; -1 if
// it is not valid DEFLATE before reaching the cap.
int64_t ReferenceCount(const uint8_t* message, size_t size, int window_bits, uint64_t cap) {
  z_stream z{};
  if (inflateInit2(&z, -window_bits) != Z_OK) return -1;
  std::vector<uint8_t> input(message, message + size);
  const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
  input.insert(input.end(), tail, tail + 4);
  std::vector<uint8_t> out(64 * 1024);
  z.next_in = input.data();
  z.avail_in = static_cast<uInt>(input.size());
  uint64_t total = 0;
  int64_t result = 0;
  while (true) {
    z.next_out = out.data();
    z.avail_out = static_cast<uInt>(out.size());
    int rc = inflate(&z, Z_SYNC_FLUSH);
    total += out.size() - z.avail_out;
    if (total > cap) {
      result = static_cast<int64_t>(total);
      break;
    }
    if (rc == Z_STREAM_END || rc == Z_BUF_ERROR ||
        (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0)) {
      result = static_cast<int64_t>(total);
      break;
    }
    if (rc != Z_OK) {
      result = -1;
      break;
    }
  }
  inflateEnd(&z);
  return result;
}

void FuzzInflate(uint8_t selector, const uint8_t* data, size_t size) {
  const int window_bits = 8 + ((selector >> 1) & 7);
  const bool takeover = (selector & 0x10) != 0;
  static constexpr uint64_t kLimits[] = {0, 100, 64 * 1024, 8 * 1024 * 1024};
  const uint64_t limit = kLimits[(selector >> 5) & 3];

  InflateCounter whole(static_cast<uint8_t>(window_bits), takeover);
  whole.BeginMessage(limit);
  InflateCounter::Status whole_status = whole.Feed(data, size);
  if (whole_status == InflateCounter::Status::kOk) whole_status = whole.EndMessage();

  InflateCounter pieces(static_cast<uint8_t>(window_bits), takeover);
  pieces.BeginMessage(limit);
  wsgate::fuzz::Rng rng(wsgate::fuzz::HashBytes(data, size));
  InflateCounter::Status pieces_status = InflateCounter::Status::kOk;
  for (size_t at = 0; at < size && pieces_status == InflateCounter::Status::kOk;) {
    size_t n = rng.Range(1, size - at);
    pieces_status = pieces.Feed(data + at, n);
    at += n;
  }
  if (pieces_status == InflateCounter::Status::kOk) pieces_status = pieces.EndMessage();
  if (window_bits < 15 && whole_status != pieces_status) {
    // zlib checks a back-reference against the window plus what the current inflate() call
    // has written, so with a window under 32 KiB a distance the sender's window does not allow
    // passes when its target lies in the same call's output and fails when a split put it in an
    // earlier call: only such an invalid stream may differ, and only as kInvalid on one side.
    FUZZ_CHECK(whole_status == InflateCounter::Status::kInvalid ||
               pieces_status == InflateCounter::Status::kInvalid);
    return;
  }
  FUZZ_CHECK(whole_status == pieces_status);
  FUZZ_CHECK(whole_status != InflateCounter::Status::kNoMemory);
  if (whole_status == InflateCounter::Status::kOk) {
    FUZZ_CHECK(whole.message_bytes() == pieces.message_bytes());
    FUZZ_CHECK(whole.message_bytes() <= limit);
    // 8 is read with a 9-bit window (see inflate_counter.cc).
    int64_t reference = ReferenceCount(data, size, window_bits < 9 ? 9 : window_bits, limit);
    FUZZ_CHECK_MSG(reference == static_cast<int64_t>(whole.message_bytes()),
                   "reference %lld, counted %llu", static_cast<long long>(reference),
                   static_cast<unsigned long long>(whole.message_bytes()));
    FUZZ_CHECK(whole.holds_state() == takeover);
  } else if (whole_status == InflateCounter::Status::kTooBig) {
    FUZZ_CHECK(whole.message_bytes() > limit && whole.message_bytes() <= limit + 16 * 1024);
  }
  if (whole_status != InflateCounter::Status::kOk) FUZZ_CHECK(!whole.holds_state());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if ((data[0] & 1) == 0) {
    FuzzExtensions(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1));
  } else {
    FuzzInflate(data[0], data + 1, size - 1);
  }
  return 0;
}
