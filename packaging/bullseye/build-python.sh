#!/usr/bin/env bash
# Runs inside the Debian 11 build root (packaging/build.sh copies it to /build and runs it
# chrooted): builds SQLite and CPython 3.11 from bookworm's source packages into /opt/pictor,
# against bullseye's glibc 2.31, so that what PyInstaller bundles from them needs glibc 2.28.
#   - bullseye's own SQLite is 3.34, which lacks RETURNING (the store needs it): bookworm's
#     3.40 is built here, and CPython's _sqlite3 links it;
#   - bullseye's own Python is 3.9: bookworm's 3.11 is built here, with Debian's patches (its
#     security fixes among them);
#   - every C file is compiled with -include glibc228.h (libm symbol pins; see that file), and
#     sem_clockwait (glibc 2.30) is configured out: CPython then waits on locks with
#     sem_timedwait, as it does on every glibc before 2.30.
set -euo pipefail
PREFIX=/opt/pictor
PIN="-include /build/glibc228.h"
JOBS=$(nproc)
cd /build
rm -rf "$PREFIX" pkgs && mkdir -p pkgs && cd pkgs

echo "fetching bookworm's python3.11 and sqlite3 source packages"
apt-get source -qq python3.11 sqlite3 2>&1 | grep -vE "^(NOTICE|Please use|git clone|to retrieve|https://|W: Download is performed unsandboxed)" || true
ls -1 ./*.dsc

echo "building SQLite"
cd sqlite3-*/
# Debian's own options (debian/rules), and FTS5, which the store's search uses.
CFLAGS="-O2 -fno-strict-aliasing $PIN -DSQLITE_SECURE_DELETE -DSQLITE_ENABLE_COLUMN_METADATA \
  -DSQLITE_ENABLE_FTS3 -DSQLITE_ENABLE_FTS3_PARENTHESIS -DSQLITE_ENABLE_FTS5 \
  -DSQLITE_ENABLE_RTREE=1 -DSQLITE_ENABLE_UNLOCK_NOTIFY -DSQLITE_ENABLE_DBSTAT_VTAB \
  -DSQLITE_ENABLE_JSON1 -DSQLITE_LIKE_DOESNT_MATCH_BLOBS -DSQLITE_THREADSAFE=1 \
  -DSQLITE_USE_URI=1 -DSQLITE_MAX_SCHEMA_RETRY=25 -DSQLITE_MAX_VARIABLE_NUMBER=250000" \
  ./configure --prefix="$PREFIX" --enable-threadsafe --enable-fts5 --disable-tcl \
  --disable-static --disable-readline >../sqlite-configure.log 2>&1
make -j"$JOBS" >../sqlite-make.log 2>&1 || { tail -30 ../sqlite-make.log; exit 1; }
make install >../sqlite-install.log 2>&1
cd ..

echo "building CPython"
src=$(echo "$PWD"/python3.11-*/)
mkdir -p python-obj && cd python-obj
# LIBEXPAT_CFLAGS: one of Debian's patches makes pyexpat include CPython's internal headers.
# No ensurepip: Debian's patches disable it (pip runs from its wheel, see build.sh).
"$src/configure" --prefix="$PREFIX" --enable-shared --disable-test-modules \
  --with-system-expat --with-ensurepip=no \
  CFLAGS="$PIN" CPPFLAGS="-I$PREFIX/include" LDFLAGS="-L$PREFIX/lib -Wl,-rpath,$PREFIX/lib" \
  LIBEXPAT_CFLAGS=-DPy_BUILD_CORE_MODULE ac_cv_func_sem_clockwait=no \
  >../python-configure.log 2>&1 || { tail -30 ../python-configure.log; exit 1; }
make -j"$JOBS" >../python-make.log 2>&1 || { tail -30 ../python-make.log; exit 1; }
if grep -A3 -E "Failed to build these modules|were removed because they could not be imported" \
    ../python-make.log; then
    echo "some of CPython's modules did not build (log: pkgs/python-make.log)"; exit 1
fi
make install >../python-install.log 2>&1 || { tail -30 ../python-install.log; exit 1; }
"$PREFIX/bin/python3.11" -c '
import sqlite3, ssl, zlib, pyexpat, _ctypes, sys
print(sys.version.split()[0], "with SQLite", sqlite3.sqlite_version, "and", ssl.OPENSSL_VERSION)'
