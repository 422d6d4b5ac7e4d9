#include "proxy/http/request_target.h"

namespace wsgate::http {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

char UpperHex(char c) { return c >= 'a' && c <= 'f' ? static_cast<char>(c - 32) : c; }

// RFC 3986 §2.3.
bool IsUnreserved(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// Appends |path| to *out with dot segments removed (RFC 3986 §5.2.4). |path| starts with "/",
// so every segment is preceded by one; popping a segment removes it and its "/".
void AppendWithoutDotSegments(std::string_view path, std::string* out) {
  const size_t base = out->size();
  bool trailing_slash = false;
  size_t pos = 1;  // after the leading "/"
  while (true) {
    size_t end = path.find('/', pos);
    bool last = end == std::string_view::npos;
    std::string_view segment = path.substr(pos, last ? std::string_view::npos : end - pos);
    if (segment == "." || segment == "..") {
      if (segment == ".." && out->size() > base) {
        out->resize(out->rfind('/'));  // every segment in *out after |base| starts with "/"
      }
      trailing_slash = last;  // "/a/.." is the directory "/", "/a/." is "/a/"
    } else {
      out->push_back('/');
      out->append(segment);
    }
    if (last) break;
    pos = end + 1;
  }
  if (trailing_slash || out->size() == base) out->push_back('/');
}

void AppendMergingSlashes(std::string_view path, std::string* out) {
  for (char c : path) {
    if (c == '/' && !out->empty() && out->back() == '/') continue;
    out->push_back(c);
  }
}

}  // namespace

const char* TargetErrorReason(TargetError error) {
  switch (error) {
    case TargetError::kNone:
      return "none";
    case TargetError::kBadEscape:
      return "malformed percent-encoding in the request target";
    case TargetError::kFragment:
      return "a request target must not contain a fragment (#)";
    case TargetError::kEscapedSlash:
      return "encoded slash or backslash (%2F, %5C) in the request path";
    case TargetError::kBackslash:
      return "backslash in the request path";
  }
  return "?";
}

TargetError NormalizeTarget(std::string_view target, const config::PathsConfig& paths,
                            std::string* out) {
  if (target.empty() || target.front() != '/') {  // "*" (OPTIONS): nothing to normalise
    out->assign(target);
    return TargetError::kNone;
  }
  const size_t query_start = target.find('?');
  std::string_view path = target.substr(0, query_start);
  std::string_view query =
      query_start == std::string_view::npos ? std::string_view() : target.substr(query_start);
  const bool reject_slashes = paths.escaped_slashes == config::PathsConfig::EscapedSlashes::kReject;
  if (paths.normalize && target.find('#') != std::string_view::npos) return TargetError::kFragment;

  // Pass 1: check the escapes; with normalize, decode the unreserved ones and upper-case the rest.
  std::string decoded;
  if (paths.normalize) decoded.reserve(path.size());
  for (size_t i = 0; i < path.size(); ++i) {
    char c = path[i];
    if (c == '\\' && reject_slashes) return TargetError::kBackslash;
    if (c != '%') {
      if (paths.normalize) decoded.push_back(c);
      continue;
    }
    int high = i + 1 < path.size() ? HexValue(path[i + 1]) : -1;
    int low = i + 2 < path.size() ? HexValue(path[i + 2]) : -1;
    if (high < 0 || low < 0) {
      if (paths.normalize) return TargetError::kBadEscape;
      continue;  // as today: not ours to judge
    }
    int value = high * 16 + low;
    if ((value == '/' || value == '\\') && reject_slashes) return TargetError::kEscapedSlash;
    if (paths.normalize) {
      if (IsUnreserved(value)) {
        decoded.push_back(static_cast<char>(value));
      } else {
        decoded.push_back('%');
        decoded.push_back(UpperHex(path[i + 1]));
        decoded.push_back(UpperHex(path[i + 2]));
      }
    }
    i += 2;
  }
  if (paths.normalize) path = decoded;

  out->clear();
  out->reserve(target.size());
  if (paths.normalize && paths.merge_slashes) {
    std::string without_dots;
    without_dots.reserve(path.size());
    AppendWithoutDotSegments(path, &without_dots);
    AppendMergingSlashes(without_dots, out);
  } else if (paths.normalize) {
    AppendWithoutDotSegments(path, out);
  } else if (paths.merge_slashes) {
    AppendMergingSlashes(path, out);
  } else {
    out->append(path);
  }
  out->append(query);
  return TargetError::kNone;
}

}  // namespace wsgate::http
