// wsgate entry point: command-line flags, config loading, exit codes.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <event2/event.h>

#include "config/flags_config.h"
#include "config/loader.h"
#include "config/printer.h"
#include "config/suggest.h"
#include "proxy/core/event_loop.h"
#include "proxy/core/libevent_memory.h"
#include "proxy/core/log.h"
#include "proxy/discovery.h"
#include "proxy/runtime.h"
#include "proxy/server.h"
#include "proxy/tls/tls_context.h"

namespace {

// The help text is laid out as printed.
// clang-format off
constexpr const char* kUsage =
    "Usage: wsgate -c FILE [--ready-file PATH] [--upgrade-socket PATH] [--log-level LEVEL]\n"
    "       wsgate --listen HOST:PORT --backend HOST:PORT [--backend HOST:PORT ...] [options]\n"
    "       wsgate --check (-c FILE | --listen ... --backend ...)\n"
    "       wsgate --print-config (-c FILE | --listen ... --backend ...)\n"
    "       wsgate --print-defaults\n"
    "       wsgate --version | --help\n"
    "\n"
    "A WebSocket-aware reverse proxy and load balancer.\n"
    "\n"
    "  -c, --config FILE     YAML configuration file\n"
    "      --listen HOST:PORT   without a file: accept clients here (one listener \"public\")\n"
    "      --backend HOST:PORT  without a file: a backend of the one pool \"app\" (least_conn,\n"
    "                        no admin listener); repeat for more backends\n"
    "      --check           validate the configuration and exit: 0 if valid, 1 with errors\n"
    "      --print-config    validate, then print the effective configuration as YAML with\n"
    "                        every default filled in (admin.token as <redacted>), and exit\n"
    "      --print-defaults  print every setting's default as a loadable YAML file, and exit\n"
    "      --ready-file PATH after binding, write one line \"NAME HOST:PORT\" per listener\n"
    "      --upgrade-socket PATH  zero-downtime upgrade: if a wsgate already serves PATH, take "
    "its\n"
    "                        listening sockets over (it then drains and exits); then serve PATH\n"
    "                        for the next upgrade\n"
    "      --log-level LEVEL debug | info | warn | error (default info)\n"
    "      --version         print the version and exit\n"
    "  -h, --help            print this help and exit\n"
    "\n"
    "Signals: SIGTERM/SIGINT drain and stop (a second one stops at once), SIGQUIT stops at\n"
    "once, SIGHUP reloads the configuration without dropping connections.\n";
// clang-format on

// Every flag, for "did you mean" on a misspelt one.
const std::vector<std::string_view> kFlags = {
    "-c",
    "--config",
    "--listen",
    "--backend",
    "--check",
    "--print-config",
    "--print-defaults",
    "--ready-file",
    "--upgrade-socket",
    "--log-level",
    "--version",
    "-h",
    "--help",
};

// Command-line mistakes exit 2 with a short pointer to --help (the full text buries the error).
[[noreturn]] void UsageError(const std::string& message) {
  std::fprintf(stderr, "wsgate: %s\nRun \"wsgate --help\" for usage.\n", message.c_str());
  std::exit(2);
}

void LibeventLog(int severity, const char* message) {
  wsgate::log::Level level = wsgate::log::Level::kError;
  if (severity == EVENT_LOG_DEBUG) {
    level = wsgate::log::Level::kDebug;
  } else if (severity == EVENT_LOG_MSG) {
    level = wsgate::log::Level::kInfo;
  } else if (severity == EVENT_LOG_WARN) {
    level = wsgate::log::Level::kWarn;
  }
  if (wsgate::log::Enabled(level)) wsgate::log::Write(level, std::string("libevent: ") + message);
}

}  // namespace

// An exception escaping main is a bug: std::terminate reports it and aborts.
int main(int argc, char** argv) {  // NOLINT(bugprone-exception-escape)
  std::string config_path;
  std::string listen;
  std::vector<std::string> backends;
  std::string ready_file;
  std::string upgrade_socket;
  bool check_only = false;
  bool print_config = false;
  bool print_defaults = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) UsageError(std::string(flag) + " needs a value");
      return argv[++i];
    };
    if (arg == "-c" || arg == "--config") {
      config_path = value("-c");
    } else if (arg == "--listen") {
      if (!listen.empty()) UsageError("--listen given twice (one listener from the flags)");
      listen = value("--listen");
      if (listen.empty()) UsageError("--listen needs a value");
    } else if (arg == "--backend") {
      backends.emplace_back(value("--backend"));
    } else if (arg == "--check") {
      check_only = true;
    } else if (arg == "--print-config") {
      print_config = true;
    } else if (arg == "--print-defaults") {
      print_defaults = true;
    } else if (arg == "--ready-file") {
      ready_file = value("--ready-file");
    } else if (arg == "--upgrade-socket") {
      upgrade_socket = value("--upgrade-socket");
    } else if (arg == "--log-level") {
      wsgate::log::Level level{};
      const char* text = value("--log-level");
      if (!wsgate::log::ParseLevel(text, &level)) {
        UsageError(std::string("unknown log level \"") + text + "\"" +
                   wsgate::config::DidYouMean(text, {"debug", "info", "warn", "error"}) +
                   " (expected debug, info, warn or error)");
      }
      wsgate::log::SetLevel(level);
    } else if (arg == "--version") {
      std::printf("wsgate %s\n", WSGATE_VERSION);
      return 0;
    } else if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      // "--check=x" is not a form we take, but its flag part is what to compare.
      const std::string flag = arg.substr(0, arg.find('='));
      UsageError("unknown argument \"" + arg + "\"" + wsgate::config::DidYouMean(flag, kFlags));
    }
  }
  if (print_defaults) {
    std::fputs(wsgate::config::PrintDefaults().c_str(), stdout);
    return 0;
  }
  const bool from_flags = !listen.empty() || !backends.empty();
  if (from_flags && !config_path.empty()) {
    UsageError("-c cannot be combined with --listen/--backend: give either a file or the flags");
  }
  if (from_flags && listen.empty()) UsageError("--backend needs --listen HOST:PORT");
  if (from_flags && backends.empty()) UsageError("--listen needs at least one --backend HOST:PORT");
  if (!from_flags && config_path.empty()) {
    UsageError("a configuration is required: -c FILE, or --listen and --backend");
  }

  // Where errors point the reader: the file, or the flags.
  const std::string source = from_flags ? "the command line" : config_path;
  auto loaded = from_flags ? wsgate::config::LoadFlagsConfig(listen, backends)
                           : wsgate::config::LoadConfigFile(config_path);
  if (!loaded) {
    for (const auto& error : loaded.error()) {
      std::fprintf(stderr, "%s%s\n", from_flags ? "wsgate: " : "", error.Format().c_str());
    }
    std::fprintf(stderr, "wsgate: %zu error(s) in %s\n", loaded.error().size(), source.c_str());
    return 1;
  }
  auto& config = loaded.value();
  const bool serving = !print_config && !check_only;
  // From here on a serving process logs in the configured format (--check and --print-config
  // answer a person at a terminal: text).
  if (serving && config.log.format == wsgate::config::LogConfig::Format::kJson) {
    wsgate::log::SetFormat(wsgate::log::Format::kJson);
  }
  // The validation stage, as on reload: backend names resolve, certificates and keys load. An
  // error names the file and the key. --print-config resolves nothing, so a file meant for
  // another network (a cluster's service names) still prints. What it resolved builds the pools:
  // each backend name is resolved once.
  wsgate::config::ResolvedBackends resolved;
  auto errors = print_config ? wsgate::tls::CheckFiles(config)
                             : wsgate::ValidateConfig(config, nullptr, &resolved);
  if (!errors.empty()) {
    if (wsgate::log::JsonFormat()) {
      for (const auto& error : errors) LOG_ERROR(error.Format());
      LOG_ERROR(std::to_string(errors.size()) + " error(s) in " + source);
      return 1;
    }
    for (const auto& error : errors) std::fprintf(stderr, "%s\n", error.Format().c_str());
    std::fprintf(stderr, "wsgate: %zu error(s) in %s\n", errors.size(), source.c_str());
    return 1;
  }
  if (print_config) {
    std::fputs(wsgate::config::PrintConfig(config).c_str(), stdout);
    return 0;
  }
  // Names of discovery pools, resolved with evdns as the running proxy will (a loop of their
  // own; when serving, after the allocator and threads are set up). A failure is an error where
  // the pool requires the name at start, a warning where it does not.
  const bool json_errors = serving && wsgate::log::JsonFormat();
  auto resolve_discovered = [&](wsgate::StartupResolution* out) {
    *out = wsgate::ResolveAtStart(config);
    for (const auto& warning : out->warnings) {
      if (serving) {
        LOG_WARN(warning.Format());
      } else {
        std::fprintf(stderr, "warning: %s\n", warning.Format().c_str());
      }
    }
    if (out->errors.empty()) return true;
    for (const auto& error : out->errors) {
      if (json_errors) {
        LOG_ERROR(error.Format());
      } else {
        std::fprintf(stderr, "%s\n", error.Format().c_str());
      }
    }
    if (json_errors) {
      LOG_ERROR(std::to_string(out->errors.size()) + " error(s) in " + source);
    } else {
      std::fprintf(stderr, "wsgate: %zu error(s) in %s\n", out->errors.size(), source.c_str());
    }
    return false;
  };
  wsgate::StartupResolution discovered;
  if (check_only) {
    if (!resolve_discovered(&discovered)) return 1;
    std::printf("%s: configuration is valid\n", from_flags ? "command line" : config_path.c_str());
    return 0;
  }

  std::signal(SIGPIPE, SIG_IGN);
  // libevent's own warnings go through the logger too, so they follow log.format.
  event_set_log_callback(LibeventLog);
  wsgate::InstallLibeventAllocator();
  // Worker threads post to each other's loops: libevent must be thread-aware before any loop.
  wsgate::EventLoop::EnableThreads();
  if (!resolve_discovered(&discovered)) return 1;
  std::string error;
  std::unique_ptr<wsgate::TakeoverClient> takeover;
  if (!upgrade_socket.empty()) {
    takeover = wsgate::TakeoverClient::Connect(upgrade_socket, &error);
    if (takeover) {
      LOG_INFO("upgrade: received the listening sockets of the running wsgate");
    } else {
      LOG_INFO("upgrade: " + error + "; starting fresh");
    }
  }
  auto created = wsgate::Server::Create(std::move(config), config_path, takeover.get(), resolved,
                                        discovered.addresses);
  if (!created) {
    LOG_ERROR("cannot start: " + created.error());
    return 1;
  }
  std::unique_ptr<wsgate::Server> server = std::move(created).value();
  if (takeover) {
    // Both processes now accept on the same sockets; tell the old one to drain.
    if (!takeover->SendReady(&error)) LOG_WARN("upgrade: " + error);
    takeover.reset();
  }
  if (!upgrade_socket.empty() && !server->ServeUpgradeSocket(upgrade_socket, &error)) {
    LOG_ERROR(error);
    return 1;
  }
  if (!ready_file.empty()) {
    if (!server->WriteReadyFile(ready_file, &error)) {
      LOG_ERROR(error);
      return 1;
    }
    server->set_ready_file(ready_file);  // rewritten after each reload
  }
  LOG_INFO(std::string("wsgate ") + WSGATE_VERSION + " started");
  return server->Run();
}
