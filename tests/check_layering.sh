#!/usr/bin/env bash
# Layering rules: config/ and metrics/ are leaves; the pure stages know nothing of libevent;
# only the server and the workers see a whole Session.
set -u
cd "${1:-.}"
status=0
if grep -rln '#include "proxy/' config metrics 2>/dev/null; then
  echo "config/ or metrics/ includes proxy/ (they must stay leaves)"; status=1
fi
if grep -rln '#include "metrics/' config 2>/dev/null; then
  echo "config/ includes metrics/"; status=1
fi
if grep -ln 'event2/' proxy/http/* proxy/ws/* proxy/router.* proxy/balancer.* \
    proxy/sticky_balancer.* 2>/dev/null; then
  echo "a pure stage includes libevent"; status=1
fi
# session.cc, session_api.cc and session_move.cc are Session itself (session_registry.cc owns
# them); the connections API sees a LiveConnection,
# the HTTP forwarder a SessionContext.
session_includers=$(grep -rl '#include "proxy/session.h"' proxy | sort | grep -vxE \
  'proxy/(server|worker)\.(h|cc)|proxy/session(_api|_registry|_move)?\.cc')
if [ -n "$session_includers" ]; then
  echo "$session_includers"
  echo "only the server and the workers include proxy/session.h"; status=1
fi
# connections/ is reached by the session, never the other way round.
if grep -rln '#include "proxy/\(session\|tunnel\|upgrade_attempt\|worker\|server\)\.h"' \
    proxy/connections/*.h 2>/dev/null; then
  echo "a connections/ header includes the proxy's connection internals"; status=1
fi
[ "$status" -eq 0 ] && echo "layering ok"
exit "$status"
