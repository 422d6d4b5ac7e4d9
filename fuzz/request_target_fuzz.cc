// Fuzz target: NormalizeTarget (proxy/http/request_target.h).
//
// Input layout: byte 0 selects the paths options, the rest is the request target.
//   bit 0  normalize off
//   bit 1  merge_slashes on
//   bit 2  escaped_slashes: keep (else reject)
//   bit 3  prepend "/" (so most inputs are origin-form)
//
// Properties checked, on success:
//   * idempotent: normalising the output again succeeds and gives the output;
//   * the query (from the first "?") is the input's, byte for byte;
//   * the output is never longer than the input;
//   * normalize: no "." or ".." segment is left, no escape of an unreserved character, no
//     lower-case hex in an escape, no "#"; and the path equals a literal transcription of
//     RFC 3986 §5.2.4's buffer algorithm applied to the decoded path;
//   * merge_slashes: no "//" in the path;
//   * escaped_slashes reject: no %2F, %5C or "\" in the path;
//   * every option off: the output is the input.
// On error: the verdict is one that the options allow (e.g. no kBadEscape without normalize).
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "proxy/http/request_target.h"

namespace {

using wsgate::config::PathsConfig;
using namespace wsgate::http;

bool IsUnreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

int Hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// RFC 3986 §5.2.4, step by step on two string buffers.
std::string RfcRemoveDotSegments(std::string in) {
  std::string out;
  auto pop_segment = [&out] {
    size_t slash = out.rfind('/');
    out.resize(slash == std::string::npos ? 0 : slash);
  };
  while (!in.empty()) {
    if (StartsWith(in, "../")) {
      in.erase(0, 3);
    } else if (StartsWith(in, "./")) {
      in.erase(0, 2);
    } else if (StartsWith(in, "/./")) {
      in.erase(0, 2);
    } else if (in == "/.") {
      in = "/";
    } else if (StartsWith(in, "/../")) {
      in.erase(0, 3);
      pop_segment();
    } else if (in == "/..") {
      in = "/";
      pop_segment();
    } else if (in == "." || in == "..") {
      in.clear();
    } else {
      size_t end = in.find('/', 1);
      if (end == std::string::npos) end = in.size();
      out.append(in, 0, end);
      in.erase(0, end);
    }
  }
  return out;
}

// Decoded unreserved escapes, upper-case hex elsewhere; assumes every escape is well formed.
std::string RefDecode(std::string_view path) {
  std::string out;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] != '%') {
      out.push_back(path[i]);
      continue;
    }
    int value = Hex(path[i + 1]) * 16 + Hex(path[i + 2]);
    if (IsUnreserved(static_cast<unsigned char>(value))) {
      out.push_back(static_cast<char>(value));
    } else {
      out.push_back('%');
      out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(path[i + 1]))));
      out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(path[i + 2]))));
    }
    i += 2;
  }
  return out;
}

std::string RefMerge(std::string_view path) {
  std::string out;
  for (char c : path) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out.push_back(c);
  }
  return out;
}

std::string_view PathOf(std::string_view target) { return target.substr(0, target.find('?')); }
std::string_view QueryOf(std::string_view target) {
  size_t q = target.find('?');
  return q == std::string_view::npos ? std::string_view() : target.substr(q);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t selector = data[0];
  PathsConfig paths;
  paths.normalize = (selector & 1) == 0;
  paths.merge_slashes = (selector & 2) != 0;
  paths.escaped_slashes = (selector & 4) != 0 ? PathsConfig::EscapedSlashes::kKeep
                                              : PathsConfig::EscapedSlashes::kReject;
  std::string target((selector & 8) != 0 ? "/" : "");
  target.append(reinterpret_cast<const char*>(data + 1), size - 1);
  const bool reject = paths.escaped_slashes == PathsConfig::EscapedSlashes::kReject;
  const bool origin_form = !target.empty() && target.front() == '/';

  std::string out;
  TargetError error = NormalizeTarget(target, paths, &out);
  if (error != TargetError::kNone) {
    FUZZ_CHECK(origin_form);
    FUZZ_CHECK(paths.normalize || error == TargetError::kEscapedSlash ||
               error == TargetError::kBackslash);
    FUZZ_CHECK(reject || (error != TargetError::kEscapedSlash && error != TargetError::kBackslash));
    FUZZ_CHECK(error != TargetError::kFragment || target.find('#') != std::string::npos);
    return 0;
  }
  std::string again;
  FUZZ_CHECK(NormalizeTarget(out, paths, &again) == TargetError::kNone);
  FUZZ_CHECK_MSG(again == out, "not idempotent: %s -> %s", out.c_str(), again.c_str());
  FUZZ_CHECK(out.size() <= target.size());
  if (!origin_form || (!paths.normalize && !paths.merge_slashes)) {
    FUZZ_CHECK(out == target);
    return 0;
  }
  FUZZ_CHECK(QueryOf(out) == QueryOf(target));
  const std::string_view path = PathOf(out);
  FUZZ_CHECK(!path.empty() && path.front() == '/');
  if (paths.merge_slashes) FUZZ_CHECK(path.find("//") == std::string_view::npos);
  if (reject) {
    FUZZ_CHECK(path.find('\\') == std::string_view::npos);
    for (size_t i = 0; i + 2 < path.size(); ++i) {
      if (path[i] != '%' || Hex(path[i + 1]) < 0 || Hex(path[i + 2]) < 0) continue;
      int value = Hex(path[i + 1]) * 16 + Hex(path[i + 2]);
      FUZZ_CHECK(value != '/' && value != '\\');
    }
  }
  if (!paths.normalize) return 0;

  FUZZ_CHECK(out.find('#') == std::string::npos);
  size_t pos = 0;
  while (pos < path.size()) {  // every segment
    size_t end = path.find('/', pos + 1);
    if (end == std::string_view::npos) end = path.size();
    std::string_view segment = path.substr(pos + 1, end - pos - 1);
    FUZZ_CHECK_MSG(segment != "." && segment != "..", "dot segment left in %s", out.c_str());
    pos = end;
  }
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] != '%') continue;
    FUZZ_CHECK(i + 2 < path.size());
    int high = Hex(path[i + 1]);
    int low = Hex(path[i + 2]);
    FUZZ_CHECK(high >= 0 && low >= 0);
    FUZZ_CHECK(!(path[i + 1] >= 'a' && path[i + 1] <= 'f') &&
               !(path[i + 2] >= 'a' && path[i + 2] <= 'f'));
    FUZZ_CHECK(!IsUnreserved(static_cast<unsigned char>(high * 16 + low)));
  }
  if (target.size() <= 4096) {  // the reference is quadratic
    std::string want = RfcRemoveDotSegments(RefDecode(PathOf(target)));
    if (paths.merge_slashes) want = RefMerge(want);
    FUZZ_CHECK_MSG(path == want, "%s: got %s, RFC 3986 says %s", target.c_str(),
                   std::string(path).c_str(), want.c_str());
  }
  return 0;
}
