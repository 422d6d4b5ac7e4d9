#include "proxy/http/request_target.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace wsgate::http {
namespace {

using Slashes = config::PathsConfig::EscapedSlashes;

config::PathsConfig Paths(bool normalize = true, bool merge_slashes = false,
                          Slashes slashes = Slashes::kReject) {
  config::PathsConfig paths;
  paths.normalize = normalize;
  paths.merge_slashes = merge_slashes;
  paths.escaped_slashes = slashes;
  return paths;
}

// Normalises |target|, expecting success; also checks that the result is a fixed point.
std::string Normalized(std::string_view target, const config::PathsConfig& paths = Paths()) {
  std::string out;
  TargetError error = NormalizeTarget(target, paths, &out);
  EXPECT_EQ(error, TargetError::kNone) << target << ": " << TargetErrorReason(error);
  std::string again;
  EXPECT_EQ(NormalizeTarget(out, paths, &again), TargetError::kNone) << out;
  EXPECT_EQ(again, out) << "not idempotent for " << target;
  return out;
}

TargetError ErrorFor(std::string_view target, const config::PathsConfig& paths = Paths()) {
  std::string out;
  return NormalizeTarget(target, paths, &out);
}

// RFC 3986 §5.4.1 and §5.4.2 against the base "http://a/b/c/d;p?q": each reference merged with
// the base path ("/b/c/" + reference) and then stripped of dot segments gives the path the RFC
// lists. Only the references that are paths apply here.
TEST(RequestTargetTest, Rfc3986ReferenceResolutionExamples) {
  const std::pair<std::string_view, std::string_view> cases[] = {
      {"/b/c/g", "/b/c/g"},
      {"/b/c/./g", "/b/c/g"},
      {"/b/c/g/", "/b/c/g/"},
      {"/g", "/g"},
      {"/b/c/.", "/b/c/"},
      {"/b/c/./", "/b/c/"},
      {"/b/c/..", "/b/"},
      {"/b/c/../", "/b/"},
      {"/b/c/../g", "/b/g"},
      {"/b/c/../..", "/"},
      {"/b/c/../../", "/"},
      {"/b/c/../../g", "/g"},
      {"/b/c/../../../g", "/g"},
      {"/b/c/../../../../g", "/g"},
      {"/./g", "/g"},
      {"/../g", "/g"},
      {"/b/c/g.", "/b/c/g."},
      {"/b/c/.g", "/b/c/.g"},
      {"/b/c/g..", "/b/c/g.."},
      {"/b/c/..g", "/b/c/..g"},
      {"/b/c/./../g", "/b/g"},
      {"/b/c/./g/.", "/b/c/g/"},
      {"/b/c/g/./h", "/b/c/g/h"},
      {"/b/c/g/../h", "/b/c/h"},
      {"/b/c/g;x=1/./y", "/b/c/g;x=1/y"},
      {"/b/c/g;x=1/../y", "/b/c/y"},
      {"/a/b/c/./../../g", "/a/g"},  // §5.2.4's own example
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(Normalized(in), want) << in;
}

TEST(RequestTargetTest, DotSegmentAttacksLandOnTheRealPath) {
  EXPECT_EQ(Normalized("/public/../private"), "/private");
  EXPECT_EQ(Normalized("/public/%2e%2e/private"), "/private");
  EXPECT_EQ(Normalized("/public/%2E%2E/private"), "/private");
  EXPECT_EQ(Normalized("/public/.%2e/private"), "/private");
  EXPECT_EQ(Normalized("/public/%2e./private"), "/private");
  EXPECT_EQ(Normalized("/public/%2e/../private"), "/private");
  EXPECT_EQ(Normalized("/public/./../private"), "/private");
  EXPECT_EQ(Normalized("/.."), "/");
  EXPECT_EQ(Normalized("/."), "/");
  EXPECT_EQ(Normalized("/../../../etc/passwd"), "/etc/passwd");
  EXPECT_EQ(Normalized("/public/.."), "/");
  // An empty segment is a segment: ".." removes it, not "public".
  EXPECT_EQ(Normalized("/public//../private"), "/public/private");
  EXPECT_EQ(Normalized("//public/../private"), "//private");
  EXPECT_EQ(Normalized("//public/../private", Paths(true, true)), "/private");
  // Not dot segments.
  EXPECT_EQ(Normalized("/public/.../private"), "/public/.../private");
  EXPECT_EQ(Normalized("/public/..;/private"), "/public/..;/private");
  EXPECT_EQ(Normalized("/public/%252e%252e/private"), "/public/%252e%252e/private");
}

TEST(RequestTargetTest, DecodesOnlyUnreservedAndUpperCasesTheRest) {
  EXPECT_EQ(Normalized("/%41%62%7e%2D%5f%2e%30"), "/Ab~-_.0");
  EXPECT_EQ(Normalized("/a%2a%c3%a9%20%25"), "/a%2A%C3%A9%20%25");
  EXPECT_EQ(Normalized("/%3f%23%3B"), "/%3F%23%3B");  // "?", "#" and ";" stay escaped
  EXPECT_EQ(Normalized("/%00"), "/%00");
}

TEST(RequestTargetTest, QueryIsNeverChanged) {
  EXPECT_EQ(Normalized("/a/../b?x=/../%2f&y=%41&z=\\"), "/b?x=/../%2f&y=%41&z=\\");
  EXPECT_EQ(Normalized("/?"), "/?");
  EXPECT_EQ(Normalized("/a/..?q"), "/?q");
  EXPECT_EQ(Normalized("/a?%zz"), "/a?%zz");
  EXPECT_EQ(Normalized("//a//b?//c", Paths(true, true)), "/a/b?//c");
}

TEST(RequestTargetTest, EscapedSlashesAreRejectedByDefault) {
  for (std::string_view target :
       {"/public/..%2fprivate", "/public/..%2Fprivate", "/a%5cb", "/a%5Cb", "/%2f"}) {
    EXPECT_EQ(ErrorFor(target), TargetError::kEscapedSlash) << target;
    // Also with normalisation off: that setting is independent.
    EXPECT_EQ(ErrorFor(target, Paths(false)), TargetError::kEscapedSlash) << target;
  }
  EXPECT_EQ(ErrorFor("/public\\..\\private"), TargetError::kBackslash);
  EXPECT_EQ(ErrorFor("/a\\", Paths(false)), TargetError::kBackslash);
  EXPECT_STREQ(TargetErrorReason(TargetError::kEscapedSlash),
               "encoded slash or backslash (%2F, %5C) in the request path");
}

TEST(RequestTargetTest, EscapedSlashesKeptAreNeverDecoded) {
  const config::PathsConfig keep = Paths(true, false, Slashes::kKeep);
  EXPECT_EQ(Normalized("/public/..%2fprivate", keep), "/public/..%2Fprivate");
  EXPECT_EQ(Normalized("/a%5cb/../c", keep), "/c");
  EXPECT_EQ(Normalized("/a\\b", keep), "/a\\b");
  EXPECT_EQ(Normalized("/a/..%2F..%2Fb", keep), "/a/..%2F..%2Fb");
  EXPECT_EQ(Normalized("/a%2f%2e%2e", Paths(false, false, Slashes::kKeep)), "/a%2f%2e%2e");
}

TEST(RequestTargetTest, MergeSlashes) {
  const config::PathsConfig merge = Paths(true, true);
  EXPECT_EQ(Normalized("//a///b", merge), "/a/b");
  EXPECT_EQ(Normalized("/a/", merge), "/a/");
  EXPECT_EQ(Normalized("//", merge), "/");
  EXPECT_EQ(Normalized("/a//../b", merge), "/a/b");  // dot segments first, as RFC 3986 reads it
  EXPECT_EQ(Normalized("//a//./b//", merge), "/a/b/");
  EXPECT_EQ(Normalized("//a///b", Paths()), "//a///b");  // off by default
  // Without normalisation: slashes merged, dot segments left alone.
  EXPECT_EQ(Normalized("//a///b/../c", Paths(false, true)), "/a/b/../c");
}

TEST(RequestTargetTest, NormalizeOffForwardsTheRawTarget) {
  const config::PathsConfig raw = Paths(false, false, Slashes::kKeep);
  for (std::string_view target :
       {"/public/../private", "/a/%2e%2e/%41", "/a%zz", "/a%", "/a#b", "/a\\b", "/x/./y?q=1"}) {
    std::string out;
    EXPECT_EQ(NormalizeTarget(target, raw, &out), TargetError::kNone) << target;
    EXPECT_EQ(out, target);
  }
  EXPECT_EQ(ErrorFor("/a%zz", Paths(false)), TargetError::kNone);
}

TEST(RequestTargetTest, MalformedEscapesAreRejected) {
  for (std::string_view target :
       {"/a%", "/a%4", "/a%zz", "/a%4g", "/a%g4", "/%%41", "/a%/b", "/%2", "/%"}) {
    EXPECT_EQ(ErrorFor(target), TargetError::kBadEscape) << target;
  }
  EXPECT_STREQ(TargetErrorReason(TargetError::kBadEscape),
               "malformed percent-encoding in the request target");
}

TEST(RequestTargetTest, FragmentsAreRejected) {
  EXPECT_EQ(ErrorFor("/public/..#/private"), TargetError::kFragment);
  EXPECT_EQ(ErrorFor("/a?b#c"), TargetError::kFragment);
  EXPECT_EQ(ErrorFor("/#"), TargetError::kFragment);
}

TEST(RequestTargetTest, NonOriginFormIsUnchanged) {
  EXPECT_EQ(Normalized("*"), "*");
  EXPECT_EQ(Normalized("/"), "/");
}

TEST(RequestTargetTest, LongInputs) {
  std::string deep = "/";
  for (int i = 0; i < 5000; ++i) deep += "a/";
  std::string target = deep;
  for (int i = 0; i < 5000; ++i) target += "../";
  EXPECT_EQ(Normalized(target + "x"), "/x");
  for (int i = 0; i < 100; ++i) target += "../";  // more ".." than segments: stays at the root
  EXPECT_EQ(Normalized(target), "/");

  std::string escaped = "/";
  for (int i = 0; i < 20000; ++i) escaped += "%41";
  EXPECT_EQ(Normalized(escaped), "/" + std::string(20000, 'A'));

  std::string slashes(30000, '/');
  EXPECT_EQ(Normalized(slashes, Paths(true, true)), "/");
  EXPECT_EQ(Normalized(slashes), slashes);
}

}  // namespace
}  // namespace wsgate::http
