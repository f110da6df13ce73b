#!/usr/bin/env bash
# Runs a command inside a Debian root filesystem of another release, with this checkout bind-mounted
# at /pgretention: the second leg of `make test` runs the suite there against that release's
# PostgreSQL, pg_partman and pg_cron (scripts/setup.sh installs them inside).
#
#   scripts/rootfs.sh SUITE [COMMAND ARGS...]    # SUITE: bookworm or trixie; default command: bash
#
# The root filesystem is made with debootstrap from the Debian archive in build/rootfs-SUITE (ignored
# by git) and reused while it exists. Each call copies the host's local CA certificates and pip
# configuration in (package downloads behind a TLS-inspecting proxy need them), mounts /proc, /sys,
# /dev, /dev/pts, a /dev/shm of its own (PostgreSQL's shared memory) and the checkout, runs the
# command with chroot, and unmounts everything on the way out, also on failure or interrupt.
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_SECURITY_MIRROR;
# PGRETENTION_ROOTFS (another folder, e.g. build/rootfs-bare-trixie) and PGRETENTION_ROOTFS_INCLUDE
# (packages beyond debootstrap's minimal base; default: what the suite's leg needs before setup.sh,
# git for the upgrade tests' previous release)
# try scripts/setup.sh on a bare system: PGRETENTION_ROOTFS_INCLUDE=ca-certificates.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$(pwd -P)

suite=${1:?usage: scripts/rootfs.sh SUITE [COMMAND ARGS...]}
shift
case "$suite" in
    bookworm | trixie) ;;
    *) echo "rootfs: unsupported Debian suite '$suite' (bookworm or trixie)" >&2; exit 2 ;;
esac
[ $# -gt 0 ] || set -- bash

if [ "$(id -u)" -ne 0 ]; then
    exec sudo --preserve-env "$0" "$suite" "$@"
fi

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-${mirror%/debian}/debian-security}
root=${PGRETENTION_ROOTFS:-build/rootfs-$suite}
case "$root" in /*) ;; *) root="$checkout/$root" ;; esac
include=${PGRETENTION_ROOTFS_INCLUDE:-ca-certificates,make,python3,python3-venv,procps,git}
mkdir -p "$checkout/build"

# One user of a root filesystem at a time: a second caller waits (mounts are per call).
exec 9>"$root.lock"
flock 9

mounted() { grep -q " $1 " /proc/self/mounts; }

mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" 2>/dev/null || true
    done
    mounts=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bind() {  # bind SRC DEST [ro]
    local src=$1 dest=$2
    if [ -d "$src" ]; then mkdir -p "$dest"; else mkdir -p "$(dirname "$dest")"; touch "$dest"; fi
    mount --bind "$src" "$dest"
    mounts+=("$dest")
    if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$dest"; fi
}

if [ ! -f "$root/.pgretention-rootfs" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "rootfs: installing debootstrap" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    tmp="$root.partial"
    if [ -e "$tmp" ]; then
        if grep -q " $tmp/" /proc/self/mounts; then
            echo "rootfs: $tmp has mounts left; unmount them first" >&2; exit 1
        fi
        rm -rf --one-file-system "$tmp"
    fi
    echo "rootfs: debootstrap $suite from $mirror into ${root#"$checkout"/} (once; reused afterwards)" >&2
    log="$root.debootstrap.log"
    if ! debootstrap --variant=minbase --include="$include" "$suite" "$tmp" "$mirror" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "rootfs: debootstrap failed (whole log: ${log#"$checkout"/})" >&2
        exit 1
    fi
    cat >"$tmp/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF
    # Packages inside must not start services (no init runs in a chroot).
    printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
    chmod 755 "$tmp/usr/sbin/policy-rc.d"
    echo "$include" >"$tmp/.pgretention-rootfs"
    mv "$tmp" "$root"
fi

# The host's settings that downloads need, copied in on every call (cheap; they may change).
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
for f in /etc/apt/apt.conf.d/*; do  # proxies and the like; not the host's package sources
    [ -f "$f" ] && cp "$f" "$root/etc/apt/apt.conf.d/" || true
done
ca_changed=0
if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    for f in /usr/local/share/ca-certificates/*.crt; do
        [ -f "$f" ] || continue
        if ! cmp -s "$f" "$root/usr/local/share/ca-certificates/$(basename "$f")"; then
            cp "$f" "$root/usr/local/share/ca-certificates/"; ca_changed=1
        fi
    done
fi
for f in /etc/pip.conf /root/.config/pip/pip.conf /etc/xdg/pip/pip.conf /etc/xdg/pip/constraints.txt; do
    if [ -f "$f" ]; then mkdir -p "$root$(dirname "$f")"; cp "$f" "$root$f"; fi
done

bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev"
bind /dev/pts "$root/dev/pts"
mkdir -p "$root/dev/shm"
mount -t tmpfs -o mode=1777,size=1g tmpfs "$root/dev/shm"
mounts+=("$root/dev/shm")
bind "$checkout" "$root/pgretention"
# Local package folders that a copied pip configuration may name: read-only, when the host has them.
local_dir() {  # a local folder that pip settings name, bound read-only when the host has it
    local dir=${1#file://}
    case "$dir" in /[!/]*) ;; *) return 0 ;; esac
    dir=${dir%/}
    dir=${dir%/simple}  # a local package index: its files lie beside simple/
    while [ "$dir" != / ] && [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
    case "$dir" in / | /etc | /etc/* | /usr | /usr/* | /root | /root/* | /proc* | /sys* | /dev* | \
        /tmp | /var | "$checkout" | "$checkout"/*) return 0 ;; esac
    mounted "$root$dir" || bind "$dir" "$root$dir" ro
}
for f in /etc/pip.conf /root/.config/pip/pip.conf /etc/xdg/pip/pip.conf; do
    [ -f "$f" ] || continue
    for token in $(sed -e 's/[=,]/ /g' "$f"); do local_dir "$token"; done
done
for token in ${PIP_FIND_LINKS:-} ${PIP_EXTRA_INDEX_URL:-} ${PIP_INDEX_URL:-}; do local_dir "$token"; done

# A clean environment: the host's PATH (language managers, virtualenvs) means nothing inside.
envs=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
      TERM="${TERM:-dumb}" DEBIAN_FRONTEND=noninteractive PGRETENTION_LEG="root filesystem ${root#"$checkout"/}")
while IFS='=' read -r name _; do
    case "$name" in
        PGRETENTION_* | PIP_* | CI | PYTEST_ADDOPTS | http_proxy | https_proxy | no_proxy | \
        HTTP_PROXY | HTTPS_PROXY | NO_PROXY | SSL_CERT_FILE | SSL_CERT_DIR | REQUESTS_CA_BUNDLE | \
        CURL_CA_BUNDLE)
            envs+=("$name=${!name}") ;;
    esac
done < <(env)

if [ -x "$root/usr/sbin/update-ca-certificates" ] && { [ "$ca_changed" = 1 ] || [ ! -f "$root/.pgretention-ca" ]; }; then
    chroot "$root" /usr/bin/env -i "${envs[@]}" update-ca-certificates >/dev/null 2>&1
    touch "$root/.pgretention-ca"
fi

# A root filesystem made with fewer packages than this script now asks for gets the rest.
if [ "$(cat "$root/.pgretention-rootfs")" != "$include" ]; then
    echo "rootfs: installing ${include//,/ } in ${root#"$checkout"/}" >&2
    chroot "$root" /usr/bin/env -i "${envs[@]}" sh -c \
        "apt-get update -qq && apt-get install -y -qq ${include//,/ } >/dev/null" || exit 1
    echo "$include" >"$root/.pgretention-rootfs"
fi

set +e
chroot "$root" /usr/bin/env -i "${envs[@]}" sh -c 'cd /pgretention && exec "$@"' rootfs "$@"
rc=$?
set -e
exit $rc
