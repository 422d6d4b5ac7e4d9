#include "proxy/http/head_parser.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsgate::http {
namespace {

using namespace std::string_view_literals;

constexpr std::string_view kRequest =
    "GET /chat?room=1&x=%20 HTTP/1.1\r\n"
    "Host: example.com:8080\r\n"
    "Upgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "X-Empty:\r\n"
    "X-Padded: \t padded  value \t \r\n"
    "x-dup: one\r\n"
    "X-Dup: two\r\n"
    "X-Obs-Text: caf\xc3\xa9\r\n"
    "\r\n";

// Everything observable about a finished parse, with spans resolved against the buffer.
struct Snapshot {
  ParseStatus status = ParseStatus::kNeedMore;
  ParseError error = ParseError::kNone;
  size_t head_length = 0;
  std::string first;
  std::string second;
  int status_code = 0;
  int major = 0;
  int minor = 0;
  std::vector<std::pair<std::string, std::string>> fields;

  bool operator==(const Snapshot&) const = default;
};

Snapshot Take(const HeadParser& p, std::string_view buffer) {
  Snapshot s;
  s.status = p.status();
  s.error = p.error();
  if (s.status == ParseStatus::kComplete) {
    s.head_length = p.head_length();
    s.first = std::string(p.method().In(buffer));
    s.second = std::string(p.target().In(buffer));
    s.status_code = p.status_code();
    s.major = p.version_major();
    s.minor = p.version_minor();
    for (const auto& f : p.fields()) {
      s.fields.emplace_back(std::string(f.name.In(buffer)), std::string(f.value.In(buffer)));
    }
  }
  return s;
}

Snapshot ParseAll(std::string_view data, HeadKind kind = HeadKind::kRequest,
                  HeadLimits limits = HeadLimits{}) {
  HeadParser p(kind, limits);
  ParseStatus st = p.Parse(data);
  EXPECT_EQ(st, p.status());
  return Take(p, data);
}

// Feed a growing prefix one byte at a time, as a slow client would.
Snapshot ParseBytewise(std::string_view data, HeadKind kind = HeadKind::kRequest,
                       HeadLimits limits = HeadLimits{}, size_t* finished_at = nullptr) {
  HeadParser p(kind, limits);
  size_t n = 0;
  while (n < data.size()) {
    ++n;
    if (p.Parse(data.substr(0, n)) != ParseStatus::kNeedMore) break;
  }
  if (finished_at != nullptr) *finished_at = n;
  return Take(p, data);
}

TEST(HeadParserTest, ValidRequestAllAtOnce) {
  HeadParser p(HeadKind::kRequest, HeadLimits{});
  ASSERT_EQ(p.Parse(kRequest), ParseStatus::kComplete);
  EXPECT_EQ(p.status(), ParseStatus::kComplete);
  EXPECT_EQ(p.error(), ParseError::kNone);
  EXPECT_EQ(p.head_length(), kRequest.size());
  EXPECT_EQ(p.method().offset, 0u);
  EXPECT_EQ(p.method().length, 3u);
  EXPECT_EQ(p.method().In(kRequest), "GET");
  EXPECT_EQ(p.target().offset, 4u);
  EXPECT_EQ(p.target().In(kRequest), "/chat?room=1&x=%20");
  EXPECT_EQ(p.version_major(), 1);
  EXPECT_EQ(p.version_minor(), 1);
  EXPECT_EQ(p.status_code(), 0);

  const std::vector<std::pair<std::string, std::string>> expected = {
      {"Host", "example.com:8080"},
      {"Upgrade", "websocket"},
      {"Connection", "keep-alive, Upgrade"},
      {"X-Empty", ""},
      {"X-Padded", "padded  value"},
      {"x-dup", "one"},
      {"X-Dup", "two"},
      {"X-Obs-Text", "caf\xc3\xa9"},
  };
  Snapshot s = Take(p, kRequest);
  EXPECT_EQ(s.fields, expected);

  // Spans point into the caller's buffer.
  ASSERT_EQ(p.fields().size(), 8u);
  EXPECT_EQ(p.fields()[0].name.offset, kRequest.find("Host"));
  EXPECT_EQ(p.fields()[0].value.offset, kRequest.find("example.com"));
  EXPECT_EQ(p.fields()[3].value.length, 0u);
}

TEST(HeadParserTest, ByteByByteGivesTheSameResult) {
  Snapshot all = ParseAll(kRequest);
  size_t finished_at = 0;
  Snapshot slow = ParseBytewise(kRequest, HeadKind::kRequest, HeadLimits{}, &finished_at);
  EXPECT_EQ(all.status, ParseStatus::kComplete);
  EXPECT_EQ(finished_at, kRequest.size());  // NeedMore on every shorter prefix
  EXPECT_TRUE(slow == all);
  EXPECT_EQ(slow.fields.size(), 8u);
}

TEST(HeadParserTest, EveryChunkingGivesTheSameResult) {
  Snapshot all = ParseAll(kRequest);
  for (size_t step = 2; step < 40; ++step) {
    SCOPED_TRACE(step);
    HeadParser p(HeadKind::kRequest, HeadLimits{});
    size_t n = 0;
    ParseStatus st = ParseStatus::kNeedMore;
    while (st == ParseStatus::kNeedMore && n < kRequest.size()) {
      n = std::min(kRequest.size(), n + step);
      st = p.Parse(kRequest.substr(0, n));
    }
    EXPECT_EQ(st, ParseStatus::kComplete);
    EXPECT_TRUE(Take(p, kRequest) == all);
  }
}

TEST(HeadParserTest, NeedMoreOnPartialHead) {
  const std::string_view cuts[] = {
      ""sv,
      "G"sv,
      "GET / HTTP/1.1"sv,
      "GET / HTTP/1.1\r"sv,
      "GET / HTTP/1.1\r\n"sv,
      "GET / HTTP/1.1\r\nHost: a"sv,
      "GET / HTTP/1.1\r\nHost: a\r\n"sv,
      "GET / HTTP/1.1\r\nHost: a\r\n\r"sv,
  };
  for (std::string_view cut : cuts) {
    SCOPED_TRACE(std::string(cut));
    HeadParser p(HeadKind::kRequest, HeadLimits{});
    EXPECT_EQ(p.Parse(cut), ParseStatus::kNeedMore);
    EXPECT_EQ(p.error(), ParseError::kNone);
  }
  // Completing the last one works from where it left off.
  HeadParser p(HeadKind::kRequest, HeadLimits{});
  std::string data = "GET / HTTP/1.1\r\nHost: a\r\n\r";
  EXPECT_EQ(p.Parse(data), ParseStatus::kNeedMore);
  data += "\n";
  EXPECT_EQ(p.Parse(data), ParseStatus::kComplete);
  EXPECT_EQ(p.head_length(), data.size());
  ASSERT_EQ(p.fields().size(), 1u);
  EXPECT_EQ(p.fields()[0].value.In(data), "a");
}

TEST(HeadParserTest, HeadWithoutFields) {
  Snapshot s = ParseAll("GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(s.status, ParseStatus::kComplete);
  EXPECT_EQ(s.head_length, 18u);
  EXPECT_TRUE(s.fields.empty());
}

TEST(HeadParserTest, PipelinedBytesAfterTheHeadAreNotConsumed) {
  std::string data(kRequest);
  data += "\x81\x05hello\r\n\r\nGET / HTTP/1.1\r\n";
  Snapshot all = ParseAll(data);
  EXPECT_EQ(all.status, ParseStatus::kComplete);
  EXPECT_EQ(all.head_length, kRequest.size());

  size_t finished_at = 0;
  Snapshot slow = ParseBytewise(data, HeadKind::kRequest, HeadLimits{}, &finished_at);
  EXPECT_EQ(finished_at, kRequest.size());
  EXPECT_TRUE(slow == all);

  // More data after completion changes nothing.
  HeadParser p(HeadKind::kRequest, HeadLimits{});
  EXPECT_EQ(p.Parse(kRequest), ParseStatus::kComplete);
  EXPECT_EQ(p.Parse(data), ParseStatus::kComplete);
  EXPECT_EQ(p.head_length(), kRequest.size());
  EXPECT_EQ(p.fields().size(), 8u);
}

TEST(HeadParserTest, ResponseWithPipelinedFrame) {
  std::string head =
      "HTTP/1.1 101 Switching Protocols\r\n"
      "Upgrade: websocket\r\n"
      "Connection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
      "\r\n";
  std::string data = head + "\x81\x02hi";
  Snapshot s = ParseAll(data, HeadKind::kResponse);
  EXPECT_EQ(s.status, ParseStatus::kComplete);
  EXPECT_EQ(s.head_length, head.size());
  EXPECT_EQ(s.status_code, 101);
  EXPECT_EQ(s.second, "Switching Protocols");
  EXPECT_EQ(s.major, 1);
  EXPECT_EQ(s.minor, 1);
  ASSERT_EQ(s.fields.size(), 3u);
  EXPECT_EQ(s.fields[2].second, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  EXPECT_TRUE(ParseBytewise(data, HeadKind::kResponse) == s);
}

TEST(HeadParserTest, ResponseStatusLines) {
  struct Case {
    std::string_view line;
    int code;
    std::string_view reason;
    int major;
    int minor;
  };
  const Case cases[] = {
      {"HTTP/1.1 200 OK", 200, "OK", 1, 1},
      {"HTTP/1.0 404 Not Found", 404, "Not Found", 1, 0},
      {"HTTP/1.1 404", 404, "", 1, 1},   // reason and its SP missing
      {"HTTP/1.1 404 ", 404, "", 1, 1},  // empty reason
      {"HTTP/1.1 100 Continue", 100, "Continue", 1, 1},
      {"HTTP/1.1 999 x", 999, "x", 1, 1},
      {"HTTP/1.1 503 Busy  \tnow ", 503, "Busy  \tnow ", 1, 1},
      {"HTTP/1.1 200 d\xc3\xa9j\xc3\xa0", 200, "d\xc3\xa9j\xc3\xa0", 1, 1},
      {"HTTP/2.0 200 OK", 200, "OK", 2, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.line));
    std::string data = std::string(c.line) + "\r\nX: y\r\n\r\n";
    HeadParser p(HeadKind::kResponse, HeadLimits{});
    ASSERT_EQ(p.Parse(data), ParseStatus::kComplete);
    EXPECT_EQ(p.status_code(), c.code);
    EXPECT_EQ(p.reason().In(data), c.reason);
    EXPECT_EQ(p.version_major(), c.major);
    EXPECT_EQ(p.version_minor(), c.minor);
    EXPECT_EQ(p.head_length(), data.size());
    ASSERT_EQ(p.fields().size(), 1u);
    EXPECT_TRUE(ParseBytewise(data, HeadKind::kResponse) == Take(p, data));
  }
}

TEST(HeadParserTest, RequestVersionsAreParsedNotJudged) {
  // The parser only checks the syntax; the handshake decides what it accepts.
  Snapshot s = ParseAll("GET / HTTP/2.0\r\n\r\n");
  EXPECT_EQ(s.status, ParseStatus::kComplete);
  EXPECT_EQ(s.major, 2);
  EXPECT_EQ(s.minor, 0);
  s = ParseAll("GET / HTTP/1.0\r\n\r\n");
  EXPECT_EQ(s.major, 1);
  EXPECT_EQ(s.minor, 0);
  s = ParseAll("OPTIONS * HTTP/1.1\r\n\r\n");
  EXPECT_EQ(s.first, "OPTIONS");
  EXPECT_EQ(s.second, "*");
  s = ParseAll("M-SEARCH! http://h/p?q HTTP/1.1\r\n\r\n");
  EXPECT_EQ(s.status, ParseStatus::kComplete);
  EXPECT_EQ(s.first, "M-SEARCH!");
  EXPECT_EQ(s.second, "http://h/p?q");
}

struct ErrorCase {
  std::string_view name;
  std::string_view input;
  ParseError error;
  HeadKind kind = HeadKind::kRequest;
};

void ExpectError(const ErrorCase& c, HeadLimits limits = HeadLimits{}) {
  SCOPED_TRACE(std::string(c.name));
  Snapshot all = ParseAll(c.input, c.kind, limits);
  EXPECT_EQ(all.status, ParseStatus::kError);
  EXPECT_EQ(all.error, c.error) << ParseErrorName(all.error);
  Snapshot slow = ParseBytewise(c.input, c.kind, limits);
  EXPECT_EQ(slow.status, ParseStatus::kError);
  EXPECT_EQ(slow.error, c.error) << ParseErrorName(slow.error);
}

TEST(HeadParserTest, FramingErrors) {
  const ErrorCase cases[] = {
      {"bare LF ends start line", "GET / HTTP/1.1\nHost: a\r\n\r\n"sv, ParseError::kBareLF},
      {"bare LF ends field", "GET / HTTP/1.1\r\nHost: a\n\r\n"sv, ParseError::kBareLF},
      {"bare LF as empty line", "GET / HTTP/1.1\r\nHost: a\r\n\n"sv, ParseError::kBareLF},
      {"LF inside value", "GET / HTTP/1.1\r\nX: a\nb\r\n\r\n"sv, ParseError::kBareLF},
      {"bare CR inside value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"sv, ParseError::kBareCR},
      {"CR CR LF", "GET / HTTP/1.1\r\r\n\r\n"sv, ParseError::kBareCR},
      {"bare CR as empty line", "GET / HTTP/1.1\r\nHost: a\r\n\rX"sv, ParseError::kBareCR},
      {"bare LF in response", "HTTP/1.1 200 OK\n\r\n"sv, ParseError::kBareLF, HeadKind::kResponse},
  };
  for (const auto& c : cases) ExpectError(c);
}

TEST(HeadParserTest, FieldErrors) {
  const ErrorCase cases[] = {
      {"obs-fold space", "GET / HTTP/1.1\r\nX-A: a\r\n  b\r\n\r\n"sv, ParseError::kObsFold},
      {"obs-fold tab", "GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n"sv, ParseError::kObsFold},
      {"leading space on first field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n"sv,
       ParseError::kObsFold},
      {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n"sv, ParseError::kSpaceBeforeColon},
      {"tab before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"sv, ParseError::kSpaceBeforeColon},
      {"space inside name", "GET / HTTP/1.1\r\nX A: a\r\n\r\n"sv, ParseError::kSpaceBeforeColon},
      {"no colon", "GET / HTTP/1.1\r\nHost\r\n\r\n"sv, ParseError::kBadFieldName},
      {"empty name", "GET / HTTP/1.1\r\n: a\r\n\r\n"sv, ParseError::kBadFieldName},
      {"separator in name", "GET / HTTP/1.1\r\nHo(st: a\r\n\r\n"sv, ParseError::kBadFieldName},
      {"slash in name", "GET / HTTP/1.1\r\nX/Y: a\r\n\r\n"sv, ParseError::kBadFieldName},
      {"control char in name", "GET / HTTP/1.1\r\nX\x01Y: a\r\n\r\n"sv, ParseError::kBadFieldName},
      {"non-ASCII in name", "GET / HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n"sv, ParseError::kBadFieldName},
      {"NUL in name", "GET / HTTP/1.1\r\nX\0Y: a\r\n\r\n"sv, ParseError::kBadFieldName},
      {"SOH in value", "GET / HTTP/1.1\r\nX: a\x01z\r\n\r\n"sv, ParseError::kBadFieldValue},
      {"ESC in value", "GET / HTTP/1.1\r\nX: \x1b[0m\r\n\r\n"sv, ParseError::kBadFieldValue},
      {"DEL in value", "GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n"sv, ParseError::kBadFieldValue},
      {"NUL in value", "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"sv, ParseError::kBadFieldValue},
      {"VT in value", "GET / HTTP/1.1\r\nX: a\vb\r\n\r\n"sv, ParseError::kBadFieldValue},
      {"bad field in response", "HTTP/1.1 200 OK\r\nX : a\r\n\r\n"sv, ParseError::kSpaceBeforeColon,
       HeadKind::kResponse},
  };
  for (const auto& c : cases) ExpectError(c);
}

TEST(HeadParserTest, BadRequestLines) {
  const std::string_view lines[] = {
      ""sv,                        // empty start line
      "GET"sv,                     // no spaces
      "GET /"sv,                   // no version
      "GET / "sv,                  // empty version
      " GET / HTTP/1.1"sv,         // empty method
      "GET  / HTTP/1.1"sv,         // double space
      "GET /  HTTP/1.1"sv,         // double space before version
      "GET / HTTP/1.1 "sv,         // trailing space
      "GET\t/ HTTP/1.1"sv,         // tab instead of SP
      "G(T / HTTP/1.1"sv,          // non-token method
      "GET /a\x7f HTTP/1.1"sv,     // DEL in target
      "GET /\xc3\xa9 HTTP/1.1"sv,  // non-ASCII in target
      "GET /\x01 HTTP/1.1"sv,      // control in target
      "GET / http/1.1"sv,          // lower-case protocol
      "GET / HTTPS/1.1"sv,
      "GET / HTTP/11"sv,
      "GET / HTTP/1"sv,
      "GET / HTTP/1."sv,
      "GET / HTTP/1.10"sv,
      "GET / HTTP/10.1"sv,
      "GET / HTTP/a.1"sv,
      "GET / HTTP/1.x"sv,
      "GET / HTTP/1,1"sv,
      "GET / HTTP/1.1x"sv,
      "GET / HTTP/2"sv,
      "GET / HTTP /1.1"sv,
  };
  for (std::string_view line : lines) {
    std::string data = std::string(line) + "\r\nHost: a\r\n\r\n";
    ExpectError({line, data, ParseError::kBadStartLine});
  }
}

TEST(HeadParserTest, BadStatusLines) {
  const std::string_view lines[] = {
      ""sv,
      "HTTP/1.1"sv,
      "HTTP/1.1 "sv,
      "HTTP/1.1 20"sv,       // too short
      "HTTP/1.1 20 OK"sv,    // two digits
      "HTTP/1.1 2000 OK"sv,  // four digits
      "HTTP/1.1 abc OK"sv,
      "HTTP/1.1 2x0 OK"sv,
      "HTTP/1.1 099 Low"sv,  // below 100
      "HTTP/1.1 000"sv,
      "HTTP/1.1  200 OK"sv,  // double space
      "HTTP/1.1\t200 OK"sv,
      "HTTP/1.1200 OK"sv,
      "HTTP/1.1 200\tOK"sv,  // tab instead of SP before the reason
      "HTTP/1.1 200OK"sv,
      "HTTP/1.1 200 O\x01K"sv,  // control char in reason
      "HTTP/1.1 200 O\x7fK"sv,
      "http/1.1 200 OK"sv,
      "HTTP/2 200 OK"sv,
      "HTTP/1.x 200 OK"sv,
      "HTTP/11 200 OK"sv,
      "HTTP/1.10 200 OK"sv,
      " HTTP/1.1 200 OK"sv,
      "GET / HTTP/1.1"sv,  // a request line
  };
  for (std::string_view line : lines) {
    std::string data = std::string(line) + "\r\nX: y\r\n\r\n";
    ExpectError({line, data, ParseError::kBadStartLine, HeadKind::kResponse});
  }
}

std::string RequestLineOfLength(size_t length) {
  // "GET /" + padding + " HTTP/1.1"
  return "GET /" + std::string(length - 14, 'a') + " HTTP/1.1";
}

TEST(HeadParserTest, StartLineTooLong) {
  HeadLimits limits{.max_head_bytes = 1024, .max_start_line_bytes = 64, .max_fields = 128};
  std::string line = RequestLineOfLength(65);
  ASSERT_EQ(line.size(), 65u);
  // Complete line over the limit.
  std::string data = line + "\r\nHost: a\r\n\r\n";
  ExpectError({"complete", data, ParseError::kStartLineTooLong}, limits);
  // Incomplete line already over the limit: refused without waiting for its end.
  ExpectError({"incomplete", line, ParseError::kStartLineTooLong}, limits);
  ExpectError({"incomplete response", "HTTP/1.1 200 " + std::string(60, 'x'),
               ParseError::kStartLineTooLong, HeadKind::kResponse},
              limits);
  // A start line longer than the whole head limit is still reported as a long start line.
  HeadLimits small{.max_head_bytes = 48, .max_start_line_bytes = 32, .max_fields = 128};
  std::string long_line = RequestLineOfLength(100) + "\r\n\r\n";
  ExpectError({"over head limit, complete", long_line, ParseError::kStartLineTooLong}, small);
  ExpectError(
      {"over head limit, incomplete", RequestLineOfLength(100), ParseError::kStartLineTooLong},
      small);

  // Exactly at the limit is fine, all at once.
  std::string ok = RequestLineOfLength(64) + "\r\nHost: a\r\n\r\n";
  Snapshot s = ParseAll(ok, HeadKind::kRequest, limits);
  EXPECT_EQ(s.status, ParseStatus::kComplete);
  EXPECT_EQ(s.error, ParseError::kNone);
  EXPECT_EQ(s.head_length, ok.size());
}

// Regression: a start line of exactly max_start_line_bytes must not be refused when the buffer
// ends between its CR and LF (the pending CR once counted towards the line; fixed in 5338a83).
TEST(HeadParserTest, StartLineAtExactLimitSplitBetweenCrAndLf) {
  HeadLimits limits{.max_head_bytes = 1024, .max_start_line_bytes = 64, .max_fields = 128};
  std::string line = RequestLineOfLength(64);
  std::string data = line + "\r\nHost: a\r\n\r\n";

  HeadParser p(HeadKind::kRequest, limits);
  EXPECT_EQ(p.Parse(std::string_view(data).substr(0, line.size() + 1)), ParseStatus::kNeedMore)
      << ParseErrorName(p.error());
  EXPECT_EQ(p.Parse(data), ParseStatus::kComplete) << ParseErrorName(p.error());

  Snapshot slow = ParseBytewise(data, HeadKind::kRequest, limits);
  EXPECT_EQ(slow.status, ParseStatus::kComplete) << ParseErrorName(slow.error);
  EXPECT_TRUE(slow == ParseAll(data, HeadKind::kRequest, limits));
}

TEST(HeadParserTest, HeadTooLarge) {
  HeadLimits limits{.max_head_bytes = 128, .max_start_line_bytes = 64, .max_fields = 128};
  const std::string start = "GET / HTTP/1.1\r\n";  // 16 bytes
  // One field padded so the head is exactly |total| bytes: 16 + "X: " + v + "\r\n" + "\r\n".
  auto head_of = [&](size_t total) {
    return start + "X: " + std::string(total - 16 - 3 - 2 - 2, 'v') + "\r\n\r\n";
  };
  std::string exact = head_of(128);
  ASSERT_EQ(exact.size(), 128u);
  Snapshot s = ParseAll(exact, HeadKind::kRequest, limits);
  EXPECT_EQ(s.status, ParseStatus::kComplete);
  EXPECT_EQ(s.head_length, 128u);
  EXPECT_TRUE(ParseBytewise(exact, HeadKind::kRequest, limits) == s);

  // Exactly at the limit with pipelined bytes after it.
  std::string pipelined = exact + std::string(64, 'z');
  s = ParseAll(pipelined, HeadKind::kRequest, limits);
  EXPECT_EQ(s.status, ParseStatus::kComplete);
  EXPECT_EQ(s.head_length, 128u);

  ExpectError({"one byte over", head_of(129), ParseError::kHeadTooLarge}, limits);
  ExpectError({"far over", head_of(400), ParseError::kHeadTooLarge}, limits);
  // Many small fields.
  std::string many = start;
  for (int i = 0; i < 20; ++i) many += "F" + std::to_string(i) + ": v\r\n";
  many += "\r\n";
  ExpectError({"many fields", many, ParseError::kHeadTooLarge}, limits);
  // Incomplete head that already fills the limit.
  ExpectError({"incomplete", start + std::string(112, 'a'), ParseError::kHeadTooLarge}, limits);
  ExpectError(
      {"incomplete without any CRLF yet", head_of(400).substr(16, 200), ParseError::kHeadTooLarge},
      HeadLimits{.max_head_bytes = 128, .max_start_line_bytes = 256, .max_fields = 128});
}

// The line scan skips to the next CR; a bare LF or a limit is still judged at the first byte
// where a byte-by-byte scan would judge it.
TEST(HeadParserTest, BareLFAgainstTheLimits) {
  HeadLimits limits{.max_head_bytes = 1024, .max_start_line_bytes = 64, .max_fields = 128};
  // LF as byte 64 of the start line: the line is still within the limit, so a bare LF.
  ExpectError({"LF at the start-line limit", RequestLineOfLength(64) + "\nHost: a\r\n\r\n",
               ParseError::kBareLF},
              limits);
  // LF as byte 65: that byte is already over the limit.
  ExpectError({"LF past the start-line limit", RequestLineOfLength(65) + "\nHost: a\r\n\r\n",
               ParseError::kStartLineTooLong},
              limits);
  // A bare LF early in a long line is reported before the line reaches the limit.
  ExpectError(
      {"LF before the start-line limit", "GET /\n" + std::string(100, 'a'), ParseError::kBareLF},
      limits);
  // Same for the head limit: 16 + 3 + 108 = 127 bytes, LF at byte 127 or 128.
  HeadLimits head{.max_head_bytes = 128, .max_start_line_bytes = 64, .max_fields = 128};
  const std::string start = "GET / HTTP/1.1\r\nX: ";
  ExpectError({"LF at the last byte of the head", start + std::string(108, 'v') + "\n",
               ParseError::kBareLF},
              head);
  ExpectError(
      {"LF past the head limit", start + std::string(109, 'v') + "\n", ParseError::kHeadTooLarge},
      head);
  // A CR as the head's last allowed byte leaves no room for its LF.
  ExpectError({"CR at the last byte of the head", start + std::string(108, 'v') + "\r\n\r\n",
               ParseError::kHeadTooLarge},
              head);
  ExpectError({"bare CR before the head limit", start + "a\rb" + std::string(200, 'v'),
               ParseError::kBareCR},
              head);
  // A field line, unlike the start line, is only bounded by the head limit.
  std::string long_field = "GET / HTTP/1.1\r\nX: " + std::string(200, 'v') + "\r\n\r\n";
  EXPECT_EQ(ParseAll(long_field, HeadKind::kRequest, limits).status, ParseStatus::kComplete);
  EXPECT_EQ(ParseBytewise(long_field, HeadKind::kRequest, limits).status, ParseStatus::kComplete);
}

TEST(HeadParserTest, NeedMoreWhileTheLineHasNoEnd) {
  HeadParser p(HeadKind::kRequest, HeadLimits{});
  std::string data = "GET / HTTP/1.1\r\nHost: example.com";
  EXPECT_EQ(p.Parse(data), ParseStatus::kNeedMore);
  data += "\r";
  EXPECT_EQ(p.Parse(data), ParseStatus::kNeedMore);  // the CR waits for its LF
  data += "\n";
  EXPECT_EQ(p.Parse(data), ParseStatus::kNeedMore);
  EXPECT_EQ(p.Parse(data), ParseStatus::kNeedMore);  // nothing new: same answer
  data += "\r\n";
  EXPECT_EQ(p.Parse(data), ParseStatus::kComplete);
  ASSERT_EQ(p.fields().size(), 1u);
  EXPECT_EQ(p.fields()[0].value.In(data), "example.com");
}

TEST(HeadParserTest, TooManyFields) {
  HeadLimits limits{.max_head_bytes = 16 * 1024, .max_start_line_bytes = 8 * 1024, .max_fields = 3};
  std::string three = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
  Snapshot s = ParseAll(three, HeadKind::kRequest, limits);
  EXPECT_EQ(s.status, ParseStatus::kComplete);
  EXPECT_EQ(s.fields.size(), 3u);
  std::string four = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
  ExpectError({"four fields", four, ParseError::kHeadTooLarge}, limits);
}

TEST(HeadParserTest, StickyStatus) {
  HeadParser p(HeadKind::kRequest, HeadLimits{});
  std::string bad = "GET / HTTP/1.1\r\nX : y\r\n";
  EXPECT_EQ(p.Parse(bad), ParseStatus::kError);
  EXPECT_EQ(p.error(), ParseError::kSpaceBeforeColon);
  bad += "\r\n";
  EXPECT_EQ(p.Parse(bad), ParseStatus::kError);
  EXPECT_EQ(p.error(), ParseError::kSpaceBeforeColon);
}

TEST(HeadParserTest, ParseErrorNames) {
  EXPECT_STREQ(ParseErrorName(ParseError::kNone), "none");
  EXPECT_STREQ(ParseErrorName(ParseError::kBadStartLine), "bad start line");
  EXPECT_STREQ(ParseErrorName(ParseError::kStartLineTooLong), "start line too long");
  EXPECT_STREQ(ParseErrorName(ParseError::kHeadTooLarge), "header section too large");
  EXPECT_STREQ(ParseErrorName(ParseError::kBareCR), "bare CR");
  EXPECT_STREQ(ParseErrorName(ParseError::kBareLF), "bare LF");
  EXPECT_STREQ(ParseErrorName(ParseError::kObsFold), "obsolete line folding");
  EXPECT_STREQ(ParseErrorName(ParseError::kSpaceBeforeColon), "whitespace before colon");
  EXPECT_STREQ(ParseErrorName(ParseError::kBadFieldName), "invalid field name");
  EXPECT_STREQ(ParseErrorName(ParseError::kBadFieldValue), "invalid field value");
}

TEST(HeadParserTest, EqualsIgnoreCase) {
  EXPECT_TRUE(EqualsIgnoreCase("Upgrade", "uPGRADE"));
  EXPECT_TRUE(EqualsIgnoreCase("", ""));
  EXPECT_TRUE(EqualsIgnoreCase("a-1_", "A-1_"));
  EXPECT_FALSE(EqualsIgnoreCase("upgrade", "upgrad"));
  EXPECT_FALSE(EqualsIgnoreCase("[", "{"));  // 0x5b vs 0x7b: not letters
  EXPECT_FALSE(EqualsIgnoreCase("@", "`"));
}

TEST(HeadParserTest, EqualsIgnoreCaseFoldsOnlyAsciiLetters) {
  EXPECT_TRUE(EqualsIgnoreCase("Sec-WebSocket-Key", "sec-websocket-key"));
  EXPECT_TRUE(EqualsIgnoreCase("AZaz09", "azAZ09"));
  EXPECT_FALSE(EqualsIgnoreCase("\xc0", "\xe0"));  // Latin-1 letters are not folded
  EXPECT_FALSE(EqualsIgnoreCase("\xc3\xa9", "\xc3\x89"));
  EXPECT_TRUE(EqualsIgnoreCase("caf\xc3\xa9", "CAF\xc3\xa9"));
  EXPECT_FALSE(EqualsIgnoreCase("host", "hosu"));
  EXPECT_FALSE(EqualsIgnoreCase("host", "host "));
  for (int c = 0; c < 256; ++c) {
    const char a = static_cast<char>(c);
    for (int d = 0; d < 256; ++d) {
      const char b = static_cast<char>(d);
      bool same = c == d || ((c | 0x20) == (d | 0x20) && (c | 0x20) >= 'a' && (c | 0x20) <= 'z');
      ASSERT_EQ(EqualsIgnoreCase(std::string_view(&a, 1), std::string_view(&b, 1)), same)
          << c << " " << d;
    }
  }
}

// Every length up to 40, a difference at every position, and bytes next to the letter ranges
// and with the high bit set, against a plain definition.
TEST(HeadParserTest, EqualsIgnoreCaseEveryLengthAndPosition) {
  auto reference = [](std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      auto lower = [](unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; };
      if (lower(static_cast<unsigned char>(a[i])) != lower(static_cast<unsigned char>(b[i]))) {
        return false;
      }
    }
    return true;
  };
  const std::string_view tricky =
      "@AZ[`az{\x00\x7f\x80\xc1\xda\xe1\xfa\xff"
      "09-_"sv;
  for (size_t n = 0; n <= 40; ++n) {
    std::string a;
    for (size_t i = 0; i < n; ++i) a.push_back(tricky[(i * 7 + n) % tricky.size()]);
    std::string upper = a;
    for (char& c : upper) {
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    }
    ASSERT_TRUE(EqualsIgnoreCase(a, upper)) << n;
    ASSERT_TRUE(EqualsIgnoreCase(upper, a)) << n;
    for (size_t i = 0; i < n; ++i) {
      for (char c : tricky) {
        std::string b = upper;
        b[i] = c;
        ASSERT_EQ(EqualsIgnoreCase(a, b), reference(a, b)) << n << " " << i << " " << int{c};
        b[i] = static_cast<char>(a[i] ^ 0x20);  // the case bit alone
        ASSERT_EQ(EqualsIgnoreCase(a, b), reference(a, b)) << n << " " << i;
        ASSERT_EQ(EqualsIgnoreCase(b, a), reference(b, a)) << n << " " << i;
      }
    }
  }
  // Views into a larger buffer: no byte outside the view takes part.
  const std::string buffer = "xxSec-WebSocket-Keyyy";
  EXPECT_TRUE(EqualsIgnoreCase(std::string_view(buffer).substr(2, 17), "sec-websocket-key"));
  EXPECT_TRUE(EqualsIgnoreCase(std::string_view(buffer).substr(2, 4), "SEC-"));
  EXPECT_FALSE(EqualsIgnoreCase(std::string_view(buffer).substr(2, 18), "sec-websocket-keyx"));
}

TEST(HeadParserTest, ByteClasses) {
  const std::string_view tchar_symbols = "!#$%&'*+-.^_`|~";
  for (int c = 0; c < 256; ++c) {
    bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    bool token =
        alnum || (c != 0 && tchar_symbols.find(static_cast<char>(c)) != std::string_view::npos);
    bool value = c == '\t' || (c >= 0x20 && c <= 0x7e) || c >= 0x80;
    EXPECT_EQ(IsTokenChar(static_cast<unsigned char>(c)), token) << c;
    EXPECT_EQ(IsFieldValueChar(static_cast<unsigned char>(c)), value) << c;
  }
}

TEST(HeadParserTest, ListContainsToken) {
  EXPECT_TRUE(ListContainsToken("keep-alive, Upgrade", "upgrade"));
  EXPECT_TRUE(ListContainsToken("Upgrade", "upgrade"));
  EXPECT_TRUE(ListContainsToken("UPGRADE", "Upgrade"));
  EXPECT_TRUE(ListContainsToken("upgrade,keep-alive", "upgrade"));
  EXPECT_TRUE(ListContainsToken(" \tupgrade\t , close", "upgrade"));
  EXPECT_TRUE(ListContainsToken("a,,upgrade,", "upgrade"));
  EXPECT_TRUE(ListContainsToken("close, keep-alive", "keep-alive"));
  EXPECT_FALSE(ListContainsToken("upgradex", "upgrade"));
  EXPECT_FALSE(ListContainsToken("xupgrade", "upgrade"));
  EXPECT_FALSE(ListContainsToken("keep-alive, upgradex", "upgrade"));
  EXPECT_FALSE(ListContainsToken("up grade", "upgrade"));
  EXPECT_FALSE(ListContainsToken("upgrade;q=1", "upgrade"));
  EXPECT_FALSE(ListContainsToken("", "upgrade"));
  EXPECT_FALSE(ListContainsToken("keep-alive", "upgrade"));
}

TEST(HeadParserTest, HeadViewLookups) {
  HeadParser p(HeadKind::kRequest, HeadLimits{});
  ASSERT_EQ(p.Parse(kRequest), ParseStatus::kComplete);
  HeadView view(p, kRequest);
  bool found = false;
  EXPECT_EQ(view.Field("HOST", &found), "example.com:8080");
  EXPECT_TRUE(found);
  EXPECT_EQ(view.Field("x-dup", &found), "one");  // the first one
  EXPECT_TRUE(found);
  EXPECT_EQ(view.Field("x-empty", &found), "");
  EXPECT_TRUE(found);
  EXPECT_EQ(view.Field("missing", &found), "");
  EXPECT_FALSE(found);
  EXPECT_EQ(view.Field("upgrade"), "websocket");
  EXPECT_EQ(view.FieldCount("X-DUP"), 2u);
  EXPECT_EQ(view.FieldCount("host"), 1u);
  EXPECT_EQ(view.FieldCount("missing"), 0u);
  EXPECT_TRUE(view.FieldHasToken("connection", "UPGRADE"));
  EXPECT_TRUE(view.FieldHasToken("connection", "keep-alive"));
  EXPECT_FALSE(view.FieldHasToken("connection", "close"));
  EXPECT_TRUE(view.FieldHasToken("x-dup", "two"));  // any of the fields
  EXPECT_EQ(view.Get(p.method()), "GET");
  EXPECT_EQ(&view.parser(), &p);
  EXPECT_EQ(view.buffer().data(), kRequest.data());
}

}  // namespace
}  // namespace wsgate::http
