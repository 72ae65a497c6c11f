#!/usr/bin/env bash
# The Debian packages the tests need, installed when missing: PostgreSQL (the shared stack's
# database, started by the tests as the `postgres` user), docker-compose (validates the stack's
# compose file; no Docker engine is needed) and Chromium (looks at the MLflow UI headless).
# Needs root (or sudo) the first time; a no-op once everything is there.
set -euo pipefail

missing=()
[ -x /usr/lib/postgresql/15/bin/pg_ctl ] || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 \
    || missing+=(postgresql)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v chromium >/dev/null || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null; then
    sudo=(sudo)
else
    echo "error: the tests need the Debian packages ${missing[*]}; install them as root:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 2
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
