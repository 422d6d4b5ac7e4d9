// `wsgate --listen ADDR --backend ADDR...`: a configuration from command-line flags alone.
//
// The flags become a small YAML document (listener "public", route and least_conn pool "app",
// no admin listener) that goes through the ordinary loader, so the values get exactly the
// checks a file gets and --print-config shows the equivalent file.
#pragma once

#include <string>
#include <vector>

#include "config/loader.h"

namespace wsgate::config {

// Errors about a flag's value name the flag ("--backend: invalid address ...") instead of a
// position in the generated document.
[[nodiscard]] LoadResult LoadFlagsConfig(const std::string& listen,
                                         const std::vector<std::string>& backends);

}  // namespace wsgate::config
