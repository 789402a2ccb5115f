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

# Builds the vde_switch capture plugin (vde-switch-plugin/vde_capture.c) into DIR/vde-capture.so,
# beside vde-networker, which loads it into its switch while a segment capture runs. The system
# C compiler, not SwiftPM: SwiftPM would link the Swift runtime into it (see the source).
build_capture_plugin() {
    local dir=$1 root
    root=$(repo_root)
    mkdir -p "$dir"
    cc -std=gnu11 -O2 -g -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden \
        -o "$dir/vde-capture.so.tmp" "$root/vde-switch-plugin/vde_capture.c"
    mv -f "$dir/vde-capture.so.tmp" "$dir/vde-capture.so"
}
