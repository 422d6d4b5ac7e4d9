#include "proxy/access_log.h"

#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "proxy/core/json.h"
#include "proxy/core/log.h"

namespace wsgate {
namespace {

std::string OrDash(const std::string& text) { return text.empty() ? "-" : text; }

// Absent values are "-" in text lines and null in JSON ones.
std::string JsonOrNull(const std::string& text) { return text.empty() ? "null" : JsonString(text); }

std::string Seconds(double seconds) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.3f", seconds);
  return text;
}

}  // namespace

AccessLog::~AccessLog() {
  if (fd_ >= 0) close(fd_);
}

bool AccessLog::Configure(const config::LogConfig& config, std::string* error) {
  int fd = -1;
  bool off = config.access == "off";
  if (!off && config.access != "stderr") {
    fd = open(config.access.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
      *error = "cannot open access log " + config.access + ": " + std::strerror(errno);
      return false;
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
  off_ = off;
  format_ = config.format;
  // Every other log line follows the same format, so stderr is all text or all JSON.
  log::SetFormat(config.format == config::LogConfig::Format::kJson ? log::Format::kJson
                                                                   : log::Format::kText);
  return true;
}

const char* ClosedByName(ClosedBy closed_by) {
  switch (closed_by) {
    case ClosedBy::kUndecided:
      return "";
    case ClosedBy::kClient:
      return "client";
    case ClosedBy::kBackend:
      return "backend";
    case ClosedBy::kProxy:
      return "proxy";
    case ClosedBy::kApi:
      return "api";
    case ClosedBy::kTimeout:
      return "timeout";
  }
  return "";
}

std::string AccessLog::FormatText(const AccessRecord& r) {
  std::string line = r.interim ? "access-interim" : "access";
  line += " id=" + r.connection_id + " client=" + r.client + " listener=" + r.listener +
          " route=" + OrDash(r.route) + " pool=" + OrDash(r.pool) +
          " backend=" + OrDash(r.backend) + (r.method.empty() ? "" : " method=" + r.method) +
          " path=" + log::Quoted(r.path) + " subprotocol=" + OrDash(r.subprotocol) +
          " status=" + std::to_string(r.status) + " duration=" + Seconds(r.duration_seconds) + "s" +
          " bytes_in=" + std::to_string(r.bytes_in) + " bytes_out=" + std::to_string(r.bytes_out) +
          " msgs_in=" + std::to_string(r.messages_in) +
          " msgs_out=" + std::to_string(r.messages_out) +
          " pushed=" + std::to_string(r.messages_pushed) + " moves=" + std::to_string(r.moves) +
          " close_code=" + std::to_string(r.close_code) +
          " closed_by=" + OrDash(ClosedByName(r.closed_by)) + " reason=" + log::Quoted(r.reason);
  return line;
}

std::string AccessLog::FormatJson(const AccessRecord& r) {
  // The text line's field names; numbers as JSON numbers; time, level and msg like every other
  // JSON log line.
  std::string line = "{\"time\":\"" + log::Timestamp() + "\",\"level\":\"info\",\"msg\":\"" +
                     (r.interim ? "access-interim" : "access") + "\"";
  line += ",\"id\":" + JsonString(r.connection_id);
  line += ",\"client\":" + JsonString(r.client);
  line += ",\"listener\":" + JsonString(r.listener);
  // The route's index in the configuration; null before one matched.
  const bool numeric_route =
      !r.route.empty() && r.route.find_first_not_of("0123456789") == std::string::npos;
  line += ",\"route\":" + (numeric_route ? r.route : JsonOrNull(r.route));
  line += ",\"pool\":" + JsonOrNull(r.pool);
  line += ",\"backend\":" + JsonOrNull(r.backend);
  if (!r.method.empty()) line += ",\"method\":" + JsonString(r.method);
  line += ",\"path\":" + JsonString(r.path);
  line += ",\"subprotocol\":" + JsonOrNull(r.subprotocol);
  line += ",\"status\":" + std::to_string(r.status);
  line += ",\"duration\":" + Seconds(r.duration_seconds);
  line += ",\"bytes_in\":" + std::to_string(r.bytes_in);
  line += ",\"bytes_out\":" + std::to_string(r.bytes_out);
  line += ",\"msgs_in\":" + std::to_string(r.messages_in);
  line += ",\"msgs_out\":" + std::to_string(r.messages_out);
  line += ",\"pushed\":" + std::to_string(r.messages_pushed);
  line += ",\"moves\":" + std::to_string(r.moves);
  line += ",\"close_code\":" + std::to_string(r.close_code);
  line += ",\"closed_by\":" + JsonOrNull(ClosedByName(r.closed_by));
  line += ",\"reason\":" + JsonString(r.reason) + "}";
  return line;
}

void AccessLog::Write(const AccessRecord& record) {
  bool off = false;
  bool json = false;
  bool to_file = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    off = off_;
    json = format_ == config::LogConfig::Format::kJson;
    to_file = fd_ >= 0;
  }
  if (off) return;
  if (!to_file) {
    // On stderr, lines look like every other log line: the logger adds time and level to text;
    // a JSON line carries them itself.
    if (!log::Enabled(log::Level::kInfo)) return;
    if (json) {
      log::WriteLine(FormatJson(record));
    } else {
      log::Write(log::Level::kInfo, FormatText(record));
    }
    return;
  }
  std::string line = json ? FormatJson(record) : log::Timestamp() + " " + FormatText(record);
  line.push_back('\n');
  // The descriptor is used under the lock so a reopen never closes it mid-write.
  std::lock_guard<std::mutex> lock(mutex_);
  if (fd_ < 0) return;
  // One write per line (O_APPEND keeps lines whole); a full disk loses lines, never blocks.
  ssize_t written = ::write(fd_, line.data(), line.size());
  (void)written;
}

}  // namespace wsgate
