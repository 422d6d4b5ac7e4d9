#include "proxy/http/body_framer.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace wsgate::http {
namespace {

struct ParsedHead {
  std::string bytes;
  HeadParser parser;
  ParsedHead(HeadKind kind, std::string text) : bytes(std::move(text)), parser(kind, HeadLimits{}) {
    EXPECT_EQ(parser.Parse(bytes), ParseStatus::kComplete) << bytes;
  }
  HeadView view() const { return HeadView(parser, bytes); }
};

Framing Request(const std::string& fields, const char* version = "HTTP/1.1") {
  ParsedHead head(HeadKind::kRequest,
                  std::string("POST /x ") + version + "\r\nHost: h\r\n" + fields + "\r\n");
  return RequestFraming(head.view());
}

Framing Response(const std::string& status_line, const std::string& fields, bool head = false) {
  ParsedHead parsed(HeadKind::kResponse, status_line + "\r\n" + fields + "\r\n");
  return ResponseFraming(parsed.view(), head);
}

TEST(RequestFramingTest, NoBodyWithoutLengthOrCoding) {
  Framing f = Request("");
  EXPECT_EQ(f.error, nullptr);
  EXPECT_EQ(f.kind, BodyKind::kNone);
  EXPECT_EQ(Request("Content-Length: 0\r\n").kind, BodyKind::kNone);
}

TEST(RequestFramingTest, ContentLength) {
  Framing f = Request("Content-Length: 42\r\n");
  EXPECT_EQ(f.kind, BodyKind::kLength);
  EXPECT_EQ(f.length, 42u);
  // Identical repeated values are one length (RFC 9110 §8.6).
  EXPECT_EQ(Request("Content-Length: 7, 7\r\n").length, 7u);
  EXPECT_EQ(Request("Content-Length: 7\r\nContent-Length: 7\r\n").length, 7u);
}

TEST(RequestFramingTest, SmugglingShapesAreErrors) {
  for (const char* fields : {
           "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
           "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
           "Content-Length: 5\r\nContent-Length: 6\r\n",
           "Content-Length: 5, 6\r\n",
           "Content-Length: +5\r\n",
           "Content-Length: -1\r\n",
           "Content-Length: 5x\r\n",
           "Content-Length: 0x10\r\n",
           "Content-Length:\r\n",
           "Content-Length: 5,\r\n",
           "Content-Length: 1234567890123456789\r\n",
           "Transfer-Encoding: chunked, identity\r\n",
           "Transfer-Encoding: identity\r\n",
           "Transfer-Encoding: xchunked\r\n",
           "Transfer-Encoding: chunked, chunked\r\n",
           "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
           "Transfer-Encoding: gzip, chunked\r\n",
           "Transfer-Encoding: chunked,\r\n",
           "Transfer-Encoding: ,chunked\r\n",
           "Transfer-Encoding:\r\n",
           "Transfer-Encoding: \"chunked\"\r\n",
       }) {
    Framing f = Request(fields);
    EXPECT_NE(f.error, nullptr) << fields;
  }
}

TEST(RequestFramingTest, ChunkedIsCaseInsensitive) {
  EXPECT_EQ(Request("Transfer-Encoding: chunked\r\n").kind, BodyKind::kChunked);
  EXPECT_EQ(Request("transfer-encoding: Chunked\r\n").kind, BodyKind::kChunked);
}

TEST(RequestFramingTest, TransferEncodingInHttp10IsAnError) {
  EXPECT_NE(Request("Transfer-Encoding: chunked\r\n", "HTTP/1.0").error, nullptr);
  EXPECT_EQ(Request("Content-Length: 3\r\n", "HTTP/1.0").kind, BodyKind::kLength);
}

TEST(ResponseFramingTest, NoBodyResponses) {
  EXPECT_EQ(Response("HTTP/1.1 204 No Content", "Content-Length: 10\r\n").kind, BodyKind::kNone);
  EXPECT_EQ(Response("HTTP/1.1 304 Not Modified", "Content-Length: 10\r\n").kind, BodyKind::kNone);
  EXPECT_EQ(Response("HTTP/1.1 100 Continue", "").kind, BodyKind::kNone);
  EXPECT_EQ(Response("HTTP/1.1 200 OK", "Content-Length: 10\r\n", true).kind, BodyKind::kNone);
  EXPECT_EQ(Response("HTTP/1.1 200 OK", "Transfer-Encoding: chunked\r\n", true).kind,
            BodyKind::kNone);
}

TEST(ResponseFramingTest, LengthChunkedAndClose) {
  Framing f = Response("HTTP/1.1 200 OK", "Content-Length: 10\r\n");
  EXPECT_EQ(f.kind, BodyKind::kLength);
  EXPECT_EQ(f.length, 10u);
  EXPECT_EQ(Response("HTTP/1.1 200 OK", "Transfer-Encoding: chunked\r\n").kind, BodyKind::kChunked);
  EXPECT_EQ(Response("HTTP/1.1 200 OK", "Transfer-Encoding: gzip, chunked\r\n").kind,
            BodyKind::kChunked);
  EXPECT_EQ(Response("HTTP/1.1 200 OK", "Transfer-Encoding: gzip\r\n").kind, BodyKind::kUntilClose);
  EXPECT_EQ(Response("HTTP/1.1 200 OK", "").kind, BodyKind::kUntilClose);
  EXPECT_EQ(Response("HTTP/1.0 200 OK", "").kind, BodyKind::kUntilClose);
}

TEST(ResponseFramingTest, AmbiguousResponsesAreErrors) {
  EXPECT_NE(
      Response("HTTP/1.1 200 OK", "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n").error,
      nullptr);
  EXPECT_NE(Response("HTTP/1.1 200 OK", "Content-Length: 1\r\nContent-Length: 2\r\n").error,
            nullptr);
  EXPECT_NE(Response("HTTP/1.1 200 OK", "Transfer-Encoding: chunked, gzip\r\n").error, nullptr);
  EXPECT_NE(Response("HTTP/1.1 200 OK", "Transfer-Encoding: chunked, chunked\r\n").error, nullptr);
  EXPECT_NE(Response("HTTP/1.0 200 OK", "Transfer-Encoding: chunked\r\n").error, nullptr);
}

// Decode |input| feeding |step| bytes at a time; the payload goes to *data.
struct Decoded {
  bool done = false;
  bool failed = false;
  std::string data;
  size_t consumed = 0;  // bytes of input used (the rest follows the body)
  std::string error;
};

Decoded Decode(std::string_view input, size_t step = 0, ChunkLimits limits = {}) {
  ChunkedDecoder decoder(limits);
  Decoded out;
  size_t pos = 0;
  while (pos < input.size() && !decoder.done() && !decoder.failed()) {
    size_t avail = input.size() - pos;
    if (step != 0 && avail > step) avail = step;
    if (decoder.in_data()) {
      size_t n = std::min<uint64_t>(avail, decoder.data_left());
      out.data.append(input.substr(pos, n));
      decoder.ConsumeData(n);
      pos += n;
    } else {
      pos += decoder.Feed(input.substr(pos, avail));
    }
  }
  out.done = decoder.done();
  out.failed = decoder.failed();
  out.consumed = pos;
  if (decoder.error() != nullptr) out.error = decoder.error();
  return out;
}

TEST(ChunkedDecoderTest, DecodesChunksWholeAndByteByByte) {
  const std::string body = "5\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\nGET /next";
  for (size_t step : {0, 1, 2, 3, 7}) {
    Decoded d = Decode(body, step);
    EXPECT_TRUE(d.done) << step;
    EXPECT_EQ(d.data, "hello0123456789");
    EXPECT_EQ(body.substr(d.consumed), "GET /next") << "must stop at the end of the body";
  }
}

TEST(ChunkedDecoderTest, ExtensionsAndTrailers) {
  Decoded d = Decode(
      "5;name=value;flag;q=\"a \\\" b\" ; x = y\r\nhello\r\n"
      "0;last\r\nExpires: never\r\nX-Sum: 1\r\n\r\n");
  EXPECT_TRUE(d.done) << d.error;
  EXPECT_EQ(d.data, "hello");
  EXPECT_TRUE(Decode("ff\r\n" + std::string(255, 'x') + "\r\n0\r\n\r\n").done);
  EXPECT_TRUE(Decode("0000000000000001\r\nx\r\n0\r\n\r\n").done);
}

TEST(ChunkedDecoderTest, StrictFramingErrors) {
  for (const char* bad : {
           "5\nhello\r\n0\r\n\r\n",       // bare LF after the size
           "5\r\nhello\n0\r\n\r\n",       // bare LF after the data
           "5\r\nhello\r\n0\n\r\n",       // bare LF in the last chunk
           "5\r\nhello\r\n0\r\n\n",       // bare LF at the end
           "5\rhello\r\n0\r\n\r\n",       // bare CR
           "5\r\nhelloXY0\r\n\r\n",       // data longer than its size
           "\r\nhello\r\n0\r\n\r\n",      // no size
           "g\r\n",                       // not hex
           "-5\r\n",                      // sign
           "0x5\r\n",                     // prefix
           "5 \r\nhello\r\n0\r\n\r\n",    // whitespace without an extension
           "5;\r\nhello\r\n0\r\n\r\n",    // empty extension name
           "5;a=\r\nhello\r\n0\r\n\r\n",  // empty extension value
           "5;a=\"x\r\n",                 // unterminated quoted string
           "5;a b\r\n",                   // two tokens
           "5;a=b c\r\n",                 // junk after the value
           "5;\x01\r\n",                  // control character
           "10000000000000000\r\n",       // over 64 bits
           "0\r\n Folded: x\r\n\r\n",     // obs-fold in the trailers
           "0\r\nName : x\r\n\r\n",       // space before the colon in a trailer
           "0\r\nNo-Colon\r\n\r\n",       // trailer without a colon
           "0\r\nX: a\x7f\r\n\r\n",       // DEL in a trailer value
       }) {
    for (size_t step : {0, 1}) {
      Decoded d = Decode(bad, step);
      EXPECT_TRUE(d.failed) << "accepted: " << bad;
      EXPECT_FALSE(d.error.empty());
    }
  }
}

TEST(ChunkedDecoderTest, Limits) {
  ChunkLimits limits{32, 64, 2};
  EXPECT_TRUE(Decode("1;" + std::string(40, 'a') + "\r\n", 0, limits).failed);
  EXPECT_TRUE(Decode("0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 0, limits).failed);
  EXPECT_TRUE(Decode("0\r\nA: " + std::string(80, 'v') + "\r\n\r\n", 0, limits).failed);
  EXPECT_TRUE(Decode("0\r\nA: 1\r\nB: 2\r\n\r\n", 0, limits).done);
}

TEST(ChunkedDecoderTest, NeedsMoreUntilTheEnd) {
  Decoded d = Decode("5\r\nhel");
  EXPECT_FALSE(d.done);
  EXPECT_FALSE(d.failed);
  d = Decode("5\r\nhello\r\n0\r\n\r");
  EXPECT_FALSE(d.done);
  EXPECT_FALSE(d.failed);
}

}  // namespace
}  // namespace wsgate::http
