// JSON string escaping for the admin API and the JSON access log.
#pragma once

#include <string>

namespace wsgate {

// Escape |text| as a JSON string literal, quotes included.
std::string JsonString(const std::string& text);

}  // namespace wsgate
