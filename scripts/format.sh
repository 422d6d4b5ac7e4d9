#!/usr/bin/env bash
# Format the project's own C++ in place with .clang-format (clang-format-14): every tracked .cc/.h
# under config/ metrics/ proxy/ tests/unit/ fuzz/ bench/, the files scripts/lint.sh checks.
# Usage: scripts/format.sh
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files -z -- config metrics proxy tests/unit fuzz bench | grep -zE '\.(cc|h)$' |
  xargs -0 "${CLANG_FORMAT:-clang-format-14}" -i
