#!/usr/bin/env bash
# Layering rules: config/ and metrics/ are leaves; the pure stages know nothing of libevent.
set -u
cd "${1:-.}"
status=0
if grep -rln '#include "proxy/' config metrics 2>/dev/null; then
  echo "config/ or metrics/ includes proxy/ (they must stay leaves)"; status=1
fi
if grep -rln '#include "metrics/' config 2>/dev/null; then
  echo "config/ includes metrics/"; status=1
fi
if grep -ln 'event2/' proxy/http/* proxy/ws/* proxy/router.* proxy/balancer.* 2>/dev/null; then
  echo "a pure stage includes libevent"; status=1
fi
[ "$status" -eq 0 ] && echo "layering ok"
exit "$status"
