#!/usr/bin/env bash
# Checks an installed wsgate: the files the package ships, the admin token postinst made, that
# the installed binary accepts the installed config and its admin API refuses requests without
# the token, and the systemd unit (systemd-analyze verify, any complaint fails).
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

work=$(mktemp -d)
pid=""
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The admin token: made by postinst (so only in an installed package), root-only, non-empty.
# The config reads it through systemd's credentials directory, which exists only while the
# service runs; the checks below put a copy of the token (or, in a staging tree or when the
# token is not readable by this user, a stand-in) where the config's token_file points.
credential=/run/credentials/wsgate.service/admin-token
grep -q "token_file: $credential\$" "$root/etc/wsgate/wsgate.yaml" ||
  fail "/etc/wsgate/wsgate.yaml does not read the admin token from $credential"
token_file=/etc/wsgate/admin.token
if [ -z "$root" ]; then
  [ -f "$token_file" ] || fail "missing $token_file"
  [ "$(stat -c '%a %U %G' "$token_file")" = "600 root root" ] ||
    fail "$token_file is $(stat -c '%a %U %G' "$token_file"), not 600 root root"
  [ -s "$token_file" ] || fail "$token_file is empty"
  ok "$token_file (0600 root, non-empty)"
fi
if [ -z "$root" ] && [ -r "$token_file" ]; then
  cp "$token_file" "$work/admin-token"
else
  head -c 32 /dev/urandom | base64 > "$work/admin-token"
fi
token=$(cat "$work/admin-token")
sed "s|$credential|$work/admin-token|" "$root/etc/wsgate/wsgate.yaml" > "$work/wsgate.yaml"
"$wsgate" --check -c "$work/wsgate.yaml" >/dev/null || fail "config does not pass --check"
ok "wsgate --check -c /etc/wsgate/wsgate.yaml"

# The installed binary with the installed config (listener and admin moved to free ports):
# the admin API refuses requests without the token, and requests from a web page.
sed -E 's/^(  |    )address: .*/\1address: 127.0.0.1:0/' "$work/wsgate.yaml" > "$work/run.yaml"
"$wsgate" -c "$work/run.yaml" --ready-file "$work/ready" 2> "$work/stderr" &
pid=$!
for _ in $(seq 100); do
  grep -qs '^_admin ' "$work/ready" && break
  kill -0 "$pid" 2>/dev/null || fail "wsgate exited: $(cat "$work/stderr")"
  sleep 0.1
done
admin_port=$(sed -n 's/^_admin .*:\([0-9]*\)$/\1/p' "$work/ready")
[ -n "$admin_port" ] || fail "no admin listener after 10s: $(cat "$work/stderr")"
# Status code of GET PATH on the admin listener, with extra header lines.
admin_status() {
  local path=$1 status
  shift
  exec 3<>"/dev/tcp/127.0.0.1/$admin_port" || return 1
  {
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n' "$path" "$admin_port"
    for header in "$@"; do printf '%s\r\n' "$header"; done
    printf '\r\n'
  } >&3
  status=$(head -n 1 <&3 | cut -d' ' -f2)
  exec 3<&-
  echo "$status"
}
[ "$(admin_status /healthz)" = 200 ] || fail "admin /healthz"
[ "$(admin_status /admin/backends)" = 401 ] || fail "admin API answers without the token"
[ "$(admin_status /admin/backends "Authorization: Bearer wrong")" = 401 ] ||
  fail "admin API answers with a wrong token"
[ "$(admin_status /admin/backends "Authorization: Bearer $token")" = 200 ] ||
  fail "admin API refuses the token from $token_file"
[ "$(admin_status /admin/backends "Authorization: Bearer $token" "Origin: https://evil.example")" = 403 ] ||
  fail "admin API answers a cross-origin request"
kill "$pid"
wait "$pid" || fail "wsgate did not exit 0 on SIGTERM: $(cat "$work/stderr")"
pid=""
ok "admin API: 401 without the token, 200 with it, 403 cross-origin"

if command -v systemd-analyze >/dev/null; then
  unit_dir="$work/unit"
  mkdir "$unit_dir"
  # In a staging tree the unit's absolute paths point into ROOT.
  sed -e "s|/usr/bin/wsgate|$wsgate|g" -e "s|/etc/wsgate/|$root/etc/wsgate/|g" \
    "$root/lib/systemd/system/wsgate.service" > "$unit_dir/wsgate.service"
  complaints=$(systemd-analyze verify "$unit_dir/wsgate.service" 2>&1) || fail "$complaints"
  [ -z "$complaints" ] || fail "systemd-analyze verify: $complaints"
  ok "systemd-analyze verify wsgate.service"
fi
grep -q "^LoadCredential=admin-token:/etc/wsgate/admin.token$" \
  "$root/lib/systemd/system/wsgate.service" || fail "the unit does not load the admin token"
ok "wsgate.service loads the admin token as a credential"

if [ -z "$root" ]; then
  dpkg-query -W -f='${Status}' wsgate | grep -q "install ok installed" || fail "package state"
  dpkg-query -W -f='${Conffiles}' wsgate | grep -q '/etc/wsgate/wsgate.yaml' ||
    fail "/etc/wsgate/wsgate.yaml is not a conffile"
  dpkg -V wsgate || fail "dpkg -V: installed files differ from the package"
  ok "dpkg: installed, conffile, files verified"
fi
