# Shared helpers for the scripts in this folder. Source it; do not run it.
# shellcheck shell=bash

# The docker client that speaks to Debian's dockerd 20.10 (docker.io).
DOCKER=/usr/bin/docker
export DOCKER

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Puts this machine's Swift toolchain on PATH when it is installed but not on PATH.
ensure_swift_on_path() {
    if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
        PATH="/opt/swift/usr/bin:$PATH"
        export PATH
    fi
}

require_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 needs root (it manages packages, dockerd, taps and namespaces): run it as root"
}

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }
