#!/usr/bin/env bash
# Installs everything pgretention needs on a Debian machine: a PostgreSQL server major version for
# which the server, pg_partman and pg_cron packages all exist, and the Python package in a virtualenv
# (.venv, or $PGRETENTION_VENV). Works on a bare machine without any PostgreSQL or Python venv module.
# Safe to re-run: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
VENV=${PGRETENTION_VENV:-.venv}

apt_updated=0
apt_install() {  # apt_install PACKAGE...: from the Debian archive, the package lists read once
    if [ "$apt_updated" = 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

installed_majors() {  # server major versions present, newest first; none on a bare machine
    [ -d /usr/lib/postgresql ] || return 0
    find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -rn
}

has_major() {  # server binary plus both extensions present for major $1
    local v=$1
    [ -x "/usr/lib/postgresql/$v/bin/postgres" ] &&
        [ -f "/usr/share/postgresql/$v/extension/pg_partman.control" ] &&
        [ -f "/usr/share/postgresql/$v/extension/pg_cron.control" ]
}

pick_installed() {
    local v
    for v in $(installed_majors); do
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
    $SUDO apt-get update -qq; apt_updated=1
    major=""
    # Prefer an installed server major (no second server) when its extensions exist in the archive.
    candidates="${PGRETENTION_PG_MAJOR:-} $(installed_majors) 18 17 16 15 14 13"
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
    apt_install "postgresql-$major" "postgresql-$major-partman" "postgresql-$major-cron"
fi
echo "setup: PostgreSQL $major with pg_partman and pg_cron" >&2

# Headless Chromium renders the HTML compliance report in the tests (Debian's chromium package).
if ! command -v chromium >/dev/null 2>&1; then
    echo "setup: installing chromium (headless browser for the HTML report tests)" >&2
    apt_install chromium
fi

PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
    # a bare Debian has no python3, or python3 without its venv module (package python3-venv)
    if ! command -v "$PY" >/dev/null 2>&1 || ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        echo "setup: installing python3 and python3-venv" >&2
        apt_install python3 python3-venv
    fi
    "$PY" -m venv "$VENV"
fi
stamp=$VENV/.pgretention-deps
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    log=$(mktemp)
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
           "$VENV/bin/python" -m pip install -q -e '.[test,bench]'; } >"$log" 2>&1; then
        grep -v '^WARNING: Location' "$log" >&2; rm -f "$log"; exit 1
    fi
    rm -f "$log"
    touch "$stamp"
fi
echo "setup: Python environment ready in $VENV" >&2
