// Line-oriented logging to stderr: "2026-12-01T07:40:00.123Z info message key=value ...", or
// with log.format json one JSON object per line: {"time":"...","level":"info","msg":"..."}.
// One line per event; safe to call from any thread (each line is one write()).
#pragma once

#include <string>
#include <string_view>

namespace wsgate::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

enum class Format { kText = 0, kJson = 1 };

void SetLevel(Level level);
void SetFormat(Format format);
bool JsonFormat();
bool ParseLevel(std::string_view text, Level* out);
bool Enabled(Level level);
void Write(Level level, std::string_view message);
// |line| (no newline) as it is, for records their owner formats whole (JSON access lines).
void WriteLine(std::string_view line);

// "2026-12-01T07:40:00.123Z", UTC, millisecond precision: the time of every line.
std::string Timestamp();

// |text| in double quotes for a key=value line: quotes and backslashes escaped, control
// characters replaced by spaces, so a peer-supplied value can never break the line apart.
std::string Quoted(std::string_view text);

}  // namespace wsgate::log

#define WSGATE_LOG(level, expr)                                  \
  do {                                                           \
    if (::wsgate::log::Enabled(::wsgate::log::Level::level)) {   \
      ::wsgate::log::Write(::wsgate::log::Level::level, (expr)); \
    }                                                            \
  } while (0)
#define LOG_DEBUG(expr) WSGATE_LOG(kDebug, expr)
#define LOG_INFO(expr) WSGATE_LOG(kInfo, expr)
#define LOG_WARN(expr) WSGATE_LOG(kWarn, expr)
#define LOG_ERROR(expr) WSGATE_LOG(kError, expr)
