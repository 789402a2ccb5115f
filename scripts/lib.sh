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
    RELEASE_BIN=$(release_bin_path)
    build_capture_plugin "$RELEASE_BIN"
    export RELEASE_BIN
}

# Prints where build_release puts the binaries (without building).
release_bin_path() {
    local scratch=()
    ensure_swift_on_path
    [ -z "${VDE_SCRATCH_PATH:-}" ] || scratch=(--scratch-path "$VDE_SCRATCH_PATH")
    (cd "$(repo_root)" && swift build "${scratch[@]}" -c release --static-swift-stdlib --show-bin-path)
}

# The version of the build in RELEASE_BIN, as the binary reports it (its one source is
# Sources/Shared/Product/Installation.swift).
release_version() {
    "$RELEASE_BIN/vde-supervisor" --version
}

# The systemd unit directory for PREFIX: the distribution's (/lib/systemd/system, Debian
# bookworm's systemdsystemunitdir) for /usr, the administrator's (/etc/systemd/system) for any
# other prefix, where systemd would not look (scripts/install's /usr/local).
unit_dir_for_prefix() {
    if [ "$1" = /usr ]; then echo /lib/systemd/system; else echo /etc/systemd/system; fi
}

# Builds swift-argument-parser's generate-manual tool (what its GenerateManual plugin runs) from
# the checkout SwiftPM already resolved, in a scratch dir of its own, so that making the man page
# needs no network and does not relink the release binaries (the plugin would build every
# product again, without --static-swift-stdlib). Prints the tool's path.
build_manual_tool() {
    local build checkout
    build=${VDE_SCRATCH_PATH:-$(repo_root)/.build}
    checkout=$build/checkouts/swift-argument-parser
    [ -d "$checkout" ] || die "no swift-argument-parser checkout in $build: run build_release first"
    ensure_swift_on_path
    swift build --package-path "$checkout" --scratch-path "$build/generate-manual" \
        -c release --product generate-manual >&2
    echo "$build/generate-manual/release/generate-manual"
}

# Lays out one installation of the build in RELEASE_BIN under DESTDIR for PREFIX: what
# scripts/install (PREFIX=/usr/local), scripts/package, scripts/build-image and
# scripts/build-plugin (PREFIX=/usr) all install, so that every way holds the same files:
#   PREFIX/bin/vde-supervisor, PREFIX/lib/vde-supervisor/{vde-networker,vde-capture.so}
#     (stripped: 25 MiB less; where the supervisor and the worker find their helpers unaided),
#   the two units in unit_dir_for_prefix, ExecStart= pointing at PREFIX/bin/vde-supervisor,
#   the man page vde-supervisor(1) and bash, zsh and fish completions, both generated from the
#     commands' ArgumentParser definitions, so they never drift from --help,
#   README.md and docs/*.md in PREFIX/share/doc/vde-supervisor.
# DESTDIR must exist or be creatable; files already there are replaced.
stage_tree() {
    local dest=$1 prefix=$2 root units share tool tmp date
    [ -n "${RELEASE_BIN:-}" ] || die "stage_tree: RELEASE_BIN is not set: run build_release first"
    case $prefix in /*) ;; *) die "stage_tree: PREFIX must be absolute: $prefix" ;; esac
    root=$(repo_root)
    units=$dest$(unit_dir_for_prefix "$prefix")
    share=$dest$prefix/share
    install -d "$dest$prefix/bin" "$dest$prefix/lib/vde-supervisor" "$units" \
        "$share/man/man1" "$share/doc/vde-supervisor/docs" \
        "$share/bash-completion/completions" "$share/fish/vendor_completions.d"
    install -m 0755 "$RELEASE_BIN/vde-supervisor" "$dest$prefix/bin/vde-supervisor"
    install -m 0755 "$RELEASE_BIN/vde-networker" "$dest$prefix/lib/vde-supervisor/vde-networker"
    install -m 0644 "$RELEASE_BIN/vde-capture.so" "$dest$prefix/lib/vde-supervisor/vde-capture.so"
    strip --strip-unneeded "$dest$prefix/bin/vde-supervisor" \
        "$dest$prefix/lib/vde-supervisor/vde-networker" "$dest$prefix/lib/vde-supervisor/vde-capture.so"

    sed "s|^ExecStart=/usr/local/bin/vde-supervisor |ExecStart=$prefix/bin/vde-supervisor |" \
        "$root/systemd/vde-supervisor.service" > "$units/vde-supervisor.service"
    grep -q "^ExecStart=$prefix/bin/vde-supervisor " "$units/vde-supervisor.service" \
        || die "stage_tree: systemd/vde-supervisor.service has no ExecStart=/usr/local/bin/vde-supervisor to rewrite"
    install -m 0644 "$root/systemd/vde-supervisor.socket" "$units/vde-supervisor.socket"
    chmod 0644 "$units/vde-supervisor.service"

    # bash-completion sources the file: no #! line (lintian: bash-completion-with-hashbang).
    "$RELEASE_BIN/vde-supervisor" --generate-completion-script bash | sed '1{/^#!/d}' \
        > "$share/bash-completion/completions/vde-supervisor"
    "$RELEASE_BIN/vde-supervisor" --generate-completion-script fish \
        > "$share/fish/vendor_completions.d/vde-supervisor.fish"
    # zsh: Debian's zsh reads vendor-completions under /usr, site-functions elsewhere.
    local zsh_dir=$share/zsh/site-functions
    [ "$prefix" != /usr ] || zsh_dir=$share/zsh/vendor-completions
    install -d "$zsh_dir"
    "$RELEASE_BIN/vde-supervisor" --generate-completion-script zsh > "$zsh_dir/_vde-supervisor"

    tool=$(build_manual_tool)
    tmp=$(mktemp -d)
    # The commit's date, not today's: the same commit stages the same man page.
    date=$(git -C "$root" log -1 --format=%cs 2>/dev/null || date -u +%F)
    "$tool" "$RELEASE_BIN/vde-supervisor" --date "$date" --output-directory "$tmp"
    gzip -9n < "$tmp/vde-supervisor.1" > "$share/man/man1/vde-supervisor.1.gz"
    rm -rf "$tmp"

    install -m 0644 "$root/README.md" "$share/doc/vde-supervisor/README.md"
    install -m 0644 "$root"/docs/*.md "$share/doc/vde-supervisor/docs/"
}

# The Debian release the image roots (build-systemd-image, build-image, build-plugin) are made of.
ROOTFS_SUITE=bookworm

# Prints the Debian mirror apt is configured with for ROOTFS_SUITE (deb822 .sources first, then
# one-line .list files); fails when there is none. debootstrap fetches from it: no registry here.
debian_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # The first stanza whose Suites name the suite (not -security, which lacks the main suite).
        uri=$(awk -v suite="$ROOTFS_SUITE" '
            BEGIN { RS=""; FS="\n" }
            {
                uris=""; ok=0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { uris=$i; sub(/^URIs:[ \t]*/, "", uris) }
                    if ($i ~ /^Suites:/) { n = split(substr($i, 8), s, /[ \t]+/); for (j = 1; j <= n; j++) if (s[j] == suite) ok=1 }
                }
                if (ok && uris != "") { split(uris, u, /[ \t]+/); print u[1]; exit }
            }' "$f")
        if [ -n "$uri" ]; then echo "$uri"; return 0; fi
    done
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list; do
        [ -f "$f" ] || continue
        uri=$(awk -v suite="$ROOTFS_SUITE" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i ~ /:\/\//) { if ($(i+1) == suite) { print $i; exit } } }' "$f")
        if [ -n "$uri" ]; then echo "$uri"; return 0; fi
    done
    return 1
}

# debootstrap --variant=minbase of ROOTFS_SUITE into DIR (which must not exist yet) with the
# comma-separated packages INCLUDE, without the downloaded .deb files and debootstrap's own
# leftovers. About a minute. Shows the end of debootstrap's log when it fails.
debootstrap_minbase() {
    local dir=$1 include=$2 mirror log
    mirror=$(debian_mirror) || die "no apt source for $ROOTFS_SUITE found in /etc/apt/sources.list.d"
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null \
            || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null; } \
            || die "cannot install debootstrap"
    fi
    log=$(mktemp /var/tmp/vde-debootstrap.XXXXXX.log)
    say "debootstrap $ROOTFS_SUITE from $mirror into $dir (about a minute)"
    if ! debootstrap --variant=minbase --include="$include" "$ROOTFS_SUITE" "$dir" "$mirror" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        [ -f "$dir/debootstrap/debootstrap.log" ] && tail -n 30 "$dir/debootstrap/debootstrap.log" >&2
        rm -f "$log"
        die "debootstrap failed"
    fi
    rm -f "$log"
    # The host's apt proxies and caches are not wanted inside; neither are the .deb files.
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir/debootstrap"
}

# What vde-supervisor runs inside its image and its managed plugin: the VDE switch and plugs,
# ip and nsenter, libpcap for the capture command, busybox for the gratuitous ARP, tini as PID 1.
ROOTFS_PACKAGES=vde2,libvdeplug2,libsystemd0,iproute2,util-linux,libpcap0.8,busybox,tini

# The root file system of the image (scripts/build-image) and of the managed plugin
# (scripts/build-plugin): a Debian minbase with ROOTFS_PACKAGES and the release build in RELEASE_BIN
# (build_release) laid out under /usr by stage_tree. DIR must not exist yet.
build_rootfs() {
    local dir=$1 f
    [ -n "${RELEASE_BIN:-}" ] || die "build_rootfs: run build_release first (RELEASE_BIN is not set)"
    debootstrap_minbase "$dir" "$ROOTFS_PACKAGES"
    stage_tree "$dir" /usr
    for f in /usr/bin/tini /usr/bin/vde_switch /usr/bin/vde_plug2tap /usr/bin/busybox /usr/bin/ip \
        /usr/bin/nsenter /usr/bin/vde-supervisor /usr/lib/vde-supervisor/vde-networker \
        /usr/lib/vde-supervisor/vde-capture.so; do
        [ -e "$dir$f" ] || die "build_rootfs: the root file system lacks $f"
    done
}
