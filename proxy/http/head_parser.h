// Strict, incremental HTTP/1.1 message-head parser (request or response head).
//
// Pure: it sees only bytes, never a socket, so it is unit-tested and fuzzed directly. It keeps
// offsets, not pointers, so the caller's buffer may move between calls (evbuffer_pullup). The
// caller passes everything buffered so far; bytes already seen must not change. Each byte is
// scanned a bounded number of times, so a slow sender costs linear work.
//
// Refused (RFC 9112): bare CR, bare LF, obs-fold, whitespace between a field name and its colon,
// control characters in values, invalid tokens, a start line over the limit, a head over the limit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace wsgate::http {

enum class HeadKind { kRequest, kResponse };

enum class ParseStatus { kNeedMore, kComplete, kError };

enum class ParseError {
  kNone,
  kBadStartLine,
  kStartLineTooLong,
  kHeadTooLarge,  // also: too many header fields
  kBareCR,
  kBareLF,
  kObsFold,
  kSpaceBeforeColon,
  kBadFieldName,
  kBadFieldValue,
};

const char* ParseErrorName(ParseError error);

// A [offset, offset+length) slice of the buffer handed to Parse().
struct Span {
  uint32_t offset = 0;
  uint32_t length = 0;
  std::string_view In(std::string_view buffer) const { return buffer.substr(offset, length); }
};

struct HeaderField {
  Span name;
  Span value;  // without leading/trailing whitespace
};

struct HeadLimits {
  size_t max_head_bytes = 16 * 1024;
  size_t max_start_line_bytes = 8 * 1024;
  size_t max_fields = 128;
};

class HeadParser {
 public:
  HeadParser(HeadKind kind, HeadLimits limits) : kind_(kind), limits_(limits) {}

  // Scan what is new in |buffered| (which only grows between calls).
  ParseStatus Parse(std::string_view buffered);

  ParseStatus status() const { return status_; }
  ParseError error() const { return error_; }
  // Bytes of the head including the terminating empty line; valid once complete.
  size_t head_length() const { return pos_; }

  // Request line.
  Span method() const { return first_; }
  Span target() const { return second_; }
  // Response status line.
  int status_code() const { return status_code_; }
  Span reason() const { return second_; }
  // Both.
  int version_major() const { return version_major_; }
  int version_minor() const { return version_minor_; }
  const std::vector<HeaderField>& fields() const { return fields_; }

 private:
  ParseStatus Fail(ParseError error);
  bool ParseRequestLine(std::string_view line, uint32_t base);
  bool ParseStatusLine(std::string_view line, uint32_t base);
  ParseError ParseField(std::string_view line, uint32_t base);

  HeadKind kind_;
  HeadLimits limits_;
  ParseStatus status_ = ParseStatus::kNeedMore;
  ParseError error_ = ParseError::kNone;
  size_t pos_ = 0;   // start of the next line not yet parsed
  size_t scan_ = 0;  // how far the current line has been searched for its end
  bool start_line_done_ = false;
  Span first_;
  Span second_;
  int status_code_ = 0;
  int version_major_ = 0;
  int version_minor_ = 0;
  std::vector<HeaderField> fields_;
};

// RFC 9110 §5.6.2 tchar, and a byte allowed inside a field value (HTAB, SP, VCHAR, obs-text).
bool IsTokenChar(unsigned char c);
bool IsFieldValueChar(unsigned char c);

namespace detail {
bool EqualsIgnoreCaseSameSize(const char* a, const char* b, size_t n);
}  // namespace detail

// Case-insensitive ASCII comparison. Inline, so the usual miss, a different length, costs no call.
inline bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && detail::EqualsIgnoreCaseSameSize(a.data(), b.data(), a.size());
}

// |s| without leading and trailing spaces and tabs (RFC 9110 OWS).
inline std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The name of a list item with parameters ("permessage-deflate; x=1", "chunked;ext"): what comes
// before its first ';', trimmed.
inline std::string_view ListItemName(std::string_view item) {
  return TrimOws(item.substr(0, item.find(';')));
}

// True if the comma-separated |list| (RFC 9110 #rule) contains |token|, case-insensitively.
bool ListContainsToken(std::string_view list, std::string_view token);

// Call |fn| with each item of the comma-separated |list| (RFC 9110 #rule), trimmed of spaces
// and tabs (empty items included), until it returns true; returns whether one did.
template <typename Fn>
bool ForEachListItem(std::string_view list, Fn&& fn) {
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string_view::npos) comma = list.size();
    std::string_view item = TrimOws(list.substr(pos, comma - pos));
    if (fn(item)) return true;
    pos = comma + 1;
  }
  return false;
}

// A parsed head viewed against its buffer: lookups by field name.
class HeadView {
 public:
  HeadView(const HeadParser& parser, std::string_view buffer) : parser_(parser), buffer_(buffer) {}

  std::string_view Get(Span span) const { return span.In(buffer_); }
  // First value of |name|, or empty view with *found=false.
  std::string_view Field(std::string_view name, bool* found = nullptr) const;
  size_t FieldCount(std::string_view name) const;
  // True if any |name| field's comma list contains |token|.
  bool FieldHasToken(std::string_view name, std::string_view token) const;
  const HeadParser& parser() const { return parser_; }
  std::string_view buffer() const { return buffer_; }

 private:
  const HeadParser& parser_;
  std::string_view buffer_;
};

}  // namespace wsgate::http
