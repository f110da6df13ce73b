#!/usr/bin/env bash
# `make test` after lint: the suite's two legs, `make test-host` (this machine's Debian release and
# its PostgreSQL, pg_partman, pg_cron) and `make test-rootfs` (the other Debian release, in a root
# filesystem under build/). Fails when either leg fails; ends with each leg's counts and time.
#
# PGRETENTION_LEGS=parallel (default: both at once, the root filesystem's output shown when it is
# done; on 2 cores the faster way, the suite waits on the server much of the time) or sequential.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
mode=${PGRETENTION_LEGS:-parallel}
host_log=build/test-host.log
rootfs_log=build/test-rootfs.log
rm -f build/test-host.secs build/test-rootfs.secs

leg() {  # leg NAME: make test-NAME, output to build/test-NAME.log (and the terminal when $2 is "tee")
    local name=$1 start=$SECONDS rc
    if [ "${2:-}" = tee ]; then
        make --no-print-directory "test-$name" 2>&1 | tee "build/test-$name.log"
        rc=${PIPESTATUS[0]}
    else
        make --no-print-directory "test-$name" >"build/test-$name.log" 2>&1
        rc=$?
    fi
    echo "$((SECONDS - start))" >"build/test-$name.secs"
    return "$rc"
}

summary() {  # the closing line of pytest in a leg's log
    grep -E '^=+ .*(passed|failed|error|skipped|xfailed|xpassed|no tests ran).* in [0-9.]+s' "$1" | tail -n 1 |
        sed -E 's/^=+ //; s/ =+$//'
}

start=$SECONDS
if [ "$mode" = sequential ]; then
    leg host tee; host_rc=$?
    leg rootfs tee; rootfs_rc=$?
else
    echo "test: both legs at once; the root filesystem's output ($rootfs_log) follows the host's"
    # in a session of its own, so that an interrupt or failure here ends it (and its unmounts run)
    setsid bash -c "$(declare -f leg); leg rootfs" &
    rootfs_pid=$!
    trap 'kill -TERM -- -"$rootfs_pid" 2>/dev/null; wait "$rootfs_pid"' INT TERM
    leg host tee; host_rc=$?
    wait "$rootfs_pid"; rootfs_rc=$?
    trap - INT TERM
    echo "---------------- second leg: make test-rootfs ----------------"
    cat "$rootfs_log"
fi

echo "---------------- both legs ($mode, $((SECONDS - start))s) ----------------"
for name in host rootfs; do
    log=build/test-$name.log
    header=$(grep -m1 '^pgretention test leg:' "$log" 2>/dev/null | sed 's/^pgretention test leg: //')
    echo "test-$name: ${header:-(no header)}"
    echo "test-$name: $(summary "$log" || true) ($(cat "build/test-$name.secs" 2>/dev/null || echo '?')s with setup)"
done
[ "$host_rc" -eq 0 ] && [ "$rootfs_rc" -eq 0 ]
