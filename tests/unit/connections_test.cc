// The connections API's pure parts: ids, the process-wide index, request parsing, auth cache.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <string>

#include "proxy/connections/api.h"
#include "proxy/connections/auth_hook.h"
#include "proxy/connections/registry.h"
#include "proxy/http/head_parser.h"

namespace wsgate {
namespace {

TEST(ConnectionIdTest, TwentyTwoUrlSafeCharactersAndUnique) {
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    std::string id = NewConnectionId();
    ASSERT_EQ(id.size(), 22u);
    for (char c : id) {
      ASSERT_TRUE(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << id;
    }
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 10000u);
}

ConnectionEntry Entry(std::string id, std::string pool, std::string backend, size_t worker = 0) {
  ConnectionEntry e;
  e.id = std::move(id);
  e.pool = std::move(pool);
  e.backend = std::move(backend);
  e.worker = worker;
  return e;
}

TEST(ConnectionIndexTest, FindRemoveAndRememberClosed) {
  ConnectionIndex index;
  index.Add(Entry("a", "p", "b1", 1));
  ASSERT_TRUE(index.Find("a").has_value());
  EXPECT_EQ(index.Find("a")->worker, 1u);
  EXPECT_FALSE(index.RecentlyClosed("a"));
  index.Remove("a");
  EXPECT_FALSE(index.Find("a").has_value());
  EXPECT_TRUE(index.RecentlyClosed("a"));
  EXPECT_FALSE(index.RecentlyClosed("never"));
  index.Remove("never");  // unknown ids are not remembered as closed
  EXPECT_FALSE(index.RecentlyClosed("never"));
  EXPECT_EQ(index.size(), 0u);
}

TEST(ConnectionIndexTest, ClosedIdsAreBounded) {
  ConnectionIndex index;
  for (int i = 0; i < 100000; ++i) {
    std::string id = "id" + std::to_string(i);
    index.Add(Entry(id, "p", "b"));
    index.Remove(id);
  }
  EXPECT_TRUE(index.RecentlyClosed("id99999"));
  EXPECT_FALSE(index.RecentlyClosed("id0"));
}

TEST(ConnectionIndexTest, ListPagesInIdOrderWithFilters) {
  ConnectionIndex index;
  for (int i = 0; i < 25; ++i) {
    char id[8];
    std::snprintf(id, sizeof(id), "c%02d", i);
    index.Add(Entry(id, i % 2 == 0 ? "even" : "odd", i < 10 ? "b1" : "b2"));
  }
  bool more = false;
  std::vector<std::string> all;
  std::string cursor;
  do {
    auto page = index.List("", "", cursor, 10, &more);
    ASSERT_FALSE(page.empty());
    for (const auto& e : page) all.push_back(e.id);
    cursor = page.back().id;
  } while (more);
  ASSERT_EQ(all.size(), 25u);
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end()));
  auto evens = index.List("even", "b1", "", 100, &more);
  EXPECT_FALSE(more);
  ASSERT_EQ(evens.size(), 5u);  // c00 c02 c04 c06 c08
  EXPECT_EQ(evens.front().id, "c00");
  EXPECT_EQ(evens.back().id, "c08");
  auto exact = index.List("", "", "", 25, &more);
  EXPECT_EQ(exact.size(), 25u);
  EXPECT_FALSE(more);
}

TEST(ConnectionIndexTest, PagesMatchASortedListForRandomIds) {
  ConnectionIndex index;
  std::vector<std::string> ids;
  for (int i = 0; i < 500; ++i) {
    ids.push_back(NewConnectionId());
    index.Add(Entry(ids.back(), "p", "b"));
  }
  std::sort(ids.begin(), ids.end());
  for (size_t limit : {1u, 7u, 100u, 499u, 500u, 1000u}) {
    std::vector<std::string> seen;
    std::string cursor;
    bool more = true;
    while (more) {
      for (const auto& e : index.List("", "", cursor, limit, &more)) seen.push_back(e.id);
      ASSERT_FALSE(seen.empty());
      cursor = seen.back();
    }
    EXPECT_EQ(seen, ids) << "limit " << limit;
  }
}

TEST(ConnectionsApiTest, CloseRequestValidation) {
  uint16_t code = 0;
  std::string reason;
  EXPECT_EQ(ParseCloseRequest(nullptr, nullptr, &code, &reason), "");
  EXPECT_EQ(code, 1000);
  EXPECT_EQ(ParseCloseRequest("4001", "bye", &code, &reason), "");
  EXPECT_EQ(code, 4001);
  EXPECT_EQ(reason, "bye");
  EXPECT_EQ(ParseCloseRequest("1012", "", &code, &reason), "");
  for (const char* bad : {"1005", "1006", "1015", "999", "5000", "abc", "10000", "-1", "1000x"}) {
    EXPECT_NE(ParseCloseRequest(bad, "", &code, &reason), "") << bad;
  }
  EXPECT_EQ(ParseCloseRequest("1000", std::string(123, 'r').c_str(), &code, &reason), "");
  EXPECT_NE(ParseCloseRequest("1000", std::string(124, 'r').c_str(), &code, &reason), "");
  EXPECT_NE(ParseCloseRequest("1000", "\xc3\x28", &code, &reason), "");
}

TEST(ConnectionsApiTest, TextContentTypes) {
  EXPECT_TRUE(IsTextContentType("text/plain"));
  EXPECT_TRUE(IsTextContentType("Text/HTML; charset=utf-8"));
  EXPECT_TRUE(IsTextContentType("application/json"));
  EXPECT_TRUE(IsTextContentType("application/json; charset=utf-8"));
  EXPECT_FALSE(IsTextContentType("application/jsonx"));
  EXPECT_FALSE(IsTextContentType("application/octet-stream"));
  EXPECT_FALSE(IsTextContentType(nullptr));
  EXPECT_FALSE(IsTextContentType(""));
}

class AuthHeadTest : public ::testing::Test {
 protected:
  void Parse(const std::string& text) {
    text_ = text;
    parser_ = http::HeadParser(http::HeadKind::kRequest, http::HeadLimits{});
    ASSERT_EQ(parser_.Parse(text_), http::ParseStatus::kComplete);
  }
  http::HeadView view() const { return http::HeadView(parser_, text_); }
  std::string_view Target() const { return view().Get(parser_.target()); }
  std::string text_;
  http::HeadParser parser_{http::HeadKind::kRequest, http::HeadLimits{}};
};

TEST_F(AuthHeadTest, ForwardsOnlyTheChosenHeadersPlusTheOriginalRequest) {
  Parse("GET /x/../chat?room=1 HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\nX-Other: no\r\n\r\n");
  config::AuthConfig auth;  // Cookie, Authorization, Origin
  // X-Original-Uri is the target as routed (normalised), not as sent.
  HeaderList headers = AuthRequestHeaders(view(), auth, "10.0.0.1", "id-1", "/chat?room=1");
  HeaderList expected = {{"Cookie", "s=1"},
                         {"X-Original-Uri", "/chat?room=1"},
                         {"X-Original-Method", "GET"},
                         {"X-Forwarded-For", "10.0.0.1"},
                         {"X-Wsgate-Connection-Id", "id-1"}};
  EXPECT_EQ(headers, expected);
}

TEST_F(AuthHeadTest, CacheKeyDependsOnTargetAndForwardedValuesOnly) {
  config::AuthConfig auth;
  Parse("GET /a HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\nX-Other: 1\r\n\r\n");
  std::string base = AuthCacheKey(view(), auth, Target());
  Parse("GET /a HTTP/1.1\r\nHost: b\r\nCookie: s=1\r\nX-Other: 2\r\n\r\n");
  EXPECT_EQ(AuthCacheKey(view(), auth, Target()), base);
  Parse("GET /a HTTP/1.1\r\nHost: a\r\nCookie: s=2\r\n\r\n");
  EXPECT_NE(AuthCacheKey(view(), auth, Target()), base);
  Parse("GET /b HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\n\r\n");
  EXPECT_NE(AuthCacheKey(view(), auth, Target()), base);
  // An empty Cookie differs from none, and values cannot bleed into the next header.
  Parse("GET /a HTTP/1.1\r\nHost: a\r\nCookie:\r\n\r\n");
  std::string empty_cookie = AuthCacheKey(view(), auth, Target());
  Parse("GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_NE(AuthCacheKey(view(), auth, Target()), empty_cookie);
}

TEST_F(AuthHeadTest, EveryValueOfAForwardedHeaderIsAskedAboutAndKeyed) {
  config::AuthConfig auth;  // Cookie, Authorization, Origin
  Parse("GET /a HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\ncookie: t=2\r\n\r\n");
  HeaderList expected = {{"Cookie", "s=1"},
                         {"Cookie", "t=2"},
                         {"X-Original-Uri", "/a"},
                         {"X-Original-Method", "GET"},
                         {"X-Forwarded-For", "10.0.0.1"},
                         {"X-Wsgate-Connection-Id", "id-1"}};
  EXPECT_EQ(AuthRequestHeaders(view(), auth, "10.0.0.1", "id-1", Target()), expected);
  std::string both = AuthCacheKey(view(), auth, Target());
  // The backend gets every value, so a second value the hook never saw must not share a key.
  Parse("GET /a HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\n\r\n");
  EXPECT_NE(AuthCacheKey(view(), auth, Target()), both);
  Parse("GET /a HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\nCookie: t=3\r\n\r\n");
  EXPECT_NE(AuthCacheKey(view(), auth, Target()), both);
  // A value cannot move between names without changing the key.
  Parse("GET /a HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\nAuthorization: t=2\r\n\r\n");
  EXPECT_NE(AuthCacheKey(view(), auth, Target()), both);
  Parse("GET /a HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\ncookie: t=2\r\n\r\n");
  EXPECT_EQ(AuthCacheKey(view(), auth, Target()), both);
}

TEST(AuthCacheTest, ExpiresAndStaysBounded) {
  AuthCache cache;
  auto now = AuthCache::Clock::now();
  AuthDecision allow{200, {{"X-User-Id", "7"}}, "", {}};
  cache.Put("k", allow, now + std::chrono::seconds(10), 100);
  ASSERT_NE(cache.Find("k", now), nullptr);
  EXPECT_EQ(cache.Find("k", now)->copy_headers[0].second, "7");
  EXPECT_EQ(cache.Find("k", now + std::chrono::seconds(11)), nullptr);
  EXPECT_EQ(cache.Find("k", now), nullptr);  // expired entries are gone
  for (int i = 0; i < 1000; ++i) {
    cache.Put("k" + std::to_string(i), allow, now + std::chrono::seconds(10), 100);
  }
  EXPECT_LE(cache.size(), 100u);
  EXPECT_NE(cache.Find("k999", now), nullptr);  // the newest survive
  EXPECT_EQ(cache.Find("k0", now), nullptr);
}

}  // namespace
}  // namespace wsgate
