#!/usr/bin/env bash
# Checks an installed wsgate: the files the package ships, that the installed binary accepts the
# installed config, and the systemd unit (systemd-analyze verify, any complaint fails).
# Usage: packaging/check-installed.sh [ROOT]
#   ROOT  / (default) after `apt-get install ./wsgate_*.deb`, also checking what dpkg recorded;
#         or a staging tree from scripts/build-release.sh / `cmake --install` with DESTDIR.
# Prints one "installed: ... ok" line per passed check; exits 1 at the first failure.
set -euo pipefail
root=$(realpath "${1:-/}")
root="${root%/}"  # "" for /
ok() { echo "installed: $* ok"; }
fail() { echo "installed: $*" >&2; exit 1; }

files=(/usr/bin/wsgate /etc/wsgate/wsgate.yaml /lib/systemd/system/wsgate.service
       /usr/share/doc/wsgate/README.md /usr/share/doc/wsgate/configuration.md
       /usr/share/doc/wsgate/operations.md /usr/share/doc/wsgate/metrics.md
       /usr/share/doc/wsgate/coming-from.md /usr/share/doc/wsgate/connections-api.md)
for f in "${files[@]}"; do [ -s "$root$f" ] || fail "missing $root$f"; done
ok "${#files[@]} files"

# Every page a shipped page links to ships too (README's docs/X.md links land beside it).
doc_dir="$root/usr/share/doc/wsgate"
for page in "$doc_dir"/*.md; do
  for target in $(grep -o '([A-Za-z0-9_./-]*\.md' "$page" | tr -d '(' | sort -u); do
    [ -s "$doc_dir/$(basename "$target")" ] || fail "$page links to $target, which is not installed"
  done
done
ok "links between the installed doc pages"

wsgate="$root/usr/bin/wsgate"
"$wsgate" --version | grep -q '^wsgate [0-9]' || fail "wsgate --version"
"$wsgate" --check -c "$root/etc/wsgate/wsgate.yaml" >/dev/null || fail "config does not pass --check"
ok "wsgate --check -c /etc/wsgate/wsgate.yaml"

if command -v systemd-analyze >/dev/null; then
  unit_dir=$(mktemp -d)
  trap 'rm -rf "$unit_dir"' EXIT
  # In a staging tree the unit's absolute paths point into ROOT.
  sed -e "s|/usr/bin/wsgate|$wsgate|g" -e "s|/etc/wsgate/|$root/etc/wsgate/|g" \
    "$root/lib/systemd/system/wsgate.service" > "$unit_dir/wsgate.service"
  complaints=$(systemd-analyze verify "$unit_dir/wsgate.service" 2>&1) || fail "$complaints"
  [ -z "$complaints" ] || fail "systemd-analyze verify: $complaints"
  ok "systemd-analyze verify wsgate.service"
fi

if [ -z "$root" ]; then
  dpkg-query -W -f='${Status}' wsgate | grep -q "install ok installed" || fail "package state"
  dpkg-query -W -f='${Conffiles}' wsgate | grep -q '/etc/wsgate/wsgate.yaml' ||
    fail "/etc/wsgate/wsgate.yaml is not a conffile"
  dpkg -V wsgate || fail "dpkg -V: installed files differ from the package"
  ok "dpkg: installed, conffile, files verified"
fi
