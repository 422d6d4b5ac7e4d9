// Load and validate a wsgate YAML configuration file.
//
// Every failure becomes a ConfigError with file:line:column and the key path; yaml-cpp exceptions
// never escape this module. All errors are collected, not just the first.
#pragma once

#include <string>

#include "config/config.h"
#include "config/config_error.h"
#include "config/result.h"

namespace wsgate::config {

// The config, or every error found (never an empty list).
using LoadResult = Result<ProxyConfig, ConfigErrors>;

// Read |path| and return the validated config, or every error found. What the file alone cannot
// tell (backend names, TLS files) is checked by config/validate.h.
[[nodiscard]] LoadResult LoadConfigFile(const std::string& path);

// Same, from YAML text; |file_name| is used in error messages only.
[[nodiscard]] LoadResult LoadConfigString(const std::string& yaml_text,
                                          const std::string& file_name);

}  // namespace wsgate::config
