// The effective configuration as YAML, every default filled in (`wsgate --print-config`).
//
// The output passes LoadConfigString() and loads back to an equal ProxyConfig (source_path
// aside), so it can be kept as a fully explicit config file.
#pragma once

#include <string>

#include "config/config.h"

namespace wsgate::config {

// Secrets (admin.token) print as "<redacted>" unless |show_secrets|: a printout is meant to be
// pasted into tickets and chats. An empty secret prints as "" so the reader sees it is unset.
struct PrintOptions {
  bool show_secrets = false;
};

// What a redacted secret prints as.
inline constexpr const char* kRedacted = "<redacted>";

std::string PrintConfig(const ProxyConfig& config, const PrintOptions& options = {});

// `wsgate --print-defaults`: the defaults of every setting, around the one listener, route and
// pool a valid file needs (127.0.0.1:8080 to a pool "app" of 127.0.0.1:9001). The text loads
// with --check; sections that switch a feature on by being present follow as comments.
ProxyConfig DefaultConfig();
std::string PrintDefaults();

}  // namespace wsgate::config
