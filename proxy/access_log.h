// The access log: one line per finished client connection (and, with log.flush_interval, interim
// lines for long-lived ones), as key=value text or JSON, to stderr, a file, or nowhere.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "config/config.h"

namespace wsgate {

// Who ended a connection: decided once, where the end was caused, and named only for output.
enum class ClosedBy {
  kUndecided,  // still open (interim lines)
  kClient,
  kBackend,
  kProxy,    // a limit, a protocol violation, a drain, or the proxy's own failure
  kApi,      // DELETE through the connections API
  kTimeout,  // the close handshake did not complete within timeouts.close
};

// The name in the access log and the on_disconnect hook ("client", ...); "" while undecided.
const char* ClosedByName(ClosedBy closed_by);

struct AccessRecord {
  bool interim = false;  // a progress line for a connection still open
  std::string connection_id;
  std::string client;
  std::string listener;
  std::string route;
  std::string pool;
  std::string backend;
  std::string method;  // plain HTTP requests only; empty for WebSocket connections
  std::string path;
  std::string subprotocol;
  int status = 0;
  double duration_seconds = 0;
  uint64_t bytes_in = 0;   // client → backend
  uint64_t bytes_out = 0;  // backend → client, pushed frames included
  uint64_t messages_in = 0;
  uint64_t messages_out = 0;     // backend messages and pushes: everything the client was sent
  uint64_t messages_pushed = 0;  // of messages_out, inserted by the connections API
  uint32_t moves = 0;            // times the session moved to another backend (pools[].migrate)
  uint16_t close_code = 0;
  ClosedBy closed_by = ClosedBy::kUndecided;
  std::string reason;
};

class AccessLog {
 public:
  AccessLog() = default;
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // Apply |config| (format and destination); reopens a file destination, so a SIGHUP after log
  // rotation starts a new file. Returns false with |error| set if the file cannot be opened (the
  // previous destination is kept).
  bool Configure(const config::LogConfig& config, std::string* error);

  void Write(const AccessRecord& record);

  static std::string FormatText(const AccessRecord& record);
  static std::string FormatJson(const AccessRecord& record);

 private:
  // Configure (main thread) and Write (any worker thread) may run at once; one lock per line.
  std::mutex mutex_;
  config::LogConfig::Format format_ = config::LogConfig::Format::kText;
  bool off_ = false;
  int fd_ = -1;  // -1: stderr through the logger
};

}  // namespace wsgate
