#!/usr/bin/env bash
# Makes a Docker engine and the Docker executor's test images available. Idempotent: run it
# as often as you like; it only does what is missing.
#
#   bash scripts/setup-docker.sh
#
# 1. An engine: when one answers (`DOCKER_HOST`, else /var/run/docker.sock), it is used as it
#    is (a developer's laptop). Otherwise `dockerd` is installed when missing (Debian's
#    `docker.io`, needs root) and started in the background, logging to
#    $DSTACK_DOCKERD_LOG (default /var/log/dstack-dockerd.log); the script waits for it to
#    answer and fails loudly when it does not.
# 2. The test images, built offline (no registry is reachable on CI machines), only when the
#    engine does not have them yet:
#    - `dstack-busybox:test`: Debian's static busybox with its applets as symlinks (< 1 s);
#    - `python:3.11`: a Debian bookworm minbase root file system with python3-minimal, made
#      with debootstrap (about 40 s, once per machine).
#
# Exits non-zero, saying why, when any of it cannot be done: the Docker tests never skip.
set -euo pipefail

BUSYBOX_IMAGE=dstack-busybox:test
PYTHON_IMAGE=python:3.11
LOG=${DSTACK_DOCKERD_LOG:-/var/log/dstack-dockerd.log}

say() { printf 'setup-docker: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# The engine's address for curl: DOCKER_HOST's socket, or the default one.
socket() {
    case "${DOCKER_HOST:-}" in
    unix://*) printf '%s\n' "${DOCKER_HOST#unix://}" ;;
    "") printf '/var/run/docker.sock\n' ;;
    *) printf '\n' ;;
    esac
}

answers() {
    if command -v docker >/dev/null 2>&1; then
        docker version --format '{{.Server.Version}}' >/dev/null 2>&1
    else
        local sock
        sock=$(socket)
        [[ -n $sock ]] && curl -fsS --max-time 5 --unix-socket "$sock" http://localhost/_ping >/dev/null 2>&1
    fi
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "'$*' needs root; start a Docker engine yourself (e.g. 'sudo systemctl start docker') and run this again"
    fi
}

apt_install() {
    say "installing $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >/dev/null || die "apt-get update failed"
    as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
        die "apt-get install $* failed"
}

start_engine() {
    if [[ -n ${DOCKER_HOST:-} && ${DOCKER_HOST} != unix:///var/run/docker.sock ]]; then
        die "DOCKER_HOST=$DOCKER_HOST does not answer; start that engine, or unset DOCKER_HOST to let this script start a local one"
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 ||
            die "no Docker engine answers and dockerd is not installed: install and start Docker (https://docs.docker.com/engine/install/)"
        apt_install docker.io
        command -v dockerd >/dev/null 2>&1 || die "docker.io is installed but dockerd is not on PATH"
    fi
    if pgrep -x dockerd >/dev/null 2>&1; then
        say "dockerd is running but does not answer yet; waiting for it"
    else
        say "starting dockerd in the background (log: $LOG)"
        as_root mkdir -p "$(dirname "$LOG")"
        # Its own session, so it outlives this script and the test run that started it.
        as_root setsid dockerd >>"$LOG" 2>&1 </dev/null &
    fi
    for _ in $(seq 1 120); do
        if answers; then
            say "dockerd answers"
            return 0
        fi
        sleep 0.5
    done
    say "the last lines of $LOG:"
    tail -n 20 "$LOG" >&2 || true
    die "dockerd did not answer within 60 s"
}

have_image() {
    docker image inspect "$1" >/dev/null 2>&1
}

static() { [[ -x $1 ]] && ! ldd "$1" >/dev/null 2>&1; }

build_busybox() {
    # Only a static busybox works in an image with no libc: Debian's busybox-static.
    local busybox=/bin/busybox
    static "$busybox" || busybox=$(command -v busybox || true)
    if [[ -z $busybox ]] || ! static "$busybox"; then
        apt_install busybox-static
        busybox=/bin/busybox
        static "$busybox" || die "/bin/busybox is not statically linked"
    fi
    local dir
    dir=$(mktemp -d)
    mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc" "$dir/proc" "$dir/sys" "$dir/dev" "$dir/workflow"
    chmod 1777 "$dir/tmp"
    cp "$busybox" "$dir/bin/busybox"
    local applet
    for applet in $("$dir/bin/busybox" --list); do
        [[ $applet == busybox ]] || ln -sf busybox "$dir/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$dir/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
    tar -C "$dir" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["sh"]' - "$BUSYBOX_IMAGE" >/dev/null
    rm -rf "$dir"
    say "built $BUSYBOX_IMAGE"
}

build_python() {
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    local mirror
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    mirror=${mirror:-http://deb.debian.org/debian}
    local dir
    dir=$(mktemp -d)
    say "building $PYTHON_IMAGE with debootstrap from $mirror (about a minute, once)"
    if ! as_root debootstrap --variant=minbase --include=python3-minimal bookworm "$dir" "$mirror" \
        >"$dir.log" 2>&1; then
        tail -n 20 "$dir.log" >&2 || true
        as_root rm -rf "$dir" "$dir.log"
        die "debootstrap failed"
    fi
    # The official image has `python` too (the python provider runs `python SCRIPT`).
    as_root ln -sf python3 "$dir/usr/bin/python"
    as_root rm -rf "$dir/var/cache/apt/archives"/*.deb "$dir/var/lib/apt/lists"/*
    as_root tar -C "$dir" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' - "$PYTHON_IMAGE" >/dev/null
    as_root rm -rf "$dir" "$dir.log"
    say "built $PYTHON_IMAGE"
}

if answers; then
    say "a Docker engine answers"
else
    start_engine
fi
command -v docker >/dev/null 2>&1 || die "the docker client is missing (it comes with docker.io)"
have_image "$BUSYBOX_IMAGE" || build_busybox
have_image "$PYTHON_IMAGE" || build_python
say "ready: $(docker version --format 'Docker {{.Server.Version}} (API {{.Server.APIVersion}})')," \
    "images $BUSYBOX_IMAGE and $PYTHON_IMAGE"
