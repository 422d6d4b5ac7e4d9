// JSON string escaping for the admin API and the JSON log lines.
#pragma once

#include <string>

namespace wsgate {

// Escape |text| as a JSON string literal, quotes included; bytes that are not well-formed UTF-8
// become U+FFFD, so the result is always valid JSON.
std::string JsonString(const std::string& text);

}  // namespace wsgate
