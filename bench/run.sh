#!/usr/bin/env bash
# Superseded by compare.sh (wsgate, HAProxy, nginx, Caddy and direct; see README.md). Kept so
# `bench/run.sh build` still works: it runs compare.sh with the same arguments and environment.
exec "$(dirname "${BASH_SOURCE[0]}")/compare.sh" "$@"
