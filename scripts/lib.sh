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

# The one build that every way of running or installing vde-supervisor uses: the quick start
# (scripts/run), scripts/install, scripts/package, scripts/build-image, scripts/build-plugin and
# the tests of those. Release, with the Swift runtime linked statically (no toolchain needed
# where it runs; about 0.7 MiB less per network than the dynamic build, docs/benchmarks.md),
# and the switch's capture plugin beside the binaries. VDE_SCRATCH_PATH=DIR builds in DIR.
# Sets RELEASE_BIN to the directory holding vde-supervisor, vde-networker and vde-capture.so.
build_release() {
    local scratch=()
    ensure_swift_on_path
    [ -z "${VDE_SCRATCH_PATH:-}" ] || scratch=(--scratch-path "$VDE_SCRATCH_PATH")
    say "swift build -c release --static-swift-stdlib ${scratch[*]}"
    (cd "$(repo_root)" && swift build "${scratch[@]}" -c release --static-swift-stdlib)
    RELEASE_BIN=$(cd "$(repo_root)" && swift build "${scratch[@]}" -c release --static-swift-stdlib --show-bin-path)
    build_capture_plugin "$RELEASE_BIN"
    export RELEASE_BIN
}

# The version of the build in RELEASE_BIN, as the binary reports it (its one source is
# Sources/Shared/Product/Installation.swift).
release_version() {
    "$RELEASE_BIN/vde-supervisor" --version
}
