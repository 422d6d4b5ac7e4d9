#include "proxy/http/body_framer.h"

#include <vector>

namespace wsgate::http {
namespace {

bool IsWs(char c) { return c == ' ' || c == '\t'; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The transfer codings of every Transfer-Encoding field, in order. False if a list element is
// empty or not a token (a smuggler's "chunked, " or "chunked\x0b").
bool TransferCodings(const HeadView& head, std::vector<std::string_view>* codings) {
  for (const auto& field : head.parser().fields()) {
    if (!EqualsIgnoreCase(head.Get(field.name), "transfer-encoding")) continue;
    bool bad = ForEachListItem(head.Get(field.value), [codings](std::string_view item) {
      // A coding may carry parameters (RFC 9112 §7); only chunked matters, and it has none.
      std::string_view name = ListItemName(item);
      if (name.empty()) return true;
      for (char c : name) {
        if (!IsTokenChar(static_cast<unsigned char>(c))) return true;
      }
      codings->push_back(item);
      return false;
    });
    if (bad) return false;
  }
  return true;
}

// All Content-Length fields agree on one valid value.
bool ContentLength(const HeadView& head, uint64_t* out) {
  bool have = false;
  for (const auto& field : head.parser().fields()) {
    if (!EqualsIgnoreCase(head.Get(field.name), "content-length")) continue;
    uint64_t value = 0;
    if (!ParseContentLength(head.Get(field.value), &value)) return false;
    if (have && value != *out) return false;
    *out = value;
    have = true;
  }
  return have;
}

Framing Error(const char* why) {
  Framing f;
  f.error = why;
  return f;
}

}  // namespace

bool ParseContentLength(std::string_view value, uint64_t* out) {
  bool have = false;
  uint64_t first = 0;
  size_t pos = 0;
  while (true) {
    size_t comma = value.find(',', pos);
    std::string_view item = TrimOws(
        value.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos));
    // 1*DIGIT, at most 18 digits so it can never overflow.
    if (item.empty() || item.size() > 18) return false;
    uint64_t n = 0;
    for (char c : item) {
      if (c < '0' || c > '9') return false;
      n = n * 10 + static_cast<uint64_t>(c - '0');
    }
    if (have && n != first) return false;
    first = n;
    have = true;
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  *out = first;
  return true;
}

Framing RequestFraming(const HeadView& request) {
  size_t te_fields = request.FieldCount("transfer-encoding");
  size_t cl_fields = request.FieldCount("content-length");
  if (te_fields > 0 && cl_fields > 0) {
    return Error("Content-Length together with Transfer-Encoding");
  }
  if (te_fields > 0) {
    if (request.parser().version_minor() == 0) {
      return Error("Transfer-Encoding in an HTTP/1.0 request");
    }
    std::vector<std::string_view> codings;
    if (!TransferCodings(request, &codings) || codings.size() != 1 ||
        !EqualsIgnoreCase(codings[0], "chunked")) {
      return Error("Transfer-Encoding other than a single chunked");
    }
    Framing f;
    f.kind = BodyKind::kChunked;
    return f;
  }
  if (cl_fields > 0) {
    Framing f;
    if (!ContentLength(request, &f.length)) return Error("invalid or differing Content-Length");
    f.kind = f.length == 0 ? BodyKind::kNone : BodyKind::kLength;
    return f;
  }
  return Framing{};
}

Framing ResponseFraming(const HeadView& response, bool request_was_head) {
  int status = response.parser().status_code();
  if (request_was_head || status < 200 || status == 204 || status == 304) return Framing{};
  size_t te_fields = response.FieldCount("transfer-encoding");
  size_t cl_fields = response.FieldCount("content-length");
  if (te_fields > 0 && cl_fields > 0) {
    return Error("Content-Length together with Transfer-Encoding");
  }
  Framing f;
  if (te_fields > 0) {
    if (response.parser().version_minor() == 0) return Error("Transfer-Encoding in HTTP/1.0");
    std::vector<std::string_view> codings;
    if (!TransferCodings(response, &codings)) return Error("invalid Transfer-Encoding");
    size_t chunked = 0;
    for (auto coding : codings) {
      if (EqualsIgnoreCase(coding, "chunked")) ++chunked;
    }
    if (chunked == 0) {
      f.kind = BodyKind::kUntilClose;  // RFC 9112 §6.3 rule 4
      return f;
    }
    if (chunked > 1 || !EqualsIgnoreCase(codings.back(), "chunked")) {
      return Error("chunked is not the final transfer coding");
    }
    f.kind = BodyKind::kChunked;
    return f;
  }
  if (cl_fields > 0) {
    if (!ContentLength(response, &f.length)) return Error("invalid or differing Content-Length");
    f.kind = f.length == 0 ? BodyKind::kNone : BodyKind::kLength;
    return f;
  }
  f.kind = BodyKind::kUntilClose;
  return f;
}

size_t ChunkedDecoder::Fail(const char* why, size_t consumed) {
  state_ = State::kError;
  error_ = why;
  return consumed;
}

void ChunkedDecoder::ConsumeData(uint64_t n) {
  if (state_ != State::kData || n > data_left_) return;
  data_left_ -= n;
  body_bytes_ += n;
  if (data_left_ == 0) state_ = State::kDataCr;
}

bool ChunkedDecoder::EndSizeLine() {
  line_bytes_ = 0;
  size_digits_ = 0;
  if (size_ == 0) {
    state_ = State::kTrailerStart;
    return true;
  }
  data_left_ = size_;
  size_ = 0;
  state_ = State::kData;
  return true;
}

size_t ChunkedDecoder::Feed(std::string_view bytes) {
  size_t i = 0;
  for (; i < bytes.size(); ++i) {
    if (state_ == State::kData || state_ == State::kDone || state_ == State::kError) return i;
    char c = bytes[i];
    auto u = static_cast<unsigned char>(c);
    bool in_size_line = state_ <= State::kLineLf;
    if (in_size_line && ++line_bytes_ > limits_.max_line_bytes) {
      return Fail("chunk-size line too long", i);
    }
    bool in_trailers = state_ >= State::kTrailerStart && state_ <= State::kFinalLf;
    if (in_trailers && ++trailer_bytes_ > limits_.max_trailer_bytes) {
      return Fail("trailer section too large", i);
    }
    if (c == '\n' && state_ != State::kLineLf && state_ != State::kDataLf &&
        state_ != State::kTrailerLf && state_ != State::kFinalLf) {
      return Fail("bare LF in chunked framing", i);
    }
    switch (state_) {
      case State::kSize: {
        int v = HexValue(c);
        if (v >= 0) {
          if (size_ >> 60 != 0) return Fail("chunk size too large", i);
          size_ = size_ * 16 + static_cast<uint64_t>(v);
          ++size_digits_;
          break;
        }
        if (size_digits_ == 0) return Fail("invalid chunk size", i);
        if (c == ';') {
          state_ = State::kExtBeforeName;
        } else if (IsWs(c)) {
          state_ = State::kSizeWs;
        } else if (c == '\r') {
          state_ = State::kLineLf;
        } else {
          return Fail("invalid chunk size", i);
        }
        break;
      }
      case State::kSizeWs:  // BWS is only allowed before ';'
        if (c == ';') {
          state_ = State::kExtBeforeName;
        } else if (!IsWs(c)) {
          return Fail("invalid chunk extension", i);
        }
        break;
      case State::kExtBeforeName:
        if (IsTokenChar(u)) {
          state_ = State::kExtName;
        } else if (!IsWs(c)) {
          return Fail("invalid chunk extension", i);
        }
        break;
      case State::kExtName:
        if (IsTokenChar(u)) break;
        if (IsWs(c)) {
          state_ = State::kExtAfterName;
        } else if (c == '=') {
          state_ = State::kExtBeforeValue;
        } else if (c == ';') {
          state_ = State::kExtBeforeName;
        } else if (c == '\r') {
          state_ = State::kLineLf;
        } else {
          return Fail("invalid chunk extension", i);
        }
        break;
      case State::kExtAfterName:
        if (c == '=') {
          state_ = State::kExtBeforeValue;
        } else if (c == ';') {
          state_ = State::kExtBeforeName;
        } else if (!IsWs(c)) {
          return Fail("invalid chunk extension", i);
        }
        break;
      case State::kExtBeforeValue:
        if (c == '"') {
          state_ = State::kExtQuoted;
        } else if (IsTokenChar(u)) {
          state_ = State::kExtToken;
        } else if (!IsWs(c)) {
          return Fail("invalid chunk extension", i);
        }
        break;
      case State::kExtToken:
        if (IsTokenChar(u)) break;
        if (IsWs(c)) {
          state_ = State::kSizeWs;
        } else if (c == ';') {
          state_ = State::kExtBeforeName;
        } else if (c == '\r') {
          state_ = State::kLineLf;
        } else {
          return Fail("invalid chunk extension", i);
        }
        break;
      case State::kExtQuoted:
        if (c == '"') {
          state_ = State::kExtAfterQuoted;
        } else if (c == '\\') {
          state_ = State::kExtQuotedEscape;
        } else if (!(c == '\t' || (u >= 0x20 && u != 0x7f))) {
          return Fail("invalid chunk extension", i);
        }
        break;
      case State::kExtQuotedEscape:
        if (!(c == '\t' || (u >= 0x20 && u != 0x7f))) return Fail("invalid chunk extension", i);
        state_ = State::kExtQuoted;
        break;
      case State::kExtAfterQuoted:
        if (IsWs(c)) {
          state_ = State::kSizeWs;
        } else if (c == ';') {
          state_ = State::kExtBeforeName;
        } else if (c == '\r') {
          state_ = State::kLineLf;
        } else {
          return Fail("invalid chunk extension", i);
        }
        break;
      case State::kLineLf:
        if (c != '\n') return Fail("bare CR in chunked framing", i);
        EndSizeLine();
        break;
      case State::kDataCr:
        if (c != '\r') return Fail("chunk data not followed by CRLF", i);
        state_ = State::kDataLf;
        break;
      case State::kDataLf:
        if (c != '\n') return Fail("chunk data not followed by CRLF", i);
        state_ = State::kSize;
        break;
      case State::kTrailerStart:
        if (c == '\r') {
          state_ = State::kFinalLf;
        } else if (IsWs(c)) {
          return Fail("obsolete line folding in trailers", i);
        } else if (IsTokenChar(u)) {
          if (++trailer_fields_ > limits_.max_trailer_fields) {
            return Fail("too many trailer fields", i);
          }
          trailer_seen_colon_ = false;
          state_ = State::kTrailerLine;
        } else {
          return Fail("invalid trailer field", i);
        }
        break;
      case State::kTrailerLine:
        if (!trailer_seen_colon_) {
          if (c == ':') {
            trailer_seen_colon_ = true;
          } else if (IsWs(c)) {
            return Fail("whitespace before colon in trailers", i);
          } else if (!IsTokenChar(u)) {
            return Fail("invalid trailer field", i);
          }
        } else if (c == '\r') {
          state_ = State::kTrailerLf;
        } else if (!IsFieldValueChar(u)) {
          return Fail("invalid trailer field", i);
        }
        break;
      case State::kTrailerLf:
        if (c != '\n') return Fail("bare CR in chunked framing", i);
        state_ = State::kTrailerStart;
        break;
      case State::kFinalLf:
        if (c != '\n') return Fail("bare CR in chunked framing", i);
        state_ = State::kDone;
        return i + 1;
      case State::kData:
      case State::kDone:
      case State::kError:
        return i;
    }
  }
  return i;
}

}  // namespace wsgate::http
