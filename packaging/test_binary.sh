#!/usr/bin/env bash
# What `make test-binary` runs (as root), on an executable `make binary` built:
#   bash packaging/test_binary.sh [path/to/pictor]        (default: dist/pictor)
#  1. the glibc check: no file in the bundle needs a glibc symbol newer than 2.28, and none
#     needs a library that is neither bundled nor part of glibc (packaging/glibc_check.py
#     reads the symbol versions);
#  2. the smoke test on this machine;
#  3. the smoke test inside a Debian 11 root (glibc 2.31), made by debootstrap from this
#     machine's Debian mirror on the first run and kept in /var/cache/pictor-build;
#  4. the start-up check on a real old SQLite: `python main.py` with bullseye's SQLite 3.34
#     (no RETURNING) must refuse to start, exit 3, with the message;
#  5. prints size, gzip size and start-up times.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=packaging/bullseye/lib.sh
source packaging/bullseye/lib.sh
BIN=${1:-dist/pictor}
PYTHON=${PYTHON:-}
if [[ -z $PYTHON ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=$PWD/.venv/bin/python; else PYTHON=python3; fi
fi
[[ -x $BIN ]] || die "$BIN not found; build it first: make binary"
[[ $(id -u) -eq 0 ]] || die "must run as root (the Debian 11 root is entered with chroot)"

start=$(date +%s)
passed=0 failed=0
step() { # step NAME COMMAND...: one counted step, its output indented
    local name=$1; shift
    echo "=== $name"
    if "$@"; then passed=$((passed + 1)); echo "=== ok: $name"
    else failed=$((failed + 1)); echo "=== FAIL: $name"; fi
}

step "glibc symbol versions of every bundled file (at most 2.28)" \
    "$PYTHON" packaging/glibc_check.py --max 2.28 "$BIN"

LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
smoke() { # smoke LOG [--root DIR]: the smoke test, its output also kept in LOG
    local log=$1; shift
    bash packaging/smoke_test.sh "$@" "$BIN" | tee "$LOGS/$log"
    return "${PIPESTATUS[0]}"
}
step "smoke test on the host" smoke host

( lock_cache && ensure_base_root ) || die "no Debian 11 root"
step "smoke test in Debian 11" smoke bullseye --root "$BASE_ROOT"

# Bullseye's SQLite 3.34.1, built once from its source package in the build root (at -O0: it
# only has to start), loaded by this machine's Python in place of its own: the start-up check
# must refuse it. (Bullseye's own binary package cannot stand in: it lacks sqlite3_serialize,
# which CPython 3.11's _sqlite3 links; so it is built with SQLITE_ENABLE_DESERIALIZE.)
old_sqlite() {
    local dir=$CACHE/sqlite-3.34 data out rc
    if [[ ! -f $dir/libsqlite3.so.0 ]]; then
        ( lock_cache && ensure_build_root ) || return 1
        rm -rf "$BUILD_ROOT/build/old-sqlite" && mkdir -p "$BUILD_ROOT/build/old-sqlite"
        echo "deb-src $(debian_mirror "") bullseye main" \
            >"$BUILD_ROOT/etc/apt/sources.list.d/bullseye-src.list"
        in_root "$BUILD_ROOT" -- sh -c 'cd /build/old-sqlite && apt-get update -qq \
            && apt-get source -qq sqlite3/bullseye >/dev/null 2>&1 && cd sqlite3-3.34.1 \
            && CFLAGS="-O0 -DSQLITE_ENABLE_FTS5 -DSQLITE_ENABLE_DESERIALIZE" ./configure \
               --enable-fts5 --disable-tcl --disable-static --disable-readline >/dev/null \
            && make -j2 libsqlite3.la >/dev/null 2>&1' || { echo "    cannot build SQLite 3.34"; return 1; }
        mkdir -p "$dir"
        cp -L "$BUILD_ROOT"/build/old-sqlite/sqlite3-3.34.1/.libs/libsqlite3.so.0 "$dir/" || return 1
        rm -rf "$BUILD_ROOT/build/old-sqlite"
    fi
    out=$(LD_LIBRARY_PATH=$dir "$PYTHON" -c 'import sqlite3; print(sqlite3.sqlite_version)')
    echo "    sqlite3.sqlite_version with bullseye's SQLite: $out"
    [[ $out == 3.34.* ]] || { echo "    bullseye's SQLite was not loaded"; return 1; }
    data=$(mktemp -d)
    out=$(LD_LIBRARY_PATH=$dir "$PYTHON" main.py keys create --tenant t --data-dir "$data/d" 2>&1)
    rc=$?
    [[ ! -e $data/d ]] || { echo "    the data directory was created"; rc=99; }
    rm -rf "$data"
    echo "    exit $rc: $out"
    [[ $rc -eq 3 && $out == "pictor: refusing to start: SQLite 3.34."*"lacks INSERT ... RETURNING"* ]]
}
step "refuses to start on SQLite 3.34 (exit 3, with the reason)" old_sqlite

size=$(stat -c %s "$BIN")
gz=$(gzip -9 -c "$BIN" | wc -c)
host_start=$(sed -nE 's/.*start-up median ([0-9.]+)s.*/\1/p' "$LOGS/host")
bullseye_start=$(sed -nE 's/.*start-up median ([0-9.]+)s.*/\1/p' "$LOGS/bullseye")
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
echo "size: $size bytes ($(mb "$size")), gzip -9: $gz bytes ($(mb "$gz"))"
echo "start-up median (exec -> first answer): ${host_start:-?}s on the host, ${bullseye_start:-?}s in Debian 11"
echo "test-binary took $(( $(date +%s) - start ))s"
echo "test-binary: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
