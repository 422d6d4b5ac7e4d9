// Normalise an origin-form request target's path before anything looks at it (config `paths`),
// so routing, the auth hook, sticky hashing, the access log and the backend all see one path:
// "/public/../private" must not match a "/public" route while the backend serves "/private".
//
// With paths.normalize (RFC 3986 §6.2.2): escapes of unreserved characters are decoded (§2.3:
// %41 -> A, %2e -> .), the hex of every other escape is upper-cased (%2a -> %2A), and dot
// segments are removed (§5.2.4: "/a/./b/../c" -> "/a/c", "/.." -> "/"). A malformed escape
// ("%", "%4", "%zz") and a fragment ("#", which origin-form never has) are refused: backends
// disagree on what they mean. paths.merge_slashes then merges runs of "/". paths.escaped_slashes
// decides about %2F, %5C and a raw "\" in the path, which backends read as a separator or not:
// refused (reject) or forwarded untouched (keep). The query is never changed.
//
// Pure: bytes in, bytes out; unit-tested and fuzzed.
#pragma once

#include <string>
#include <string_view>

#include "config/config.h"

namespace wsgate::http {

enum class TargetError {
  kNone,
  kBadEscape,     // "%" not followed by two hex digits
  kFragment,      // "#" in the target
  kEscapedSlash,  // %2F or %5C in the path (escaped_slashes: reject)
  kBackslash,     // a raw "\" in the path (escaped_slashes: reject)
};

// The reason sent with the 400, and logged.
const char* TargetErrorReason(TargetError error);

// Normalise |target| as |paths| says into *out: the path, then the query as sent. A target that
// is not origin-form ("*") is copied unchanged, and so is every target with all options off.
// *out is unspecified on error.
TargetError NormalizeTarget(std::string_view target, const config::PathsConfig& paths,
                            std::string* out);

}  // namespace wsgate::http
