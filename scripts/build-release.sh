#!/usr/bin/env bash
# The release build the container image runs and CI runs: configure Release, build, install into
# a staging tree (DESTDIR), and build the Debian package.
# Usage: scripts/build-release.sh [BUILD_DIR] [STAGING_DIR]
#   BUILD_DIR    default build-release; the .deb is written there (wsgate_VERSION_ARCH.deb)
#   STAGING_DIR  default BUILD_DIR/staging: usr/bin/wsgate, etc/wsgate/wsgate.yaml,
#                lib/systemd/system/wsgate.service, usr/share/doc/wsgate/
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${1:-build-release}"
staging_dir="${2:-$build_dir/staging}"
# -O2 as Debian builds its packages: GCC 12 at -O3 reports a false -Wrestrict inside
# std::string (GCC bug 105329), and warnings stay errors here (WSGATE_WERROR defaults to OFF).
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" \
  -DCMAKE_INSTALL_PREFIX=/usr -DBUILD_TESTING=OFF -DWSGATE_BENCH=OFF -DWSGATE_WERROR=ON
cmake --build "$build_dir" -j"${WSGATE_JOBS:-$(nproc)}" --target wsgate
rm -rf "$staging_dir"
DESTDIR="$(realpath -m "$staging_dir")" cmake --install "$build_dir" --strip
(cd "$build_dir" && cpack -G DEB >/dev/null)
# The packaged config reads the admin token from the service's credentials directory, which
# exists only while systemd runs it: check the config with a stand-in token there.
check_dir=$(mktemp -d)
trap 'rm -rf "$check_dir"' EXIT
echo stand-in-token > "$check_dir/admin-token"
sed "s|/run/credentials/wsgate.service/admin-token|$check_dir/admin-token|" \
  "$staging_dir/etc/wsgate/wsgate.yaml" > "$check_dir/wsgate.yaml"
"$staging_dir/usr/bin/wsgate" --check -c "$check_dir/wsgate.yaml"
ls "$build_dir"/wsgate_*.deb
