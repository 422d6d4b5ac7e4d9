// A configuration error that points at the exact place in the file.
#pragma once

#include <string>
#include <vector>

namespace wsgate::config {

struct ConfigError {
  std::string file;
  int line = 0;          // 1-based; 0 when the error has no position (e.g. unreadable file)
  int column = 0;        // 1-based
  std::string key_path;  // e.g. "pools[0].backends[1].address"; empty for syntax errors
  std::string message;

  // "file:line:column: key_path: message"
  std::string Format() const;
};

using ConfigErrors = std::vector<ConfigError>;

}  // namespace wsgate::config
