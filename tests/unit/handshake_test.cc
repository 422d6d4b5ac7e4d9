#include "proxy/http/handshake.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "proxy/http/head_parser.h"

namespace wsgate::http {
namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

constexpr std::string_view kKey = "dGhlIHNhbXBsZSBub25jZQ==";
constexpr std::string_view kAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";  // RFC 6455 §1.3

std::string MakeHead(std::string_view start_line, const Fields& fields) {
  std::string out(start_line);
  out += "\r\n";
  for (const auto& [name, value] : fields) out += name + ": " + value + "\r\n";
  out += "\r\n";
  return out;
}

Fields Without(Fields fields, std::string_view name) {
  std::erase_if(fields, [&](const auto& f) { return EqualsIgnoreCase(f.first, name); });
  return fields;
}

Fields Replace(Fields fields, std::string_view name, std::string value) {
  for (auto& f : fields) {
    if (EqualsIgnoreCase(f.first, name)) f.second = value;
  }
  return fields;
}

Fields Plus(Fields fields, std::string name, std::string value) {
  fields.emplace_back(std::move(name), std::move(value));
  return fields;
}

// A parsed head that owns its buffer; views and results point into it, so it never moves.
class Parsed {
 public:
  Parsed(std::string text, HeadKind kind) : text_(std::move(text)), parser_(kind, HeadLimits{}) {
    status_ = parser_.Parse(text_);
  }
  Parsed(const Parsed&) = delete;
  Parsed& operator=(const Parsed&) = delete;

  ParseStatus status() const { return status_; }
  HeadView view() const { return HeadView(parser_, text_); }
  const HeadParser& parser() const { return parser_; }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
  HeadParser parser_;
  ParseStatus status_;
};

const Fields kClientFields = {
    {"Host", "example.com:8080"},    {"Upgrade", "websocket"},
    {"Connection", "Upgrade"},       {"Sec-WebSocket-Key", std::string(kKey)},
    {"Sec-WebSocket-Version", "13"}, {"Origin", "https://app.example.com"},
};
constexpr std::string_view kStart = "GET /chat?room=1 HTTP/1.1";

TEST(HandshakeTest, ComputeAcceptRfcExample) {
  EXPECT_EQ(ComputeAccept(kKey), kAccept);
  EXPECT_EQ(ComputeAccept("x3JJHMbDL1EzLkh9GBhXDw=="), "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
  EXPECT_EQ(ComputeAccept(kKey).size(), 28u);
}

// ComputeAccept keeps one digest context per thread: repeated, interleaved and concurrent calls
// each give their own key's answer.
TEST(HandshakeTest, ComputeAcceptRepeatedAndConcurrent) {
  EXPECT_EQ(ComputeAccept(""), "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w=");
  EXPECT_EQ(ComputeAccept(std::string(200, 'x')), "2/xdrRDawKrkzT3zWJGBWn134JI=");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(ComputeAccept(kKey), kAccept);
    EXPECT_EQ(ComputeAccept("x3JJHMbDL1EzLkh9GBhXDw=="), "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
  }
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&wrong, t] {
      for (int i = 0; i < 500; ++i) {
        bool odd = (i + t) % 2 != 0;
        std::string_view key = odd ? kKey : "x3JJHMbDL1EzLkh9GBhXDw==";
        std::string_view want = odd ? kAccept : "HSmrc0sMlYUkAGmm5OPpG2HaGWk=";
        if (ComputeAccept(key) != want) ++wrong;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(HandshakeTest, IsValidWebSocketKey) {
  EXPECT_TRUE(IsValidWebSocketKey(kKey));
  EXPECT_TRUE(IsValidWebSocketKey("x3JJHMbDL1EzLkh9GBhXDw=="));
  EXPECT_TRUE(IsValidWebSocketKey("AAAAAAAAAAAAAAAAAAAAAA=="));
  EXPECT_TRUE(IsValidWebSocketKey("+/+/+/+/+/+/+/+/+/+/+w=="));

  EXPECT_FALSE(IsValidWebSocketKey(""));
  EXPECT_FALSE(IsValidWebSocketKey("dGhlIHNhbXBsZSBub25jZQ="));    // 23 chars
  EXPECT_FALSE(IsValidWebSocketKey("dGhlIHNhbXBsZSBub25jZQ==="));  // 25 chars
  EXPECT_FALSE(IsValidWebSocketKey("dGhlIHNhbXBsZSBub25jZQAA"));   // no padding
  EXPECT_FALSE(IsValidWebSocketKey("dGhlIHNhbXBsZSBub25jZQ=A"));
  EXPECT_FALSE(IsValidWebSocketKey("dGhlIHNhbXBsZSBub25j===="));      // '=' too early
  EXPECT_FALSE(IsValidWebSocketKey("dGhlIHNhbXBsZSBub25j-_=="));      // base64url alphabet
  EXPECT_FALSE(IsValidWebSocketKey("dGhlIHNhbXBsZSBub25 ZQ=="));      // space
  EXPECT_FALSE(IsValidWebSocketKey("AAAAAAAAAAAAAAAAAAAAAAAAAAA="));  // 20 bytes
  EXPECT_FALSE(IsValidWebSocketKey("AAAAAAAAAAAAAAAAAAAA"));          // 15 bytes
  EXPECT_FALSE(IsValidWebSocketKey(" dGhlIHNhbXBsZSBub25jZQ=="));
}

TEST(HandshakeTest, ValidClientHandshake) {
  Parsed req(MakeHead(kStart, kClientFields), HeadKind::kRequest);
  ASSERT_EQ(req.status(), ParseStatus::kComplete);
  std::vector<std::string> origins = {"https://other.example", "https://app.example.com"};
  for (const ClientHandshakePolicy& policy :
       {ClientHandshakePolicy{}, ClientHandshakePolicy{&origins}}) {
    ClientHandshake hs = CheckClientHandshake(req.view(), policy);
    EXPECT_EQ(hs.status, 0);
    EXPECT_EQ(hs.reason, "");
    EXPECT_EQ(hs.extra_header, "");
    EXPECT_EQ(hs.host, "example.com");
    EXPECT_EQ(hs.host_field, "example.com:8080");
    EXPECT_EQ(hs.path, "/chat");
    EXPECT_EQ(hs.key, kKey);
    EXPECT_TRUE(hs.is_upgrade);
  }
}

TEST(HandshakeTest, ClientHandshakeTokenListsAndCase) {
  Fields f = Replace(kClientFields, "upgrade", "foo/1, WebSocket");
  f = Replace(f, "connection", "keep-alive, UPGRADE");
  f = Replace(f, "host", "Example.COM");
  Parsed req(MakeHead("GET / HTTP/1.1", f), HeadKind::kRequest);
  ClientHandshake hs = CheckClientHandshake(req.view(), {});
  EXPECT_EQ(hs.status, 0) << hs.reason;
  EXPECT_EQ(hs.host, "Example.COM");
  EXPECT_EQ(hs.path, "/");
}

TEST(HandshakeTest, HostWithoutPort) {
  struct Case {
    std::string_view host_field;
    std::string_view host;
  };
  const Case cases[] = {
      {"example.com", "example.com"},   {"example.com:443", "example.com"},
      {"127.0.0.1:9000", "127.0.0.1"},  {"[::1]:8080", "::1"},
      {"[2001:db8::1]", "2001:db8::1"}, {"example.com.", "example.com."},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.host_field));
    Parsed req(MakeHead(kStart, Replace(kClientFields, "host", std::string(c.host_field))),
               HeadKind::kRequest);
    ClientHandshake hs = CheckClientHandshake(req.view(), {});
    EXPECT_EQ(hs.status, 0) << hs.reason;
    EXPECT_EQ(hs.host, c.host);
    EXPECT_EQ(hs.host_field, c.host_field);
  }
}

TEST(HandshakeTest, PathWithoutQuery) {
  struct Case {
    std::string_view target;
    std::string_view path;
  };
  const Case cases[] = {
      {"/", "/"},    {"/chat", "/chat"}, {"/a/b?c=d?e", "/a/b"},
      {"/x?", "/x"}, {"/?q", "/"},       {"/a%3Fb", "/a%3Fb"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.target));
    Parsed req(MakeHead("GET " + std::string(c.target) + " HTTP/1.1", kClientFields),
               HeadKind::kRequest);
    ClientHandshake hs = CheckClientHandshake(req.view(), {});
    EXPECT_EQ(hs.status, 0) << hs.reason;
    EXPECT_EQ(hs.path, c.path);
  }
}

struct RejectCase {
  std::string name;
  std::string start_line;
  Fields fields;
  int status;
  std::string reason;
  std::string extra_header = "";
  bool is_upgrade = true;
};

TEST(HandshakeTest, ClientHandshakeRejections) {
  const std::string kGet = std::string(kStart);
  const std::string kBadKeyReason = "Sec-WebSocket-Key must be base64 of 16 bytes";
  const std::string kVersionReason = "only WebSocket version 13 is supported";
  const std::string kVersionExtra = "Sec-WebSocket-Version: 13\r\n";
  const std::string kHostReason = "exactly one non-empty Host field is required";
  const std::string kNoUpgrade = "this endpoint only accepts WebSocket upgrades";
  const std::string kBadHost = "invalid Host field (expected host[:port] or [IPv6]:port)";
  const std::vector<RejectCase> cases = {
      {"HTTP/2.0", "GET /chat HTTP/2.0", kClientFields, 505, "only HTTP/1.1 is supported", "",
       false},
      {"HTTP/0.9", "GET /chat HTTP/0.9", kClientFields, 505, "only HTTP/1.1 is supported", "",
       false},
      {"HTTP/2.0 plain GET",
       "GET / HTTP/2.0",
       {{"Host", "a"}},
       505,
       "only HTTP/1.1 is supported",
       "",
       false},
      {"no Upgrade", kGet, Without(kClientFields, "upgrade"), 426, kNoUpgrade,
       "Upgrade: websocket\r\n", false},
      {"Upgrade: h2c", kGet, Replace(kClientFields, "upgrade", "h2c"), 426, kNoUpgrade,
       "Upgrade: websocket\r\n", false},
      {"Upgrade: websocketx", kGet, Replace(kClientFields, "upgrade", "websocketx"), 426,
       kNoUpgrade, "Upgrade: websocket\r\n", false},
      {"plain GET",
       "GET / HTTP/1.1",
       {{"Host", "a"}},
       426,
       kNoUpgrade,
       "Upgrade: websocket\r\n",
       false},
      {"POST", "POST /chat HTTP/1.1", kClientFields, 400, "a WebSocket upgrade must use GET"},
      {"lower-case get", "get /chat HTTP/1.1", kClientFields, 400,
       "a WebSocket upgrade must use GET"},
      {"HTTP/1.0", "GET /chat HTTP/1.0", kClientFields, 400, "a WebSocket upgrade needs HTTP/1.1"},
      {"absolute-form", "GET http://example.com/chat HTTP/1.1", kClientFields, 400,
       "request target must be in origin-form"},
      {"asterisk-form", "GET * HTTP/1.1", kClientFields, 400,
       "request target must be in origin-form"},
      {"no Host", kGet, Without(kClientFields, "host"), 400, kHostReason},
      {"two Host", kGet, Plus(kClientFields, "Host", "example.com"), 400, kHostReason},
      {"empty Host", kGet, Replace(kClientFields, "host", ""), 400, kHostReason},
      {"Host is only a port", kGet, Replace(kClientFields, "host", ":8080"), 400, kHostReason},
      {"Host with a space", kGet, Replace(kClientFields, "host", "a b.test"), 400, kBadHost},
      {"Host with userinfo", kGet, Replace(kClientFields, "host", "evil.test@app.test"), 400,
       kBadHost},
      {"Host with a path", kGet, Replace(kClientFields, "host", "app.test/evil?x="), 400, kBadHost},
      {"Host with two ports", kGet, Replace(kClientFields, "host", "app.test:80:81"), 400,
       kBadHost},
      {"two Authorization", kGet,
       Plus(Plus(kClientFields, "Authorization", "Bearer a"), "authorization", "Bearer b"), 400,
       "more than one Authorization field"},
      {"two Proxy-Authorization", kGet,
       Plus(Plus(kClientFields, "Proxy-Authorization", "Basic a"), "Proxy-Authorization",
            "Basic a"),
       400, "more than one Proxy-Authorization field"},
      {"no Connection", kGet, Without(kClientFields, "connection"), 400,
       "Connection must contain the Upgrade token"},
      {"Connection: keep-alive", kGet, Replace(kClientFields, "connection", "keep-alive"), 400,
       "Connection must contain the Upgrade token"},
      {"Connection: upgraded", kGet, Replace(kClientFields, "connection", "upgraded"), 400,
       "Connection must contain the Upgrade token"},
      {"Content-Length", kGet, Plus(kClientFields, "Content-Length", "0"), 400,
       "a WebSocket upgrade must not carry a body"},
      {"Transfer-Encoding", kGet, Plus(kClientFields, "Transfer-Encoding", "chunked"), 400,
       "a WebSocket upgrade must not carry a body"},
      {"no key", kGet, Without(kClientFields, "sec-websocket-key"), 400,
       "exactly one Sec-WebSocket-Key field is required"},
      {"two keys", kGet, Plus(kClientFields, "Sec-WebSocket-Key", std::string(kKey)), 400,
       "exactly one Sec-WebSocket-Key field is required"},
      {"short key", kGet, Replace(kClientFields, "sec-websocket-key", "dGhlIHNhbXBsZQ=="), 400,
       kBadKeyReason},
      {"key not base64", kGet,
       Replace(kClientFields, "sec-websocket-key", "dGhlIHNhbXBsZSBub25j*Q=="), 400, kBadKeyReason},
      {"empty key", kGet, Replace(kClientFields, "sec-websocket-key", ""), 400, kBadKeyReason},
      {"no version", kGet, Without(kClientFields, "sec-websocket-version"), 426, kVersionReason,
       kVersionExtra},
      {"version 8", kGet, Replace(kClientFields, "sec-websocket-version", "8"), 426, kVersionReason,
       kVersionExtra},
      {"version list", kGet, Replace(kClientFields, "sec-websocket-version", "13, 8"), 426,
       kVersionReason, kVersionExtra},
      {"two versions", kGet, Plus(kClientFields, "Sec-WebSocket-Version", "13"), 426,
       kVersionReason, kVersionExtra},
  };
  for (const RejectCase& c : cases) {
    SCOPED_TRACE(c.name);
    Parsed req(MakeHead(c.start_line, c.fields), HeadKind::kRequest);
    ASSERT_EQ(req.status(), ParseStatus::kComplete);
    ClientHandshake hs = CheckClientHandshake(req.view(), {});
    EXPECT_EQ(hs.status, c.status);
    EXPECT_EQ(hs.reason, c.reason);
    EXPECT_EQ(hs.extra_header, c.extra_header);
    EXPECT_EQ(hs.is_upgrade, c.is_upgrade);
  }
}

TEST(HandshakeTest, IsValidHostValue) {
  for (std::string_view good :
       {"a", "app.test", "app.test:80", "app.test:65535", "app.test:0", "APP.Test:08080",
        "192.0.2.1", "192.0.2.1:443", "[::1]", "[::1]:8080", "[2001:db8::5]:443",
        "[::ffff:192.0.2.1]", "xn--bcher-kva.example", "a_b-c~d"}) {
    EXPECT_TRUE(IsValidHostValue(good)) << good;
  }
  for (std::string_view bad : {"",
                               ":80",
                               "a b.test",
                               "evil.test@app.test",
                               "app.test/evil?x=",
                               "app.test:80:81",
                               "app.test:",
                               "app.test:65536",
                               "app.test:123456",
                               "app.test:8o",
                               "app.test:-1",
                               "app.test:+80",
                               "[::1",
                               "[::1]x",
                               "[::1]:",
                               "[::1]:65536",
                               "[192.0.2.1]",
                               "[fe80::1%25eth0]",
                               "[v1.fe]",
                               "::1",
                               "app.test#x",
                               "app.test?x",
                               "app%4",
                               "app%zz.test",
                               "%41pp.test",
                               "adm%69n.test",
                               "a.test,b.test",
                               "a!$&'()*+;=b",
                               "a\\b",
                               "a\"b",
                               "[]",
                               "app.test\t"}) {
    EXPECT_FALSE(IsValidHostValue(bad)) << bad;
  }
}

TEST(HandshakeTest, CheckHostAndCredentials) {
  auto check = [](const Fields& fields) {
    Parsed req(MakeHead("GET / HTTP/1.1", fields), HeadKind::kRequest);
    EXPECT_EQ(req.status(), ParseStatus::kComplete);
    const char* reason = CheckHostAndCredentials(req.view());
    return std::string(reason != nullptr ? reason : "");
  };
  EXPECT_EQ(check({{"Host", "a.test"}, {"Authorization", "Bearer t"}}), "");
  EXPECT_EQ(check({}), "");              // whether Host is required is the caller's rule
  EXPECT_EQ(check({{"Host", ""}}), "");  // an empty Host is the caller's call too
  EXPECT_EQ(check({{"Host", "a.test"}, {"host", "a.test"}}), "more than one Host field");
  EXPECT_EQ(check({{"Host", "u@a.test"}}),
            "invalid Host field (expected host[:port] or [IPv6]:port)");
  EXPECT_EQ(check({{"Host", "a.test"}, {"Authorization", "Bearer t"}, {"AUTHORIZATION", ""}}),
            "more than one Authorization field");
  EXPECT_EQ(check({{"Host", "a.test"}, {"Proxy-Authorization", "a"}, {"proxy-authorization", "b"}}),
            "more than one Proxy-Authorization field");
}

TEST(HandshakeTest, RejectionStillReportsHostAndPath) {
  Parsed req(MakeHead("GET /chat?x HTTP/2.0", kClientFields), HeadKind::kRequest);
  ClientHandshake hs = CheckClientHandshake(req.view(), {});
  EXPECT_EQ(hs.status, 505);
  EXPECT_EQ(hs.host, "example.com");
  EXPECT_EQ(hs.host_field, "example.com:8080");
  EXPECT_EQ(hs.path, "/chat");
}

TEST(HandshakeTest, OriginAllowList) {
  std::vector<std::string> origins = {"https://app.example.com", "http://localhost:3000"};
  ClientHandshakePolicy policy{&origins};
  struct Case {
    std::string name;
    Fields fields;
    int status;
  };
  const std::vector<Case> cases = {
      {"allowed", kClientFields, 0},
      {"second allowed", Replace(kClientFields, "origin", "http://localhost:3000"), 0},
      {"other origin", Replace(kClientFields, "origin", "https://evil.example"), 403},
      {"suffix of allowed", Replace(kClientFields, "origin", "https://app.example.com.evil"), 403},
      {"port differs", Replace(kClientFields, "origin", "https://app.example.com:8443"), 403},
      {"null", Replace(kClientFields, "origin", "null"), 403},
      {"missing", Without(kClientFields, "origin"), 403},
      {"empty", Replace(kClientFields, "origin", ""), 403},
      {"two origins, one allowed", Plus(kClientFields, "Origin", "https://app.example.com"), 403},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Parsed req(MakeHead(kStart, c.fields), HeadKind::kRequest);
    ClientHandshake hs = CheckClientHandshake(req.view(), policy);
    EXPECT_EQ(hs.status, c.status);
    EXPECT_EQ(hs.reason, c.status == 403 ? "Origin not allowed" : "");
    EXPECT_EQ(hs.extra_header, "");
  }

  // No list, or an empty one, allows any Origin (and none).
  std::vector<std::string> empty;
  for (const ClientHandshakePolicy& open :
       {ClientHandshakePolicy{}, ClientHandshakePolicy{&empty}}) {
    Parsed evil(MakeHead(kStart, Replace(kClientFields, "origin", "https://evil.example")),
                HeadKind::kRequest);
    EXPECT_EQ(CheckClientHandshake(evil.view(), open).status, 0);
    Parsed none(MakeHead(kStart, Without(kClientFields, "origin")), HeadKind::kRequest);
    EXPECT_EQ(CheckClientHandshake(none.view(), open).status, 0);
  }
}

TEST(HandshakeTest, StatusText) {
  EXPECT_STREQ(StatusText(101), "Switching Protocols");
  EXPECT_STREQ(StatusText(400), "Bad Request");
  EXPECT_STREQ(StatusText(403), "Forbidden");
  EXPECT_STREQ(StatusText(404), "Not Found");
  EXPECT_STREQ(StatusText(426), "Upgrade Required");
  EXPECT_STREQ(StatusText(431), "Request Header Fields Too Large");
  EXPECT_STREQ(StatusText(502), "Bad Gateway");
  EXPECT_STREQ(StatusText(503), "Service Unavailable");
  EXPECT_STREQ(StatusText(504), "Gateway Timeout");
  EXPECT_STREQ(StatusText(505), "HTTP Version Not Supported");
  EXPECT_STREQ(StatusText(418), "Error");
}

TEST(HandshakeTest, BuildErrorResponseExact) {
  EXPECT_EQ(BuildErrorResponse(404, "no route", ""),
            "HTTP/1.1 404 Not Found\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 9\r\n"
            "Connection: close\r\n"
            "\r\n"
            "no route\n");
  EXPECT_EQ(BuildErrorResponse(426, "bad", "Sec-WebSocket-Version: 13\r\n"),
            "HTTP/1.1 426 Upgrade Required\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 4\r\n"
            "Connection: close\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "\r\n"
            "bad\n");
}

TEST(HandshakeTest, BuildErrorResponseIsCompleteAndParseable) {
  const int statuses[] = {400, 403, 404, 408, 426, 431, 500, 502, 503, 504, 505, 418};
  const std::string reason = "something went wrong: caf\xc3\xa9";
  for (int status : statuses) {
    SCOPED_TRACE(status);
    std::string response = BuildErrorResponse(status, reason, "Upgrade: websocket\r\nX-A: b\r\n");
    Parsed head(response, HeadKind::kResponse);
    ASSERT_EQ(head.status(), ParseStatus::kComplete);
    HeadView view = head.view();
    EXPECT_EQ(head.parser().status_code(), status);
    EXPECT_EQ(view.Get(head.parser().reason()), StatusText(status));
    EXPECT_EQ(view.Field("content-length"), std::to_string(reason.size() + 1));
    EXPECT_EQ(view.Field("connection"), "close");
    EXPECT_EQ(view.Field("content-type"), "text/plain; charset=utf-8");
    EXPECT_EQ(view.Field("upgrade"), "websocket");
    EXPECT_EQ(view.Field("x-a"), "b");
    EXPECT_EQ(response.substr(head.parser().head_length()), reason + "\n");
  }
}

TEST(HandshakeTest, BuildUpstreamRequestExact) {
  const Fields fields = {
      {"Host", "example.com:8080"},
      {"Upgrade", "websocket"},
      {"Connection", "keep-alive, Upgrade, X-Secret"},
      {"Keep-Alive", "timeout=5"},
      {"X-Secret", "hop"},
      {"Proxy-Connection", "keep-alive"},
      {"Proxy-Authorization", "Basic Zm9vOmJhcg=="},
      {"Proxy-Authenticate", "Basic"},
      {"TE", "trailers"},
      {"Trailer", "X-T"},
      {"Sec-WebSocket-Key", std::string(kKey)},
      {"Sec-WebSocket-Version", "13"},
      {"Sec-WebSocket-Protocol", "chat, superchat"},
      {"Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"},
      {"Cookie", "a=b; c=d"},
      {"x-custom", "keep me"},
      {"X-Forwarded-For", "203.0.113.7"},
      {"X-Forwarded-Proto", "https"},
      {"X-Forwarded-Host", "evil.example"},
      {"Forwarded", "for=203.0.113.7;proto=https"},
      {"Origin", "https://app.example.com"},
      {"Authorization", "Bearer t"},
  };
  Parsed req(MakeHead("GET /chat?room=1 HTTP/1.1", fields), HeadKind::kRequest);
  ASSERT_EQ(req.status(), ParseStatus::kComplete);
  std::string out = BuildUpstreamRequest(req.view(), ForwardingInfo{"198.51.100.2", false, ""});
  EXPECT_EQ(out,
            "GET /chat?room=1 HTTP/1.1\r\n"
            "Host: example.com:8080\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: chat, superchat\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            "Cookie: a=b; c=d\r\n"
            "x-custom: keep me\r\n"
            "Origin: https://app.example.com\r\n"
            "Authorization: Bearer t\r\n"
            "Connection: Upgrade\r\n"
            "Upgrade: websocket\r\n"
            "X-Forwarded-For: 198.51.100.2\r\n"
            "X-Real-IP: 198.51.100.2\r\n"
            "X-Forwarded-Proto: http\r\n"
            "X-Forwarded-Host: example.com:8080\r\n"
            "Forwarded: for=198.51.100.2;host=\"example.com:8080\";proto=http\r\n"
            "\r\n");

  // The result is itself a valid upgrade request.
  Parsed upstream(out, HeadKind::kRequest);
  ASSERT_EQ(upstream.status(), ParseStatus::kComplete);
  EXPECT_EQ(upstream.parser().head_length(), out.size());
  HeadView view = upstream.view();
  EXPECT_EQ(view.FieldCount("x-forwarded-for"), 1u);
  EXPECT_EQ(view.FieldCount("x-forwarded-proto"), 1u);
  EXPECT_EQ(view.FieldCount("x-forwarded-host"), 1u);
  EXPECT_EQ(view.FieldCount("forwarded"), 1u);
  EXPECT_EQ(view.FieldCount("connection"), 1u);
  EXPECT_EQ(view.FieldCount("upgrade"), 1u);
  for (std::string_view gone : {"keep-alive", "x-secret", "proxy-connection", "te", "trailer",
                                "proxy-authorization", "proxy-authenticate"}) {
    EXPECT_EQ(view.FieldCount(gone), 0u) << gone;
  }
  ClientHandshake hs = CheckClientHandshake(view, {});
  EXPECT_EQ(hs.status, 0) << hs.reason;
  EXPECT_EQ(hs.key, kKey);
}

TEST(HandshakeTest, BuildUpstreamRequestIpv6AndTls) {
  Fields fields = Replace(kClientFields, "host", "[2001:db8::5]:8443");
  Parsed req(MakeHead("GET /ws HTTP/1.1", fields), HeadKind::kRequest);
  std::string out = BuildUpstreamRequest(req.view(), ForwardingInfo{"::1", true, ""});
  EXPECT_EQ(out,
            "GET /ws HTTP/1.1\r\n"
            "Host: [2001:db8::5]:8443\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Origin: https://app.example.com\r\n"
            "Connection: Upgrade\r\n"
            "Upgrade: websocket\r\n"
            "X-Forwarded-For: ::1\r\n"
            "X-Real-IP: ::1\r\n"
            "X-Forwarded-Proto: https\r\n"
            "X-Forwarded-Host: [2001:db8::5]:8443\r\n"
            "Forwarded: for=\"[::1]\";host=\"[2001:db8::5]:8443\";proto=https\r\n"
            "\r\n");
  Parsed upstream(out, HeadKind::kRequest);
  EXPECT_EQ(upstream.status(), ParseStatus::kComplete);
  EXPECT_EQ(CheckClientHandshake(upstream.view(), {}).status, 0);
}

Fields SpoofedForwardingFields() {
  Fields fields = Plus(kClientFields, "X-Forwarded-For", "10.0.0.1");
  fields = Plus(fields, "x-forwarded-for", "10.0.0.2, 10.0.0.3");
  fields = Plus(fields, "Forwarded", "for=10.0.0.1");
  fields = Plus(fields, "forwarded", "for=10.0.0.2;by=10.0.0.9");
  fields = Plus(fields, "x-forwarded-proto", "ws");
  fields = Plus(fields, "X-FORWARDED-PROTO", "wss");
  fields = Plus(fields, "X-Forwarded-Host", "spoof");
  fields = Plus(fields, "X-Real-IP", "10.9.9.9");
  fields = Plus(fields, "x-real-ip", "10.9.9.8");
  fields = Plus(fields, "X-Forwarded-Port", "1");
  return fields;
}

TEST(HandshakeTest, BuildUpstreamRequestReplacesForwardingFieldsFromAnUntrustedPeer) {
  Parsed req(MakeHead(kStart, SpoofedForwardingFields()), HeadKind::kRequest);
  std::string out = BuildUpstreamRequest(req.view(), ForwardingInfo{"192.0.2.1", true, ""});
  Parsed upstream(out, HeadKind::kRequest);
  ASSERT_EQ(upstream.status(), ParseStatus::kComplete);
  HeadView view = upstream.view();
  EXPECT_EQ(view.FieldCount("x-forwarded-for"), 1u);
  EXPECT_EQ(view.Field("x-forwarded-for"), "192.0.2.1");
  EXPECT_EQ(view.FieldCount("x-real-ip"), 1u);
  EXPECT_EQ(view.Field("x-real-ip"), "192.0.2.1");
  EXPECT_EQ(view.FieldCount("x-forwarded-proto"), 1u);
  EXPECT_EQ(view.Field("x-forwarded-proto"), "https");
  EXPECT_EQ(view.FieldCount("x-forwarded-host"), 1u);
  EXPECT_EQ(view.Field("x-forwarded-host"), "example.com:8080");
  EXPECT_EQ(view.FieldCount("x-forwarded-port"), 0u);
  EXPECT_EQ(view.FieldCount("forwarded"), 1u);
  EXPECT_EQ(view.Field("forwarded"), "for=192.0.2.1;host=\"example.com:8080\";proto=https");
}

TEST(HandshakeTest, BuildUpstreamRequestExtendsForwardingFieldsFromATrustedPeer) {
  Parsed req(MakeHead(kStart, SpoofedForwardingFields()), HeadKind::kRequest);
  ForwardingInfo info{"192.0.2.1", true, "", /*peer_trusted=*/true};
  std::string out = BuildUpstreamRequest(req.view(), info);
  Parsed upstream(out, HeadKind::kRequest);
  ASSERT_EQ(upstream.status(), ParseStatus::kComplete);
  HeadView view = upstream.view();
  // The chains get this hop appended.
  EXPECT_EQ(view.FieldCount("x-forwarded-for"), 1u);
  EXPECT_EQ(view.Field("x-forwarded-for"), "10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.1");
  EXPECT_EQ(view.FieldCount("forwarded"), 1u);
  EXPECT_EQ(view.Field("forwarded"),
            "for=10.0.0.1, for=10.0.0.2;by=10.0.0.9, "
            "for=192.0.2.1;host=\"example.com:8080\";proto=https");
  // What the trusted proxy stated about the original client stays as it sent it.
  EXPECT_EQ(view.FieldCount("x-real-ip"), 2u);
  EXPECT_EQ(view.Field("x-real-ip"), "10.9.9.9");
  EXPECT_EQ(view.FieldCount("x-forwarded-proto"), 2u);
  EXPECT_EQ(view.Field("x-forwarded-proto"), "ws");
  EXPECT_EQ(view.FieldCount("x-forwarded-host"), 1u);
  EXPECT_EQ(view.Field("x-forwarded-host"), "spoof");
  EXPECT_EQ(view.Field("x-forwarded-port"), "1");
}

TEST(HandshakeTest, BuildUpstreamRequestStatesMissingFieldsForATrustedPeer) {
  Parsed req(MakeHead(kStart, kClientFields), HeadKind::kRequest);
  ForwardingInfo info{"192.0.2.1", false, "", /*peer_trusted=*/true};
  std::string out = BuildUpstreamRequest(req.view(), info);
  Parsed upstream(out, HeadKind::kRequest);
  ASSERT_EQ(upstream.status(), ParseStatus::kComplete);
  HeadView view = upstream.view();
  EXPECT_EQ(view.Field("x-forwarded-for"), "192.0.2.1");
  EXPECT_EQ(view.Field("x-real-ip"), "192.0.2.1");
  EXPECT_EQ(view.Field("x-forwarded-proto"), "http");
  EXPECT_EQ(view.Field("x-forwarded-host"), "example.com:8080");
  EXPECT_EQ(view.Field("forwarded"), "for=192.0.2.1;host=\"example.com:8080\";proto=http");
  EXPECT_EQ(view.FieldCount("x-forwarded-port"), 0u);
}

TEST(HandshakeTest, BuildUpstreamRequestQuotesForwardedHost) {
  Parsed req(MakeHead(kStart, Replace(kClientFields, "host", "a\"b\\c")), HeadKind::kRequest);
  std::string out = BuildUpstreamRequest(req.view(), ForwardingInfo{"192.0.2.1", false, ""});
  Parsed upstream(out, HeadKind::kRequest);
  ASSERT_EQ(upstream.status(), ParseStatus::kComplete);
  EXPECT_EQ(upstream.view().Field("forwarded"), "for=192.0.2.1;host=\"a\\\"b\\\\c\";proto=http");
}

TEST(HandshakeTest, BuildUpstreamRequestDropsFieldsNamedByConnection) {
  Fields fields = Replace(kClientFields, "connection", "Upgrade, cookie");
  fields = Plus(fields, "Connection", "x-a , X-B");
  fields = Plus(fields, "Cookie", "session=1");
  fields = Plus(fields, "X-A", "1");
  fields = Plus(fields, "x-b", "2");
  fields = Plus(fields, "X-C", "3");
  Parsed req(MakeHead(kStart, fields), HeadKind::kRequest);
  std::string out = BuildUpstreamRequest(req.view(), ForwardingInfo{"192.0.2.1", false, ""});
  Parsed upstream(out, HeadKind::kRequest);
  ASSERT_EQ(upstream.status(), ParseStatus::kComplete);
  HeadView view = upstream.view();
  EXPECT_EQ(view.FieldCount("cookie"), 0u);
  EXPECT_EQ(view.FieldCount("x-a"), 0u);
  EXPECT_EQ(view.FieldCount("x-b"), 0u);
  EXPECT_EQ(view.Field("x-c"), "3");
  EXPECT_EQ(view.FieldCount("connection"), 1u);
  EXPECT_EQ(view.Field("connection"), "Upgrade");
  EXPECT_EQ(view.Field("upgrade"), "websocket");
}

TEST(HandshakeTest, HopByHopFields) {
  const std::string text =
      "GET / HTTP/1.1\r\n"
      "Host: a\r\n"
      "Connection: Upgrade, X-A\r\n"
      "connection: ,\t x-b \t,, close\r\n"
      "CONNECTION: Host, CONTENT-LENGTH, Keep-Alive\r\n"
      "\r\n";
  HeadParser parser(HeadKind::kRequest, HeadLimits{});
  ASSERT_EQ(parser.Parse(text), ParseStatus::kComplete);
  const HopByHopFields hop(HeadView(parser, text));
  // Hop-by-hop by name, whatever the case and whatever Connection says.
  for (std::string_view name :
       {"Connection", "keep-alive", "TE", "Trailer", "UPGRADE", "Transfer-Encoding",
        "Proxy-Connection", "proxy-authorization", "Proxy-X"}) {
    EXPECT_TRUE(hop.Contains(name)) << name;
  }
  // Named by any of the three Connection fields, matched case-insensitively.
  for (std::string_view name : {"X-A", "x-a", "X-B", "Close"}) {
    EXPECT_TRUE(hop.Contains(name)) << name;
  }
  // End-to-end although named, and fields nobody named.
  for (std::string_view name : {"Host", "Content-Length", "X-C", "Proxy-", "Upgradex", "T",
                                "Trailers", "x-a-b", "Cookie"}) {
    EXPECT_FALSE(hop.Contains(name)) << name;
  }

  const std::string plain = "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n";
  HeadParser response(HeadKind::kResponse, HeadLimits{});
  ASSERT_EQ(response.Parse(plain), ParseStatus::kComplete);
  const HopByHopFields none(HeadView(response, plain));
  EXPECT_FALSE(none.Contains("X-A"));
  EXPECT_FALSE(none.Contains("Content-Length"));
  EXPECT_TRUE(none.Contains("Keep-Alive"));
}

TEST(HandshakeTest, BuildUpstreamRequestDropsFieldsNamedBySeveralConnectionFields) {
  Fields fields = Replace(kClientFields, "connection", "keep-alive, Upgrade");
  fields = Plus(fields, "CONNECTION", "X-Trace");
  fields = Plus(fields, "connection", "\tcookie ,x-session");
  fields = Plus(fields, "x-trace", "1");
  fields = Plus(fields, "COOKIE", "a=1");
  fields = Plus(fields, "X-Session", "s");
  fields = Plus(fields, "X-Kept", "k");
  Parsed req(MakeHead(kStart, fields), HeadKind::kRequest);
  std::string out = BuildUpstreamRequest(req.view(), ForwardingInfo{"192.0.2.1", false, ""});
  Parsed upstream(out, HeadKind::kRequest);
  ASSERT_EQ(upstream.status(), ParseStatus::kComplete);
  HeadView view = upstream.view();
  EXPECT_EQ(view.FieldCount("x-trace"), 0u);
  EXPECT_EQ(view.FieldCount("cookie"), 0u);
  EXPECT_EQ(view.FieldCount("x-session"), 0u);
  EXPECT_EQ(view.Field("x-kept"), "k");
  EXPECT_EQ(view.FieldCount("connection"), 1u);
  EXPECT_EQ(view.Field("connection"), "Upgrade");
  EXPECT_EQ(CheckClientHandshake(view, {}).status, 0);
}

const Fields kUpgradeFields = {
    {"Upgrade", "websocket"},
    {"Connection", "Upgrade"},
    {"Sec-WebSocket-Accept", std::string(kAccept)},
};
constexpr std::string_view k101 = "HTTP/1.1 101 Switching Protocols";

UpstreamVerdict Verdict(std::string_view status_line, const Fields& fields,
                        std::string_view accept = kAccept) {
  Parsed resp(MakeHead(status_line, fields), HeadKind::kResponse);
  EXPECT_EQ(resp.status(), ParseStatus::kComplete);
  return CheckUpstreamResponse(resp.view(), accept);
}

TEST(HandshakeTest, UpstreamValid101) {
  UpstreamVerdict v = Verdict(k101, kUpgradeFields, ComputeAccept(kKey));
  EXPECT_EQ(v.kind, UpstreamVerdict::kUpgraded);
  EXPECT_EQ(v.reason, "");
  EXPECT_FALSE(v.permessage_deflate);
  EXPECT_FALSE(v.other_extension);

  Fields f = Replace(kUpgradeFields, "upgrade", "WebSocket");
  f = Replace(f, "connection", "keep-alive, upgrade");
  EXPECT_EQ(Verdict("HTTP/1.1 101", f).kind, UpstreamVerdict::kUpgraded);
}

TEST(HandshakeTest, UpstreamInvalidUpgrades) {
  const std::string kAcceptReason = "101 with a missing or wrong Sec-WebSocket-Accept";
  struct Case {
    std::string name;
    std::string status_line;
    Fields fields;
    UpstreamVerdict::Kind kind;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"wrong accept", std::string(k101),
       Replace(kUpgradeFields, "sec-websocket-accept", "HSmrc0sMlYUkAGmm5OPpG2HaGWk="),
       UpstreamVerdict::kInvalidUpgrade, kAcceptReason},
      {"accept differs in case", std::string(k101),
       Replace(kUpgradeFields, "sec-websocket-accept", "S3PPLMBITXAQ9KYGZZHZRBK+XOO="),
       UpstreamVerdict::kInvalidUpgrade, kAcceptReason},
      {"missing accept", std::string(k101), Without(kUpgradeFields, "sec-websocket-accept"),
       UpstreamVerdict::kInvalidUpgrade, kAcceptReason},
      {"two accepts", std::string(k101),
       Plus(kUpgradeFields, "Sec-WebSocket-Accept", std::string(kAccept)),
       UpstreamVerdict::kInvalidUpgrade, kAcceptReason},
      {"missing Upgrade", std::string(k101), Without(kUpgradeFields, "upgrade"),
       UpstreamVerdict::kInvalidUpgrade, "101 without Upgrade: websocket"},
      {"Upgrade: h2c", std::string(k101), Replace(kUpgradeFields, "upgrade", "h2c"),
       UpstreamVerdict::kInvalidUpgrade, "101 without Upgrade: websocket"},
      {"missing Connection", std::string(k101), Without(kUpgradeFields, "connection"),
       UpstreamVerdict::kInvalidUpgrade, "101 without Connection: Upgrade"},
      {"Connection: close", std::string(k101), Replace(kUpgradeFields, "connection", "close"),
       UpstreamVerdict::kInvalidUpgrade, "101 without Connection: Upgrade"},
      {"101 over HTTP/1.0", "HTTP/1.0 101 Switching Protocols", kUpgradeFields,
       UpstreamVerdict::kInvalidUpgrade, "101 not over HTTP/1.1"},
      {"101 over HTTP/2.0", "HTTP/2.0 101 Switching Protocols", kUpgradeFields,
       UpstreamVerdict::kInvalidUpgrade, "101 not over HTTP/1.1"},
      {"100 Continue", "HTTP/1.1 100 Continue", kUpgradeFields, UpstreamVerdict::kInvalidUpgrade,
       "backend sent an unexpected interim response 100"},
      {"103 Early Hints",
       "HTTP/1.1 103 Early Hints",
       {},
       UpstreamVerdict::kInvalidUpgrade,
       "backend sent an unexpected interim response 103"},
      {"200", "HTTP/1.1 200 OK", kUpgradeFields, UpstreamVerdict::kNotUpgraded,
       "backend answered 200"},
      {"404",
       "HTTP/1.1 404 Not Found",
       {{"Content-Length", "0"}},
       UpstreamVerdict::kNotUpgraded,
       "backend answered 404"},
      {"503 over HTTP/1.0",
       "HTTP/1.0 503 Busy",
       {},
       UpstreamVerdict::kNotUpgraded,
       "backend answered 503"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    UpstreamVerdict v = Verdict(c.status_line, c.fields);
    EXPECT_EQ(v.kind, c.kind);
    EXPECT_EQ(v.reason, c.reason);
    EXPECT_FALSE(v.permessage_deflate);
    EXPECT_FALSE(v.other_extension);
  }
}

TEST(HandshakeTest, UpstreamExtensions) {
  struct Case {
    std::vector<std::string> values;  // one Sec-WebSocket-Extensions field each
    bool deflate;
    bool other;
  };
  const std::vector<Case> cases = {
      {{"permessage-deflate"}, true, false},
      {{"permessage-deflate; server_no_context_takeover; client_max_window_bits=10"}, true, false},
      {{"PerMessage-Deflate ;client_no_context_takeover"}, true, false},
      {{"x-webkit-deflate-frame"}, false, true},
      {{"permessage-deflate, x-foo; a=1"}, true, true},
      {{"x-foo", "permessage-deflate"}, true, true},
      {{"permessage-deflatex"}, false, true},
      {{""}, false, false},
      {{" , ,"}, false, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.values.empty() ? "" : c.values[0]);
    Fields f = kUpgradeFields;
    for (const auto& value : c.values) f = Plus(f, "Sec-WebSocket-Extensions", value);
    UpstreamVerdict v = Verdict(k101, f);
    EXPECT_EQ(v.kind, UpstreamVerdict::kUpgraded);
    EXPECT_EQ(v.permessage_deflate, c.deflate);
    EXPECT_EQ(v.other_extension, c.other);
    EXPECT_EQ(v.deflate_frame, c.values[0] == "x-webkit-deflate-frame");
  }
}

TEST(HandshakeTest, UpstreamDeflateParameters) {
  Fields f = Plus(kUpgradeFields, "Sec-WebSocket-Extensions",
                  "permessage-deflate; server_no_context_takeover; server_max_window_bits=9;"
                  " client_max_window_bits=\"12\"");
  UpstreamVerdict v = Verdict(k101, f);
  ASSERT_EQ(v.kind, UpstreamVerdict::kUpgraded);
  EXPECT_TRUE(v.permessage_deflate);
  EXPECT_TRUE(v.deflate.server_no_context_takeover);
  EXPECT_FALSE(v.deflate.client_no_context_takeover);
  EXPECT_EQ(v.deflate.server_max_window_bits, 9);
  EXPECT_EQ(v.deflate.client_max_window_bits, 12);

  // RFC 7692 §7.1: an answer wsgate cannot follow fails the upgrade (a bad 101: 502).
  const std::vector<std::pair<std::vector<std::string>, std::string>> invalid = {
      {{"permessage-deflate; server_max_window_bits=16"},
       "101 with permessage-deflate server_max_window_bits must be 8..15"},
      {{"permessage-deflate; server_max_window_bits"},
       "101 with permessage-deflate server_max_window_bits must be 8..15"},
      {{"permessage-deflate; client_max_window_bits=7"},
       "101 with permessage-deflate client_max_window_bits must be 8..15"},
      {{"permessage-deflate; server_no_context_takeover; server_no_context_takeover"},
       "101 with duplicate permessage-deflate parameter server_no_context_takeover"},
      {{"permessage-deflate; x_foo=1"}, "101 with unknown permessage-deflate parameter \"x_foo\""},
      {{"permessage-deflate, permessage-deflate"}, "101 accepts permessage-deflate twice"},
      {{"permessage-deflate", "permessage-deflate; server_no_context_takeover"},
       "101 accepts permessage-deflate twice"},
      // An extension before the bad one must not leave its flag on the refused verdict (found
      // by head_parser_fuzz).
      {{"x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=99"},
       "101 with permessage-deflate client_max_window_bits must be 8..15"},
  };
  for (const auto& [values, reason] : invalid) {
    SCOPED_TRACE(values[0]);
    Fields g = kUpgradeFields;
    for (const auto& value : values) g = Plus(g, "Sec-WebSocket-Extensions", value);
    UpstreamVerdict bad = Verdict(k101, g);
    EXPECT_EQ(bad.kind, UpstreamVerdict::kInvalidUpgrade);
    EXPECT_EQ(bad.reason, reason);
    EXPECT_FALSE(bad.permessage_deflate);
    EXPECT_FALSE(bad.other_extension);
    EXPECT_FALSE(bad.deflate_frame);
  }
}

TEST(HandshakeTest, BuildRelayedResponseHead) {
  Fields fields = {
      {"Content-Type", "text/html"},   {"Content-Length", "9"}, {"Connection", "keep-alive, X-Hop"},
      {"Keep-Alive", "timeout=5"},     {"X-Hop", "1"},          {"Upgrade", "h2c"},
      {"Proxy-Authenticate", "Basic"}, {"Set-Cookie", "a=b"},   {"Trailer", "X-T"},
      {"WWW-Authenticate", "Bearer"},
  };
  Parsed resp(MakeHead("HTTP/1.0 401 Unauthorized", fields) + "forbidden", HeadKind::kResponse);
  ASSERT_EQ(resp.status(), ParseStatus::kComplete);
  std::string out = BuildRelayedResponseHead(resp.view());
  EXPECT_EQ(out,
            "HTTP/1.1 401 Unauthorized\r\n"
            "Content-Type: text/html\r\n"
            "Content-Length: 9\r\n"
            "Set-Cookie: a=b\r\n"
            "WWW-Authenticate: Bearer\r\n"
            "Connection: close\r\n"
            "\r\n");
  Parsed again(out, HeadKind::kResponse);
  ASSERT_EQ(again.status(), ParseStatus::kComplete);
  EXPECT_EQ(again.parser().head_length(), out.size());
  EXPECT_EQ(again.view().Field("content-length"), "9");
  EXPECT_EQ(again.view().FieldCount("connection"), 1u);
}

TEST(HandshakeTest, BuildRelayedResponseHeadKeepsTransferEncodingAndEmptyReason) {
  Parsed resp(MakeHead("HTTP/1.1 500", {{"Transfer-Encoding", "chunked"}, {"Connection", "close"}}),
              HeadKind::kResponse);
  ASSERT_EQ(resp.status(), ParseStatus::kComplete);
  std::string out = BuildRelayedResponseHead(resp.view());
  EXPECT_EQ(out,
            "HTTP/1.1 500 \r\n"
            "Transfer-Encoding: chunked\r\n"
            "Connection: close\r\n"
            "\r\n");
  Parsed again(out, HeadKind::kResponse);
  ASSERT_EQ(again.status(), ParseStatus::kComplete);
  EXPECT_EQ(again.parser().status_code(), 500);
  EXPECT_EQ(again.view().Get(again.parser().reason()), "");
}

}  // namespace
}  // namespace wsgate::http

namespace wsgate::http {
namespace {

TEST(HandshakeRequestIdTest, AddedUnlessTheClientSentOne) {
  const std::string head =
      "GET /chat HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
  for (bool client_sent : {false, true}) {
    std::string text = head + (client_sent ? "X-Request-Id: mine\r\n" : "") + "\r\n";
    HeadParser parser(HeadKind::kRequest, HeadLimits{});
    ASSERT_EQ(parser.Parse(text), ParseStatus::kComplete);
    std::string out =
        BuildUpstreamRequest(HeadView(parser, text), ForwardingInfo{"10.0.0.1", false, "abc123"});
    HeadParser again(HeadKind::kRequest, HeadLimits{});
    ASSERT_EQ(again.Parse(out), ParseStatus::kComplete) << out;
    HeadView view(again, out);
    EXPECT_EQ(view.FieldCount("x-request-id"), 1u) << out;
    EXPECT_EQ(view.Field("x-request-id"), client_sent ? "mine" : "abc123") << out;
  }
}

TEST(HandshakeUpstreamTest, RequestLineCarriesTheRoutedTarget) {
  const std::string text =
      "GET /public/%2e%2e/private?q=%2e HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Sec-WebSocket-Version: 13\r\n\r\n";
  HeadParser parser(HeadKind::kRequest, HeadLimits{});
  ASSERT_EQ(parser.Parse(text), ParseStatus::kComplete);
  ForwardingInfo info{"10.0.0.1", false, ""};
  std::string as_sent = BuildUpstreamRequest(HeadView(parser, text), info);
  EXPECT_EQ(as_sent.rfind("GET /public/%2e%2e/private?q=%2e HTTP/1.1\r\n", 0), 0u) << as_sent;
  info.target = "/private?q=%2e";
  std::string routed = BuildUpstreamRequest(HeadView(parser, text), info);
  EXPECT_EQ(routed.rfind("GET /private?q=%2e HTTP/1.1\r\n", 0), 0u) << routed;
}

TEST(HandshakeProxyFieldsTest, ClientWsgateFieldsDroppedAndOursAppended) {
  const std::string text =
      "GET /chat HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
      "X-Wsgate-Connection-Id: spoofed\r\nx-wsgate-callback-url: http://evil/\r\n"
      "X-User-Id: spoofed\r\nX-Keep: yes\r\n\r\n";
  HeadParser parser(HeadKind::kRequest, HeadLimits{});
  ASSERT_EQ(parser.Parse(text), ParseStatus::kComplete);
  std::vector<std::string> drop = {"x-user-id"};
  std::string out =
      BuildUpstreamRequest(HeadView(parser, text), ForwardingInfo{"10.0.0.1", false, "id"},
                           "X-Wsgate-Connection-Id: real\r\n", &drop);
  HeadParser again(HeadKind::kRequest, HeadLimits{});
  ASSERT_EQ(again.Parse(out), ParseStatus::kComplete) << out;
  HeadView view(again, out);
  EXPECT_EQ(view.FieldCount("x-wsgate-connection-id"), 1u) << out;
  EXPECT_EQ(view.Field("x-wsgate-connection-id"), "real");
  EXPECT_EQ(view.FieldCount("x-wsgate-callback-url"), 0u);
  EXPECT_EQ(view.FieldCount("x-user-id"), 0u);
  EXPECT_EQ(view.Field("x-keep"), "yes");
}

// WSGI, Rack and PHP-FPM name both "X-User-Id" and "X_User_Id" HTTP_X_USER_ID: an underscore
// alias of a field wsgate owns must not reach the backend either, from any peer.
TEST(HandshakeProxyFieldsTest, UnderscoreAliasesOfOwnedFieldsDropped) {
  const std::string text =
      "GET /chat HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
      "X_User_Id: spoofed\r\nx-user_id: spoofed\r\nX_Forwarded_For: 10.9.9.9\r\n"
      "X_Real_IP: 10.9.9.9\r\nX_Forwarded_Proto: https\r\nx_forwarded_host: evil\r\n"
      "X_Forwarded_Port: 443\r\nX_Wsgate_Connection_Id: spoofed\r\nX_Keep: yes\r\n\r\n";
  HeadParser parser(HeadKind::kRequest, HeadLimits{});
  ASSERT_EQ(parser.Parse(text), ParseStatus::kComplete);
  std::vector<std::string> drop = {"X-User-Id"};
  for (bool trusted : {false, true}) {
    ForwardingInfo info{"10.0.0.1", false, "id", trusted};
    std::string out = BuildUpstreamRequest(HeadView(parser, text), info,
                                           "X-Wsgate-Connection-Id: real\r\n", &drop);
    HeadParser again(HeadKind::kRequest, HeadLimits{});
    ASSERT_EQ(again.Parse(out), ParseStatus::kComplete) << out;
    EXPECT_EQ(out.find('_'), out.find("X_Keep") + 1) << out;  // the only "_" left
    HeadView view(again, out);
    EXPECT_EQ(view.Field("x_keep"), "yes");
    EXPECT_EQ(view.Field("x-forwarded-for"), "10.0.0.1");
  }
}

}  // namespace
}  // namespace wsgate::http

namespace wsgate::http {
namespace {

TEST(HandshakeForwardedHttpTest, PlainRequestLosesEveryHopByHopField) {
  const std::string text =
      "POST /api?x=1 HTTP/1.0\r\n"
      "Host: app.example.com\r\n"
      "Connection: keep-alive, X-Secret\r\n"
      "X-Secret: s\r\n"
      "Keep-Alive: timeout=5\r\n"
      "TE: trailers\r\n"
      "Trailer: X-Sum\r\n"
      "Upgrade: h2c\r\n"
      "Proxy-Authorization: Basic x\r\n"
      "Proxy-Anything: y\r\n"
      "Transfer-Encoding: chunked\r\n"
      "Expect: 100-continue\r\n"
      "X-Forwarded-Proto: https\r\n"
      "\r\n";
  HeadParser parser(HeadKind::kRequest, HeadLimits{});
  ASSERT_EQ(parser.Parse(text), ParseStatus::kComplete);
  std::string out = BuildForwardedRequest(
      HeadView(parser, text), ForwardingInfo{"192.0.2.9", false, "id-1"}, ForwardedBody::kChunked);
  EXPECT_EQ(out,
            "POST /api?x=1 HTTP/1.1\r\n"
            "Host: app.example.com\r\n"
            "Expect: 100-continue\r\n"
            "Transfer-Encoding: chunked\r\n"
            "X-Forwarded-For: 192.0.2.9\r\n"
            "X-Real-IP: 192.0.2.9\r\n"
            "X-Forwarded-Proto: http\r\n"
            "X-Forwarded-Host: app.example.com\r\n"
            "Forwarded: for=192.0.2.9;host=\"app.example.com\";proto=http\r\n"
            "X-Request-Id: id-1\r\n"
            "\r\n");
  std::string plain = BuildForwardedRequest(
      HeadView(parser, text), ForwardingInfo{"192.0.2.9", false, ""}, ForwardedBody::kNone);
  EXPECT_EQ(plain.find("Transfer-Encoding"), std::string::npos);
  EXPECT_EQ(plain.find("Upgrade"), std::string::npos);
}

TEST(HandshakeForwardedHttpTest, ResponseHeadOptions) {
  const std::string text =
      "HTTP/1.0 200 OK\r\n"
      "Content-Type: text/html\r\n"
      "Transfer-Encoding: chunked\r\n"
      "Connection: X-Internal\r\n"
      "X-Internal: 1\r\n"
      "Keep-Alive: timeout=5\r\n"
      "Proxy-Authenticate: Basic\r\n"
      "\r\n";
  HeadParser parser(HeadKind::kResponse, HeadLimits{});
  ASSERT_EQ(parser.Parse(text), ParseStatus::kComplete);
  ResponseHeadOptions keep;
  keep.close = false;
  EXPECT_EQ(BuildForwardedResponseHead(HeadView(parser, text), keep),
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n");
  ResponseHeadOptions dechunked;
  dechunked.keep_transfer_encoding = false;
  dechunked.extra_header = "Set-Cookie: b=1\r\n";
  EXPECT_EQ(BuildForwardedResponseHead(HeadView(parser, text), dechunked),
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSet-Cookie: b=1\r\n"
            "Connection: close\r\n\r\n");
}

}  // namespace
}  // namespace wsgate::http

namespace wsgate::http {
namespace {

TEST(HandshakeForwardedHttpTest, ConnectionCannotRemoveContentLength) {
  const std::string text =
      "POST / HTTP/1.1\r\nHost: h\r\nConnection: content-length, host\r\nContent-Length: 3\r\n\r\n";
  HeadParser parser(HeadKind::kRequest, HeadLimits{});
  ASSERT_EQ(parser.Parse(text), ParseStatus::kComplete);
  std::string out = BuildForwardedRequest(
      HeadView(parser, text), ForwardingInfo{"192.0.2.9", false, ""}, ForwardedBody::kLength);
  EXPECT_NE(out.find("\r\nContent-Length: 3\r\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\r\nHost: h\r\n"), std::string::npos) << out;
}

}  // namespace
}  // namespace wsgate::http
