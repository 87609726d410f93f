#!/usr/bin/env bash
# Build the one-file executable dist/pictor from packaging/pictor.spec.
#   bash packaging/build.sh          (what `make binary` runs)
# PYTHON picks the interpreter (default: .venv/bin/python, else python3); it needs the
# runtime dependencies and pyinstaller installed (pip install -e '.[dev]').
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

PYTHON=${PYTHON:-}
if [[ -z $PYTHON ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

die() { echo "build.sh: $*" >&2; exit 1; }

[[ -f main.py ]] || die "main.py not found in $ROOT"
[[ -d static ]] || die "static/ not found in $ROOT"
"$PYTHON" -c 'import PyInstaller' 2>/dev/null \
    || die "$PYTHON has no PyInstaller; run: $PYTHON -m pip install -e '.[dev]'"
# The spec excludes Pillow from the bundle (the appliance images with pyvips only).
if grep -rqE '^\s*(import PIL|from PIL)' --include='*.py' appliance main.py; then
    die "appliance imports PIL, but packaging/pictor.spec excludes it; remove \"PIL\" from excludes"
fi
# The bundle must run pyvips in API mode on pyvips-binary's libvips; fail early if the
# build environment cannot.
"$PYTHON" -c 'import pyvips, sys; sys.exit(0 if pyvips.API_mode else 1)' \
    || die "pyvips is not in API mode in $PYTHON (is pyvips-binary installed?)"

start=$(date +%s)
"$PYTHON" -m PyInstaller --noconfirm --log-level WARN \
    --distpath dist --workpath build/pyinstaller packaging/pictor.spec
elapsed=$(( $(date +%s) - start ))

# Check that what pyvips needs made it into the archive.
contents=$("$PYTHON" -m PyInstaller.utils.cliutils.archive_viewer --list --brief dist/pictor)
for want in '_libvips\.abi3\.so' 'libvips-[0-9a-f]*\.so\.42' 'static/'; do
    grep -qE "$want" <<<"$contents" || die "dist/pictor lacks $want"
done

size=$(stat -c %s dist/pictor)
echo "built dist/pictor: $size bytes ($(( size / 1048576 )) MiB) in ${elapsed}s"
