#!/usr/bin/env bash
# Install everything wsgate needs to build, run and test, from Debian 12 packages.
# Usage: scripts/install-deps.sh [--runtime-only]
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=(
  build-essential cmake pkg-config
  libevent-dev libssl-dev libyaml-cpp-dev prometheus-cpp-dev zlib1g-dev libgtest-dev
  libhiredis-dev nlohmann-json3-dev
  python3 python3-websockets python3-yaml
)
if [ "${1:-}" != "--runtime-only" ]; then
  # Tests: pytest, curl and openssl as outside clients; clang for the sanitizer build;
  # prometheus (promtool and the server) for the metrics tests; chromium for the browser demo
  # test; haproxy, nginx and caddy to check the configurations in docs/coming-from.md;
  # dnsmasq-base (the binary, no system service) as the DNS server of the discovery tests;
  # redis-server (started by the fleet tests on a loopback port; its service stays unused);
  # dpkg-dev (dpkg-shlibdeps) and file so CPack computes the .deb's Depends; systemd for
  # systemd-analyze verify of the unit; clang-format-14 and clang-tidy-14 for scripts/lint.sh.
  packages+=(python3-pytest curl openssl clang-14 libclang-rt-14-dev prometheus chromium
             clang-format-14 clang-tidy-14 haproxy nginx caddy dnsmasq-base redis-server
             dpkg-dev file systemd)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js runs the interop tests with the npm `ws` package; a preinstalled node is fine.
if [ "${1:-}" != "--runtime-only" ] && ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

if [ "${1:-}" != "--runtime-only" ]; then
  # The npm `ws` package for the interop tests and playwright-core (which drives Debian's
  # chromium) for the browser test, pinned by their package.json files.
  for dir in tests/integration/node tests/integration/browser; do
    (cd "$(dirname "$0")/../$dir" && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
  done
fi
