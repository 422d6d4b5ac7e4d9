// The effective configuration as YAML, every default filled in (`wsgate --print-config`).
//
// The output passes LoadConfigString() and loads back to an equal ProxyConfig (source_path
// aside), so it can be kept as a fully explicit config file.
#pragma once

#include <string>

#include "config/config.h"

namespace wsgate::config {

std::string PrintConfig(const ProxyConfig& config);

}  // namespace wsgate::config
