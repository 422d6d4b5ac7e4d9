// Fuzz target: the HTTP/1.1 body framing decisions and the incremental chunked decoder.
//
// Input layout: byte 0 is a selector, the rest is what a peer sent.
//   bit 0     0 = chunked body, 1 = a message head whose framing is decided
//   bit 1     head mode: 0 = request, 1 = response (bit 2: the request was HEAD)
//   bits 3-4  cut strategy for the incremental decode
//   bits 5-6  chunk limits profile
//
// Properties checked:
//   * decoding whole and in pieces (cut points from the input) gives the same verdict, the same
//     payload and stops at the same byte; the decoder never reads past the end of the body;
//   * a decoded body re-encoded as one chunk decodes to the same payload;
//   * framing: an error excludes a kind; a request is never close-delimited; Content-Length
//     together with Transfer-Encoding is refused in a request, and so is any coding list but a
//     single "chunked"; kLength only with a Content-Length field, kChunked only with a
//     Transfer-Encoding field;
//   * requests: the head forwarded to the backend (BuildForwardedRequest) parses completely,
//     carries no hop-by-hop field, and frames its body exactly as wsgate did (same kind, same
//     length): the backend can never see a different request boundary;
//   * responses: the head forwarded to the client frames the body the same way.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "proxy/http/body_framer.h"
#include "proxy/http/handshake.h"
#include "proxy/http/head_parser.h"

namespace {

using wsgate::fuzz::HashBytes;
using wsgate::fuzz::Rng;
using namespace wsgate::http;

ChunkLimits PickLimits(unsigned profile) {
  switch (profile) {
    case 1:
      return ChunkLimits{16, 64, 2};
    case 2:
      return ChunkLimits{64, 256, 8};
    default:
      return ChunkLimits{};
  }
}

struct Result {
  bool done = false;
  bool failed = false;
  size_t consumed = 0;
  std::string data;
  uint64_t body_bytes = 0;
};

Result Decode(std::string_view input, const ChunkLimits& limits, unsigned strategy, Rng* rng) {
  ChunkedDecoder decoder(limits);
  Result r;
  size_t pos = 0;
  while (pos < input.size() && !decoder.done() && !decoder.failed()) {
    size_t avail = input.size() - pos;
    size_t step = avail;
    if (rng != nullptr) {
      switch (strategy) {
        case 0:
          step = 1;
          break;
        case 1:
          step = rng->Range(1, 8);
          break;
        case 2:
          step = rng->Range(1, 300);
          break;
        default:
          step = size_t{1} << rng->Range(0, 10);
          break;
      }
      if (step > avail) step = avail;
    }
    if (decoder.in_data()) {
      uint64_t n = step < decoder.data_left() ? step : decoder.data_left();
      r.data.append(input.substr(pos, static_cast<size_t>(n)));
      decoder.ConsumeData(n);
      pos += static_cast<size_t>(n);
    } else {
      size_t used = decoder.Feed(input.substr(pos, step));
      FUZZ_CHECK(used <= step);
      pos += used;
      if (used == 0) FUZZ_CHECK(decoder.in_data() || decoder.done() || decoder.failed());
    }
  }
  r.done = decoder.done();
  r.failed = decoder.failed();
  r.consumed = pos;
  r.body_bytes = decoder.body_bytes();
  FUZZ_CHECK(!(r.done && r.failed));
  FUZZ_CHECK(!r.failed || decoder.error() != nullptr);
  return r;
}

void FuzzChunked(std::string_view body, unsigned selector, uint64_t seed) {
  ChunkLimits limits = PickLimits((selector >> 5) & 3);
  Result whole = Decode(body, limits, 0, nullptr);
  Rng rng(seed);
  Result pieces = Decode(body, limits, (selector >> 3) & 3, &rng);
  FUZZ_CHECK(whole.done == pieces.done);
  FUZZ_CHECK(whole.failed == pieces.failed);
  FUZZ_CHECK(whole.data == pieces.data);
  if (!whole.failed) FUZZ_CHECK(whole.consumed == pieces.consumed);
  FUZZ_CHECK(whole.body_bytes == whole.data.size());
  if (!whole.done) return;
  // Re-encode the payload as one chunk (or none) and decode it again.
  std::string again;
  if (!whole.data.empty()) {
    char size[32];
    std::snprintf(size, sizeof(size), "%zx\r\n", whole.data.size());
    again = size + whole.data + "\r\n";
  }
  again += "0\r\n\r\n";
  Result round = Decode(again, ChunkLimits{}, 0, nullptr);
  FUZZ_CHECK(round.done);
  FUZZ_CHECK(round.data == whole.data);
  FUZZ_CHECK(round.consumed == again.size());
}

void FuzzFraming(std::string_view bytes, unsigned selector) {
  bool response = (selector & 2) != 0;
  HeadParser parser(response ? HeadKind::kResponse : HeadKind::kRequest, HeadLimits{});
  if (parser.Parse(bytes) != ParseStatus::kComplete) return;
  HeadView head(parser, bytes);
  bool has_cl = head.FieldCount("content-length") > 0;
  bool has_te = head.FieldCount("transfer-encoding") > 0;
  Framing f = response ? ResponseFraming(head, (selector & 4) != 0) : RequestFraming(head);
  if (f.error != nullptr) {
    FUZZ_CHECK(f.kind == BodyKind::kNone);
    return;
  }
  if (f.kind == BodyKind::kLength) FUZZ_CHECK(has_cl && f.length > 0);
  if (f.kind == BodyKind::kChunked) FUZZ_CHECK(has_te);
  if (!response) {
    ForwardedBody body = f.kind == BodyKind::kChunked  ? ForwardedBody::kChunked
                         : f.kind == BodyKind::kLength ? ForwardedBody::kLength
                                                       : ForwardedBody::kNone;
    std::string forwarded =
        BuildForwardedRequest(head, ForwardingInfo{"192.0.2.1", false, "x"}, body);
    HeadParser again(HeadKind::kRequest, HeadLimits{1 << 20, 1 << 20, 1 << 16});
    FUZZ_CHECK(again.Parse(forwarded) == ParseStatus::kComplete);
    FUZZ_CHECK(again.head_length() == forwarded.size());
    HeadView view(again, forwarded);
    for (const char* gone : {"connection", "keep-alive", "te", "trailer", "upgrade"}) {
      FUZZ_CHECK_MSG(view.FieldCount(gone) == 0, "%s forwarded", gone);
    }
    Framing g = RequestFraming(view);
    FUZZ_CHECK(g.error == nullptr);
    FUZZ_CHECK(g.kind == f.kind);
    FUZZ_CHECK(g.length == f.length);
    FUZZ_CHECK(f.kind != BodyKind::kUntilClose);
    FUZZ_CHECK(!(has_cl && has_te));
    if (has_te) {
      FUZZ_CHECK(f.kind == BodyKind::kChunked);
      FUZZ_CHECK(head.FieldCount("transfer-encoding") == 1);
      FUZZ_CHECK(EqualsIgnoreCase(head.Field("transfer-encoding"), "chunked"));
    }
  } else {
    int status = parser.status_code();
    bool bodiless = (selector & 4) != 0 || status < 200 || status == 204 || status == 304;
    if (bodiless) FUZZ_CHECK(f.kind == BodyKind::kNone);
    if (!bodiless) FUZZ_CHECK(!(has_cl && has_te));
    ResponseHeadOptions options;
    options.close = (selector & 8) != 0;
    std::string forwarded = BuildForwardedResponseHead(head, options);
    HeadParser again(HeadKind::kResponse, HeadLimits{1 << 20, 1 << 20, 1 << 16});
    FUZZ_CHECK(again.Parse(forwarded) == ParseStatus::kComplete);
    Framing g = ResponseFraming(HeadView(again, forwarded), (selector & 4) != 0);
    // An HTTP/1.0 response is restated as HTTP/1.1, which may only make its framing stricter.
    if (parser.version_minor() >= 1 || !has_te) {
      FUZZ_CHECK(g.error == nullptr);
      FUZZ_CHECK(g.kind == f.kind);
      FUZZ_CHECK(g.length == f.length);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  unsigned selector = data[0];
  std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((selector & 1) == 0) {
    FuzzChunked(bytes, selector, HashBytes(data, size));
  } else {
    FuzzFraming(bytes, selector);
  }
  return 0;
}
