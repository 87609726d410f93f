#!/usr/bin/env bash
# Build the one-file executable dist/pictor from packaging/pictor.spec.
#   bash packaging/build.sh          (what `make binary` runs; as root)
#
# It is built inside a Debian 11 root (glibc 2.31), on a CPython and an SQLite built there,
# so that it runs on glibc 2.28 and later (RHEL 8, Debian 11, Ubuntu 20.04 and everything
# newer), which a build on this machine's glibc would not. packaging/bullseye/lib.sh makes and
# caches the root (first build on a machine: about 8 minutes; after that: about a minute).
# The wheels come from this machine's pip (pip inside the root has no working TLS here), at
# the versions .venv has, so the executable runs exactly the code the tests ran.
#
# PYTHON (default: .venv/bin/python) is the host interpreter that downloads the wheels and
# checks the result; it needs the dev dependencies (pip install -e '.[dev]').
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=packaging/bullseye/lib.sh
source packaging/bullseye/lib.sh

PYTHON=${PYTHON:-}
if [[ -z $PYTHON ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

[[ -f main.py ]] || die "main.py not found in $ROOT"
[[ -d static ]] || die "static/ not found in $ROOT"
[[ $(id -u) -eq 0 ]] || die "must run as root (it builds in a chroot)"
"$PYTHON" -c 'import PyInstaller' 2>/dev/null \
    || die "$PYTHON has no PyInstaller; run: $PYTHON -m pip install -e '.[dev]'"
# The spec excludes Pillow from the bundle (the appliance images with pyvips only).
if grep -rqE '^\s*(import PIL|from PIL)' --include='*.py' appliance main.py; then
    die "appliance imports PIL, but packaging/pictor.spec excludes it; remove \"PIL\" from excludes"
fi

start=$(date +%s)
lock_cache
ensure_build_root

# --- CPython and SQLite, built once per version of the recipe ------------------------------
recipe=$(cat packaging/bullseye/build-python.sh packaging/bullseye/glibc228.h | sha256sum | cut -c1-16)
if [[ $(cat "$BUILD_ROOT/opt/pictor/.recipe" 2>/dev/null) != "$recipe" ]]; then
    note "building SQLite and CPython in the Debian 11 root (about 5 minutes)"
    mkdir -p "$BUILD_ROOT/build"
    cp packaging/bullseye/build-python.sh packaging/bullseye/glibc228.h "$BUILD_ROOT/build/"
    in_root "$BUILD_ROOT" -- bash /build/build-python.sh >&2 \
        || die "building CPython failed (logs: $BUILD_ROOT/build/pkgs/*.log)"
    echo "$recipe" >"$BUILD_ROOT/opt/pictor/.recipe"
fi

# --- the wheels: the runtime dependencies and PyInstaller, as pinned in .venv ---------------
note "collecting wheels"
W=$BUILD_ROOT/build/wheels
rm -rf "$W" && mkdir -p "$W"
"$PYTHON" - >"$W/requirements.txt" <<'EOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
dev = project["optional-dependencies"]["dev"]
print("\n".join(project["dependencies"] + [d for d in dev if d.startswith("pyinstaller")]))
EOF
"$PYTHON" -m pip freeze --all --exclude-editable 2>/dev/null | grep -vE '^(-e |pictor)' \
    >"$W/constraints.txt"
pip_quiet() { # pip, without its warnings about this machine's extra index folders (pipefail
    # keeps pip's exit status)
    "$PYTHON" -m pip "$@" -q --disable-pip-version-check 2>&1 | { grep -v "is ignored" || true; }
}
# pyvips is published as source only (it is pure Python): make its wheel here.
pip_quiet wheel --no-deps -w "$W" -c "$W/constraints.txt" "$(grep -E '^pyvips==' "$W/requirements.txt")"
# Wheels for the build root's platform: manylinux up to 2.28, CPython 3.11.
pip_quiet download -d "$W" --only-binary=:all: --find-links "$W" \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --python-version 3.11 --implementation cp \
    --abi cp311 --abi abi3 --abi none \
    -c "$W/constraints.txt" -r "$W/requirements.txt"
for want in $(sed -E 's/[=<>;].*//; s/[-_.]+/_/g' "$W/requirements.txt"); do
    ls "$W" | sed -E 's/[-_.]+/_/g' | grep -qi "^${want}_" || die "no wheel for $want in $W"
done

# --- PyInstaller inside the root, on the source tree mounted read-only ----------------------
note "installing the wheels and running PyInstaller in the Debian 11 root"
rm -rf "$BUILD_ROOT/build/site" "$BUILD_ROOT/build/dist" "$BUILD_ROOT/build/pyinstaller"
# Debian's patches disable ensurepip, so pip runs from the wheel CPython ships.
pip_wheel=$(cd "$BUILD_ROOT" && ls opt/pictor/lib/python3.11/ensurepip/_bundled/pip-*.whl)
in_root "$BUILD_ROOT" -- env -i PATH=/usr/bin:/bin HOME=/root PYTHONPATH="/$pip_wheel" \
    /opt/pictor/bin/python3.11 -m pip install -q --no-index --find-links /build/wheels \
    --target /build/site -c /build/wheels/constraints.txt -r /build/wheels/requirements.txt \
    2>&1 | { grep -vE "Running pip as the 'root' user" >&2 || true; } \
    || die "the wheels did not install in the root"
[[ -d $BUILD_ROOT/build/site/PyInstaller ]] || die "no PyInstaller in the root's wheels"
# The bundle must run pyvips in API mode on pyvips-binary's libvips; fail early if it cannot.
in_root "$BUILD_ROOT" -- env -i PYTHONPATH=/build/site /opt/pictor/bin/python3.11 -c \
    'import pyvips, sys; sys.exit(0 if pyvips.API_mode else 1)' \
    || die "pyvips is not in API mode in the build root (is pyvips-binary's wheel there?)"
in_root "$BUILD_ROOT" --bind-ro "$ROOT" /src -- env -i PATH=/usr/bin:/bin HOME=/root \
    PYTHONPATH=/build/site PYTHONDONTWRITEBYTECODE=1 sh -c 'cd /src && exec \
    /opt/pictor/bin/python3.11 -m PyInstaller --noconfirm --log-level WARN \
    --distpath /build/dist --workpath /build/pyinstaller packaging/pictor.spec' >&2
mkdir -p dist
cp "$BUILD_ROOT/build/dist/pictor" dist/pictor.tmp && mv dist/pictor.tmp dist/pictor
elapsed=$(( $(date +%s) - start ))

# --- check what went in -------------------------------------------------------------------
contents=$("$PYTHON" -m PyInstaller.utils.cliutils.archive_viewer --list --brief dist/pictor)
for want in '_libvips\.abi3\.so' 'libvips-[0-9a-f]*\.so\.42' 'static/' 'libsqlite3\.so' \
    'asyncpg/protocol/protocol\.' ; do
    grep -qE "$want" <<<"$contents" || die "dist/pictor lacks $want"
done
size=$(stat -c %s dist/pictor)
echo "built dist/pictor: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1e6 }') MB) in ${elapsed}s"
