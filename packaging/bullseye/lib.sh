# Debian 11 (bullseye, glibc 2.31) roots for building and testing the executable. Sourced by
# packaging/build.sh and packaging/test_binary.sh; needs root (debootstrap, chroot, mount).
#
# Both live outside the clone, in $PICTOR_BUILD_CACHE (default /var/cache/pictor-build), and
# are kept between runs, so that only the first build on a machine pays for them:
#   bullseye-base/    `debootstrap --variant=minbase bullseye`, never changed after: the test
#                     runs the executable here, where nothing of the build is installed
#   bullseye-build/   a copy of it with the build tools and the -dev packages, where SQLite and
#                     CPython are built (build-python.sh) and PyInstaller runs
# Delete the folder to start again from nothing. Each root is made in a .tmp folder and renamed
# when complete, so an interrupted run leaves nothing half-made behind.

CACHE=${PICTOR_BUILD_CACHE:-/var/cache/pictor-build}
BASE_ROOT=$CACHE/bullseye-base
BUILD_ROOT=$CACHE/bullseye-build

# The build tools and the headers of the libraries CPython links (they are bundled from here).
BUILD_PACKAGES="build-essential dpkg-dev pkg-config tcl xz-utils libssl-dev zlib1g-dev
  libffi-dev libbz2-dev liblzma-dev uuid-dev libexpat1-dev"

die() { echo "${0##*/}: $*" >&2; exit 1; }
note() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# This machine's Debian mirror, as its apt sources name it (no address is written down here).
debian_mirror() {
    local suffix=$1 url
    url=$(grep -hoE "https?://[^ ]+/debian${suffix}/?( |$)" /etc/apt/sources.list \
        /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
    url=${url%% }
    [[ -n $url ]] || die "no Debian mirror (.../debian$suffix) in /etc/apt/sources.list{,.d}"
    echo "${url%/}"
}

# One build or root creation at a time on this machine (other clones share the cache).
lock_cache() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
}

# in_root ROOT [--bind HOSTDIR DIR | --bind-ro HOSTDIR DIR]... -- COMMAND...
# Runs COMMAND chrooted into ROOT with /proc mounted, in a mount namespace of its own: the
# mounts exist only for that command and vanish with it, however it ends (even on SIGKILL),
# so nothing is ever left mounted on the host. The network is the host's (localhost included).
in_root() {
    local root=$1; shift
    local mounts="mount -t proc proc '$root/proc'"
    while [[ $1 == --bind || $1 == --bind-ro ]]; do
        mkdir -p "$root/$3"
        mounts+=" && mount --bind '$2' '$root/$3'"
        [[ $1 == --bind-ro ]] && mounts+=" && mount -o remount,bind,ro '$root/$3'"
        shift 3
    done
    [[ $1 == -- ]] && shift
    # shellcheck disable=SC2016
    unshare --mount --propagation private bash -c "$mounts"' && exec chroot "$0" "$@"' \
        "$root" "$@"
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null 2>&1 && return
    note "installing Debian's debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap \
        >/dev/null || die "cannot install debootstrap"
}

ensure_base_root() {
    [[ -f $BASE_ROOT/.complete ]] && return
    ensure_debootstrap
    local mirror; mirror=$(debian_mirror "")
    note "making the Debian 11 root $BASE_ROOT (debootstrap, about a minute)"
    rm -rf "$BASE_ROOT.tmp"
    debootstrap --variant=minbase bullseye "$BASE_ROOT.tmp" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
    touch "$BASE_ROOT.tmp/.complete"
    mv "$BASE_ROOT.tmp" "$BASE_ROOT"
}

ensure_build_root() {
    local want; want=$(echo "$BUILD_PACKAGES" | sha256sum | cut -c1-16)
    [[ -f $BUILD_ROOT/.complete && $(cat "$BUILD_ROOT/.complete") == "$want" ]] && return
    ensure_base_root
    local mirror security
    mirror=$(debian_mirror "")
    security=$(debian_mirror "-security")
    note "making the build root $BUILD_ROOT (build tools from Debian 11)"
    rm -rf "$BUILD_ROOT" "$BUILD_ROOT.tmp"
    cp -a "$BASE_ROOT" "$BUILD_ROOT.tmp"
    rm -f "$BUILD_ROOT.tmp/.complete"
    # Binaries from bullseye and its security updates (OpenSSL, zlib, libffi, libstdc++ are
    # bundled from here); sources from bookworm: its CPython 3.11 and SQLite 3.40 (RETURNING).
    cat >"$BUILD_ROOT.tmp/etc/apt/sources.list" <<EOF
deb $mirror bullseye main
deb $mirror bullseye-updates main
deb $security bullseye-security main
deb-src $mirror bookworm main
EOF
    # shellcheck disable=SC2086
    in_root "$BUILD_ROOT.tmp" -- sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends $(echo $BUILD_PACKAGES)" \
        >"$CACHE/build-root.log" 2>&1 \
        || { tail -20 "$CACHE/build-root.log" >&2; die "cannot install the build tools (log: $CACHE/build-root.log)"; }
    echo "$want" >"$BUILD_ROOT.tmp/.complete"
    mv "$BUILD_ROOT.tmp" "$BUILD_ROOT"
}
