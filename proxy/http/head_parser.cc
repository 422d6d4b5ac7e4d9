#include "proxy/http/head_parser.h"

#include <algorithm>
#include <array>
#include <cstring>

namespace wsgate::http {
namespace {

// Byte classes, so the per-byte checks of the hot loops are one table load each.
constexpr uint8_t kTokenClass = 1;       // RFC 9110 §5.6.2 tchar
constexpr uint8_t kFieldValueClass = 2;  // HTAB, SP, VCHAR, obs-text

constexpr std::array<uint8_t, 256> MakeByteClasses() {
  std::array<uint8_t, 256> classes{};
  for (int c = 0; c < 256; ++c) {
    bool token = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    for (char t : std::string_view("!#$%&'*+-.^_`|~")) token = token || c == t;
    bool value = c == '\t' || (c >= 0x20 && c != 0x7f);
    classes[static_cast<size_t>(c)] =
        static_cast<uint8_t>((token ? kTokenClass : 0) | (value ? kFieldValueClass : 0));
  }
  return classes;
}
constexpr std::array<uint8_t, 256> kByteClasses = MakeByteClasses();

constexpr std::array<unsigned char, 256> MakeLowerTable() {
  std::array<unsigned char, 256> lower{};
  for (int c = 0; c < 256; ++c) {
    lower[static_cast<size_t>(c)] = static_cast<unsigned char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
  }
  return lower;
}
constexpr std::array<unsigned char, 256> kLower = MakeLowerTable();

// "HTTP/d.d" → major, minor.
bool ParseVersion(std::string_view text, int* major, int* minor) {
  if (text.size() != 8 || text.substr(0, 5) != "HTTP/" || text[6] != '.') return false;
  if (text[5] < '0' || text[5] > '9' || text[7] < '0' || text[7] > '9') return false;
  *major = text[5] - '0';
  *minor = text[7] - '0';
  return true;
}

}  // namespace

bool IsTokenChar(unsigned char c) { return (kByteClasses[c] & kTokenClass) != 0; }
bool IsFieldValueChar(unsigned char c) { return (kByteClasses[c] & kFieldValueClass) != 0; }

const char* ParseErrorName(ParseError error) {
  switch (error) {
    case ParseError::kNone:
      return "none";
    case ParseError::kBadStartLine:
      return "bad start line";
    case ParseError::kStartLineTooLong:
      return "start line too long";
    case ParseError::kHeadTooLarge:
      return "header section too large";
    case ParseError::kBareCR:
      return "bare CR";
    case ParseError::kBareLF:
      return "bare LF";
    case ParseError::kObsFold:
      return "obsolete line folding";
    case ParseError::kSpaceBeforeColon:
      return "whitespace before colon";
    case ParseError::kBadFieldName:
      return "invalid field name";
    case ParseError::kBadFieldValue:
      return "invalid field value";
  }
  return "?";
}

ParseStatus HeadParser::Fail(ParseError error) {
  error_ = error;
  status_ = ParseStatus::kError;
  return status_;
}

ParseStatus HeadParser::Parse(std::string_view buffered) {
  if (status_ != ParseStatus::kNeedMore) return status_;
  // Offsets are stored as uint32_t; the head limit keeps them far below that.
  while (true) {
    if (scan_ < pos_) scan_ = pos_;
    // Find the end of the current line: CRLF. A lone LF, or CR followed by anything else, fails.
    // Every byte before |limit| is within both limits, so there only CR and LF matter and
    // memchr finds them; the verdict is the one a byte-by-byte scan gives, whatever the split.
    size_t limit = std::min(buffered.size(), limits_.max_head_bytes);
    if (!start_line_done_ && limit - pos_ > limits_.max_start_line_bytes) {
      limit = pos_ + limits_.max_start_line_bytes + 1;  // pos_ <= limit always
    }
    size_t end = std::string_view::npos;
    const char* data = buffered.data();
    const void* cr = scan_ < limit ? std::memchr(data + scan_, '\r', limit - scan_) : nullptr;
    size_t stop = cr != nullptr ? static_cast<size_t>(static_cast<const char*>(cr) - data) : limit;
    if (stop > scan_ && std::memchr(data + scan_, '\n', stop - scan_) != nullptr) {
      return Fail(ParseError::kBareLF);
    }
    scan_ = stop;
    if (cr == nullptr) {
      // A byte at |limit| is over one of the limits; the start-line limit is judged first.
      if (scan_ < buffered.size()) {
        if (!start_line_done_ && scan_ - pos_ > limits_.max_start_line_bytes) {
          return Fail(ParseError::kStartLineTooLong);
        }
        return Fail(ParseError::kHeadTooLarge);
      }
    } else {
      // A line ending here cannot end within the head limit.
      if (scan_ + 2 > limits_.max_head_bytes) return Fail(ParseError::kHeadTooLarge);
      if (scan_ + 1 < buffered.size()) {  // else: need the byte after the CR
        if (buffered[scan_ + 1] != '\n') return Fail(ParseError::kBareCR);
        end = scan_;
      }
    }
    if (end == std::string_view::npos) {
      size_t line_so_far = scan_ - pos_;  // excludes a CR still waiting for its LF
      if (!start_line_done_ && line_so_far > limits_.max_start_line_bytes) {
        return Fail(ParseError::kStartLineTooLong);
      }
      if (buffered.size() >= limits_.max_head_bytes) return Fail(ParseError::kHeadTooLarge);
      return status_;
    }
    size_t next = end + 2;
    if (next > limits_.max_head_bytes) {
      if (!start_line_done_ && end - pos_ > limits_.max_start_line_bytes) {
        return Fail(ParseError::kStartLineTooLong);
      }
      return Fail(ParseError::kHeadTooLarge);
    }
    std::string_view line = buffered.substr(pos_, end - pos_);
    auto base = static_cast<uint32_t>(pos_);
    if (!start_line_done_) {
      if (line.size() > limits_.max_start_line_bytes) return Fail(ParseError::kStartLineTooLong);
      bool ok =
          kind_ == HeadKind::kRequest ? ParseRequestLine(line, base) : ParseStatusLine(line, base);
      if (!ok) return Fail(ParseError::kBadStartLine);
      start_line_done_ = true;
    } else if (line.empty()) {
      pos_ = next;
      status_ = ParseStatus::kComplete;
      return status_;
    } else {
      ParseError error = ParseField(line, base);
      if (error != ParseError::kNone) return Fail(error);
      if (fields_.size() > limits_.max_fields) return Fail(ParseError::kHeadTooLarge);
    }
    pos_ = next;
    scan_ = next;
  }
}

bool HeadParser::ParseRequestLine(std::string_view line, uint32_t base) {
  // method SP request-target SP HTTP-version, exactly one SP each (RFC 9112 §3).
  size_t sp1 = line.find(' ');
  if (sp1 == 0 || sp1 == std::string_view::npos) return false;
  for (size_t i = 0; i < sp1; ++i) {
    if (!IsTokenChar(static_cast<unsigned char>(line[i]))) return false;
  }
  size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return false;
  for (size_t i = sp1 + 1; i < sp2; ++i) {
    auto c = static_cast<unsigned char>(line[i]);
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  if (!ParseVersion(line.substr(sp2 + 1), &version_major_, &version_minor_)) return false;
  first_ = Span{base, static_cast<uint32_t>(sp1)};
  second_ = Span{static_cast<uint32_t>(base + sp1 + 1), static_cast<uint32_t>(sp2 - sp1 - 1)};
  return true;
}

bool HeadParser::ParseStatusLine(std::string_view line, uint32_t base) {
  // HTTP-version SP 3DIGIT SP [reason]; a missing final SP is tolerated.
  if (line.size() < 12 || line[8] != ' ') return false;
  if (!ParseVersion(line.substr(0, 8), &version_major_, &version_minor_)) return false;
  int code = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return false;
    code = code * 10 + (line[i] - '0');
  }
  if (code < 100) return false;
  status_code_ = code;
  if (line.size() > 12) {
    if (line[12] != ' ') return false;
    for (size_t i = 13; i < line.size(); ++i) {
      if (!IsFieldValueChar(static_cast<unsigned char>(line[i]))) return false;
    }
    second_ = Span{base + 13, static_cast<uint32_t>(line.size() - 13)};
  } else {
    second_ = Span{base + 12, 0};
  }
  return true;
}

ParseError HeadParser::ParseField(std::string_view line, uint32_t base) {
  if (line[0] == ' ' || line[0] == '\t') return ParseError::kObsFold;
  size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return ParseError::kBadFieldName;
  for (size_t i = 0; i < colon; ++i) {
    auto c = static_cast<unsigned char>(line[i]);
    if (!IsTokenChar(c)) {
      // SP and HTAB are not tchars, so testing them only here gives the same verdict.
      return c == ' ' || c == '\t' ? ParseError::kSpaceBeforeColon : ParseError::kBadFieldName;
    }
  }
  size_t start = colon + 1;
  size_t stop = line.size();
  while (start < stop && (line[start] == ' ' || line[start] == '\t')) ++start;
  while (stop > start && (line[stop - 1] == ' ' || line[stop - 1] == '\t')) --stop;
  for (size_t i = start; i < stop; ++i) {
    if (!IsFieldValueChar(static_cast<unsigned char>(line[i]))) return ParseError::kBadFieldValue;
  }
  // One allocation for a typical head instead of one per doubling; the parser is short-lived.
  if (fields_.empty()) fields_.reserve(16);
  fields_.push_back(
      HeaderField{Span{base, static_cast<uint32_t>(colon)},
                  Span{static_cast<uint32_t>(base + start), static_cast<uint32_t>(stop - start)}});
  return ParseError::kNone;
}

namespace detail {

bool EqualsIgnoreCaseSameSize(const char* x, const char* y, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (kLower[static_cast<unsigned char>(x[i])] != kLower[static_cast<unsigned char>(y[i])]) {
      return false;
    }
  }
  return true;
}

}  // namespace detail

bool ListContainsToken(std::string_view list, std::string_view token) {
  return ForEachListItem(list,
                         [token](std::string_view item) { return EqualsIgnoreCase(item, token); });
}

std::string_view HeadView::Field(std::string_view name, bool* found) const {
  for (const auto& field : parser_.fields()) {
    if (EqualsIgnoreCase(field.name.In(buffer_), name)) {
      if (found != nullptr) *found = true;
      return field.value.In(buffer_);
    }
  }
  if (found != nullptr) *found = false;
  return {};
}

size_t HeadView::FieldCount(std::string_view name) const {
  size_t count = 0;
  for (const auto& field : parser_.fields()) {
    if (EqualsIgnoreCase(field.name.In(buffer_), name)) ++count;
  }
  return count;
}

bool HeadView::FieldHasToken(std::string_view name, std::string_view token) const {
  for (const auto& field : parser_.fields()) {
    if (EqualsIgnoreCase(field.name.In(buffer_), name) &&
        ListContainsToken(field.value.In(buffer_), token)) {
      return true;
    }
  }
  return false;
}

}  // namespace wsgate::http
