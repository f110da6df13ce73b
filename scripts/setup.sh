#!/usr/bin/env bash
# Installs everything pgretention needs on a Debian machine: a PostgreSQL server major version for
# which the server, pg_partman and pg_cron packages all exist, and the Python package in .venv.
# Safe to re-run: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

has_major() {  # server binary plus both extensions present for major $1
    local v=$1
    [ -x "/usr/lib/postgresql/$v/bin/postgres" ] &&
        [ -f "/usr/share/postgresql/$v/extension/pg_partman.control" ] &&
        [ -f "/usr/share/postgresql/$v/extension/pg_cron.control" ]
}

pick_installed() {
    local v
    for v in $(ls /usr/lib/postgresql 2>/dev/null | sort -rn); do
        if has_major "$v"; then echo "$v"; return 0; fi
    done
    return 1
}

if [ -n "${PGRETENTION_PG_MAJOR:-}" ] && has_major "$PGRETENTION_PG_MAJOR"; then
    major=$PGRETENTION_PG_MAJOR
elif major=$(pick_installed); then
    :
else
    echo "setup: installing PostgreSQL server, pg_partman and pg_cron from the Debian archive" >&2
    $SUDO apt-get update -qq
    major=""
    # Prefer an installed server major (no second server) when its extensions exist in the archive.
    candidates="${PGRETENTION_PG_MAJOR:-} $(ls /usr/lib/postgresql 2>/dev/null | sort -rn) 18 17 16 15 14 13"
    for v in $candidates; do
        if apt-cache show "postgresql-$v" >/dev/null 2>&1 &&
           apt-cache show "postgresql-$v-partman" >/dev/null 2>&1 &&
           apt-cache show "postgresql-$v-cron" >/dev/null 2>&1; then
            major=$v; break
        fi
    done
    if [ -z "$major" ]; then
        echo "setup: no PostgreSQL major version in the archive has server, pg_partman and pg_cron packages" >&2
        exit 1
    fi
    # Do not let the package start a system cluster: pgretention starts its own throwaway clusters.
    $SUDO mkdir -p /etc/postgresql-common
    if [ ! -f /etc/postgresql-common/createcluster.conf ] ||
       ! grep -q '^create_main_cluster *= *false' /etc/postgresql-common/createcluster.conf; then
        echo "create_main_cluster = false" | $SUDO tee -a /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        "postgresql-$major" "postgresql-$major-partman" "postgresql-$major-cron" >/dev/null
fi
echo "setup: PostgreSQL $major with pg_partman and pg_cron" >&2

# Headless Chromium renders the HTML compliance report in the tests (Debian's chromium package).
if ! command -v chromium >/dev/null 2>&1; then
    echo "setup: installing chromium (headless browser for the HTML report tests)" >&2
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.pgretention-deps
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    log=$(mktemp)
    if ! { .venv/bin/python -m pip install -q --upgrade pip &&
           .venv/bin/python -m pip install -q -e '.[test,bench]'; } >"$log" 2>&1; then
        grep -v '^WARNING: Location' "$log" >&2; rm -f "$log"; exit 1
    fi
    rm -f "$log"
    touch "$stamp"
fi
echo "setup: Python environment ready in .venv" >&2
