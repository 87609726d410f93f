#!/usr/bin/env bash
# Smoke test of the one-file executable (what `make test-binary` runs, on the host and in a
# Debian 11 root):
#   bash packaging/smoke_test.sh [--root DIR] [path/to/pictor]   (default: dist/pictor)
# The binary runs from an empty temporary directory under `env -i PATH=/usr/bin:/bin`: no
# virtualenv, no source tree, a private TMPDIR so we can see its extraction directory go away.
# With --root DIR (as root) it runs chrooted into DIR, a root file system such as a Debian 11
# debootstrap, with /proc mounted in a mount namespace of its own (gone when it exits); the
# network is the host's, so the checks, run from the host, talk to it on 127.0.0.1.
# Only the test images are made beforehand with a Python that has Pillow ($PYTHON, default
# .venv/bin/python). SMOKE_STARTS (default 5) sets how many restarts the start-up time median
# is taken over; SMOKE_MAX_START_S (default 1.0) is the limit it must meet.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CHROOT=
if [[ ${1:-} == --root ]]; then CHROOT=$(realpath "$2"); shift 2; fi
BIN=$(realpath -m "${1:-dist/pictor}")
PYTHON=${PYTHON:-}
if [[ -z $PYTHON ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=$PWD/.venv/bin/python; else PYTHON=python3; fi
fi
STARTS=${SMOKE_STARTS:-5}
MAX_START=${SMOKE_MAX_START_S:-1.0}

die() { echo "smoke_test.sh: $*" >&2; exit 2; }
[[ -x $BIN ]] || die "$BIN not found; build it first: make binary"
stale=$(find main.py appliance static -newer "$BIN" -type f 2>/dev/null | head -3 | tr "\n" " ")
[[ -z $stale ]] || echo "warning: $BIN is older than: $stale(run make binary)" >&2
VERSION=$(sed -nE 's/^__version__ = "(.*)"/\1/p' appliance/__init__.py)
[[ -n $VERSION ]] || die "cannot read __version__ from appliance/__init__.py"

if [[ -n $CHROOT ]]; then
    [[ -x $CHROOT/bin/sh ]] || die "$CHROOT is not a root file system"
    WORK=$(mktemp -d "$CHROOT/tmp/pictor-smoke.XXXXXX")
    IN=${WORK#"$CHROOT"}  # the same folder, as the chrooted binary sees it
    # shellcheck disable=SC2016
    RUNNER=(unshare --mount --propagation private bash -c
        'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' "$CHROOT")
    WHERE="in $CHROOT ($(cat "$CHROOT/etc/debian_version" 2>/dev/null || echo "?"))"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/pictor-smoke.XXXXXX")
    IN=$WORK
    RUNNER=()
    WHERE="on the host"
fi
RUN=$WORK/run      # the binary's cwd: the copy of the binary, and ./data
XTMP=$WORK/tmp     # the binary's TMPDIR: where it extracts itself
FIX=$WORK/fixtures # test images, made outside the binary's run
mkdir -p "$RUN" "$XTMP" "$FIX" "$WORK/home"
cp "$BIN" "$RUN/pictor"
echo "smoke test of $BIN $WHERE"

PID=
cleanup() { # a server still running (a failed check): kill it and the app it unpacked
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
        local children; children=$(cat /proc/"$PID"/task/*/children 2>/dev/null)
        # shellcheck disable=SC2086
        kill -KILL "$PID" $children 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { # check DESCRIPTION COMMAND...: one counted check
    local what=$1; shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}
finish() {
    echo "binary smoke: $passed passed, $failed failed"
    [[ $failed -eq 0 && $passed -gt 0 ]] && exit 0 || exit 1
}

# in_env COMMAND...: exec COMMAND as a user would run the binary: clean environment, cwd $RUN
# (chrooted with --root).
in_env() {
    exec "${RUNNER[@]}" env -i -C "$IN/run" PATH=/usr/bin:/bin HOME="$IN/home" TMPDIR="$IN/tmp" "$@"
}
pictor() {
    (in_env ./pictor "$@")
}

now() { date +%s%N; }
# start_server LOG ARGS...: start `pictor serve` in the background, set PID, wait until the
# port answers HTTP; sets START_S to the time from exec to the first answer.
start_server() {
    local log=$1; shift
    local t0; t0=$(now)
    (in_env "$@") >"$log" 2>&1 &
    PID=$!  # a subshell that execs, through the chroot, into the binary: the bootloader's pid
    local deadline=$(( t0 + 30000000000 ))
    until curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/"; do
        if ! kill -0 "$PID" 2>/dev/null; then echo "server exited early:"; cat "$log"; return 1; fi
        (( $(now) < deadline )) || { echo "server did not answer in 30 s:"; cat "$log"; return 1; }
        sleep 0.01
    done
    START_S=$(awk -v ns=$(( $(now) - t0 )) 'BEGIN { printf "%.3f", ns / 1e9 }')
}
# stop_server: SIGTERM, wait (10 s at most); returns the exit status.
stop_server() {
    kill -TERM "$PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$PID" 2>/dev/null; then
        echo "still running 10 s after SIGTERM"; kill -KILL "$PID"; wait "$PID"; PID=; return 1
    fi
    wait "$PID"; local rc=$?; PID=
    [[ $rc -eq 0 ]] || echo "exit status after SIGTERM: $rc"
    return $rc
}
no_extraction_left() {
    local left; left=$(find "$XTMP" -maxdepth 1 -name '_MEI*')
    [[ -z $left ]] || { echo "left behind: $left"; return 1; }
}

# --- fixtures ---------------------------------------------------------------------------
"$PYTHON" - "$FIX" <<'EOF' || die "cannot make test images with $PYTHON (needs Pillow)"
import sys
from pathlib import Path
from PIL import Image

out = Path(sys.argv[1])
img = Image.new("RGB", (640, 400))
img.putdata([(x % 256, y % 256, (x * y) % 256) for y in range(400) for x in range(640)])
img.save(out / "photo.jpg", quality=85)
img.convert("RGBA").resize((500, 500)).save(out / "logo.png")
frames = [Image.new("P", (400, 300), i * 40) for i in range(4)]
frames[0].save(out / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
img.save(out / "banner.webp", quality=80)
EOF
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT

# --- first start: empty data dir, prints the key and the gallery URL --------------------
if start_server "$WORK/first.log" ./pictor serve --port "$PORT"; then
    ok "first start answers on :$PORT in ${START_S}s"
else
    bad "first start"; finish
fi
# The key is printed once on first start; it may come just after the port opens.
KEY=
for _ in $(seq 50); do
    KEY=$(grep -oE '(^|[^[:alnum:]_])pk_[A-Za-z0-9_-]{16,}' "$WORK/first.log" | head -1 | grep -oE 'pk_.*')
    [[ -n $KEY ]] && break
    sleep 0.1
done
check "first start prints an API key and the gallery URL" \
    bash -c '[[ -n $1 ]] && grep -q "http://127.0.0.1:$2" "$3" || { cat "$3"; false; }' _ "$KEY" "$PORT" "$WORK/first.log"
check "data dir ./data created relative to cwd" test -d "$RUN/data"

# pyvips must run in API mode on the libvips inside the bundle: the child process (the
# bootloader's parent only unpacks and waits) maps _libvips and libvips from the _MEI dir.
libvips_from_bundle() {
    local child maps
    child=$(cat /proc/"$PID"/task/*/children 2>/dev/null | awk '{print $1}')
    [[ -n $child ]] || { echo "no child process of $PID"; return 1; }
    maps=$(awk '$6 ~ /vips/ { print $6 }' /proc/"$child"/maps | sort -u)
    echo "$maps" | sed 's/^/    /'
    grep -qE "^$XTMP/_MEI[^/]+/_libvips\.abi3\.so$" <<<"$maps" || { echo "_libvips (API mode) not loaded from the bundle"; return 1; }
    grep -qE "^$XTMP/_MEI[^/]+/(.*/)?libvips-[0-9a-f]+\.so\.42$" <<<"$maps" || { echo "bundled libvips not loaded"; return 1; }
    ! grep -vqE "^$XTMP/_MEI" <<<"$maps" || { echo "a libvips from outside the bundle is loaded"; return 1; }
}
check "pyvips API mode on the bundled libvips (/proc/PID/maps)" libvips_from_bundle

# --- uploads, originals, thumbnails -----------------------------------------------------
upload() { # upload FILE -> prints the id
    local code
    code=$(curl -s -o "$WORK/upload.json" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
        -F "file=@$1" "$BASE/v3/images")
    [[ $code == 201 ]] || { echo "status $code: $(cat "$WORK/upload.json")" >&2; return 1; }
    sed -nE 's/.*"id": *"([^"]+)".*/\1/p' "$WORK/upload.json"
}
original_exact() {
    curl -sf -o "$WORK/got" "$BASE/i/$2" && cmp "$1" "$WORK/got"
}
thumbnail_ok() { # thumbnail_ok ID TYPE: a thumbnail in the original's format (libvips saves it)
    local ctype
    ctype=$(curl -sf -o "$WORK/thumb" -w '%{content_type}' "$BASE/i/$1?variant=thumbnail") \
        || { echo "thumbnail request failed"; return 1; }
    [[ $ctype == "$2" ]] || { echo "content type '$ctype', not $2"; return 1; }
    [[ $(file -b --mime-type "$WORK/thumb") == "$2" ]] || { echo "body is: $(file -b "$WORK/thumb")"; return 1; }
}
declare -A IDS
declare -A TYPES=([photo.jpg]=image/jpeg [logo.png]=image/png [anim.gif]=image/gif [banner.webp]=image/webp)
for f in photo.jpg logo.png anim.gif banner.webp; do
    id=$(upload "$FIX/$f")
    if [[ -n $id ]]; then ok "upload $f -> 201 $id"; IDS[$f]=$id; else bad "upload $f"; continue; fi
    check "GET /i/{id} of $f is byte-exact" original_exact "$FIX/$f" "$id"
    check "GET /i/{id}?variant=thumbnail of $f is ${TYPES[$f]}" thumbnail_ok "$id" "${TYPES[$f]}"
done

# --- the gallery ------------------------------------------------------------------------
for path in / /static/app.js /static/app.css; do
    check "GET $path -> 200" bash -c '[[ $(curl -s -o /dev/null -w "%{http_code}" "$1") == 200 ]]' _ "$BASE$path"
done

# --- shutdown ---------------------------------------------------------------------------
check "SIGTERM exits 0" stop_server
check "no _MEI* extraction dir left after SIGTERM" no_extraction_left

# --- other commands ---------------------------------------------------------------------
version_ok() {
    local out; out=$(pictor --version 2>&1) || { echo "$out"; return 1; }
    echo "    $out"; [[ $out == *"$VERSION"* ]]
}
check "--version prints $VERSION" version_ok
keys_create() {
    local out; out=$(pictor keys create --tenant smoke --data-dir ./data) || return 1
    tail -n1 <<<"$out" | grep -qE '^pk_[A-Za-z0-9_-]{16,}$' || { echo "last line: $(tail -n1 <<<"$out")"; return 1; }
    KEY2=$(tail -n1 <<<"$out")
}
check "keys create prints the new key on the last line" keys_create

# --- restarts: settings from the environment, data kept, start-up time ------------------
times=()
for i in $(seq "$STARTS"); do
    if ! start_server "$WORK/restart.log" PICTOR_PORT="$PORT" ./pictor serve; then
        bad "restart $i (port from PICTOR_PORT)"; finish
    fi
    times+=("$START_S")
    if [[ $i -eq 1 ]]; then
        check "restart: no new key printed" bash -c '! grep -q "pk_" "$1"' _ "$WORK/restart.log"
        check "restart: photo.jpg still served byte-exact" original_exact "$FIX/photo.jpg" "${IDS[photo.jpg]:-none}"
        check "restart: key from keys create is accepted" bash -c \
            '[[ $(curl -s -o /dev/null -w "%{http_code}" -H "Authorization: Bearer $1" "$2/v3/images") == 200 ]]' \
            _ "${KEY2:-none}" "$BASE"
    fi
    stop_server >/dev/null || { bad "restart $i: SIGTERM exit"; }
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
check "start-up (exec -> port answers) median of $STARTS: ${median}s <= ${MAX_START}s [${times[*]}]" \
    awk -v m="$median" -v max="$MAX_START" 'BEGIN { exit !(m <= max) }'
check "no _MEI* extraction dir left after all runs" no_extraction_left
echo "binary: $(stat -c %s "$BIN") bytes; start-up median ${median}s $WHERE"
finish
