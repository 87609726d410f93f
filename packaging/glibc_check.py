"""Which glibc the one-file executable needs, read from the files themselves.

    python packaging/glibc_check.py dist/pictor [--max 2.28]

Reads the bootloader (the executable's own ELF header) and every ELF file inside its archive
(PyInstaller's CArchive: libpython, extension modules, bundled libraries), and from each its
version needs (`.gnu.version_r`, what `readelf -V` shows) and DT_NEEDED entries. Prints the
highest GLIBC_x.y each file class needs, and exits 1 if any file needs a glibc newer than --max,
or needs a library that is neither inside the bundle nor part of glibc (a system library the
target machine may not have). Needs PyInstaller importable (the project's .venv has it).
"""

from __future__ import annotations

import argparse
import re
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

# The libraries glibc itself provides: every glibc system has them, at its own version.
GLIBC_LIBS = {
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
    "libresolv.so.2",
    "ld-linux-x86-64.so.2",
}
SHT_DYNAMIC = 6
SHT_GNU_VERNEED = 0x6FFFFFFE
DT_NEEDED = 1


def _cstr(data: bytes, offset: int) -> str:
    return data[offset : data.index(b"\0", offset)].decode()


def elf_needs(data: bytes) -> tuple[list[str], dict[str, set[str]]]:
    """(DT_NEEDED libraries, {library: version names needed from it}) of a 64-bit ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    needed: list[str] = []
    versions: dict[str, set[str]] = {}
    for _name, sh_type, _flags, _addr, off, size, link, info, _align, entsize in sections:
        strtab_off = sections[link][4] if link < len(sections) else 0
        if sh_type == SHT_DYNAMIC:
            for pos in range(off, off + size, entsize or 16):
                tag, val = struct.unpack_from("<qQ", data, pos)
                if tag == 0:
                    break
                if tag == DT_NEEDED:
                    needed.append(_cstr(data, strtab_off + val))
        elif sh_type == SHT_GNU_VERNEED:
            pos = off
            for _ in range(info):  # sh_info: the number of Verneed entries
                _ver, cnt, file_, aux, nxt = struct.unpack_from("<HHIII", data, pos)
                names = versions.setdefault(_cstr(data, strtab_off + file_), set())
                apos = pos + aux
                for _ in range(cnt):
                    _hash, _flags2, _other, name, anext = struct.unpack_from("<IHHII", data, apos)
                    names.add(_cstr(data, strtab_off + name))
                    apos += anext
                pos += nxt
    return needed, versions


def glibc_version(names: set[str]) -> tuple[int, ...]:
    found = [
        tuple(int(p) for p in m.group(1).split("."))
        for n in names
        if (m := re.fullmatch(r"GLIBC_(\d+(?:\.\d+)*)", n))
    ]
    return max(found, default=(0,))


def file_class(name: str) -> str:
    if name == "(bootloader)":
        return "bootloader (PyInstaller)"
    if name.startswith("libpython") or "/lib-dynload/" in name:
        return "CPython (libpython, stdlib extension modules)"
    if name.startswith("libsqlite3"):
        return "SQLite"
    if "/" in name or ".cpython-" in name or name.endswith(".abi3.so") or "-" in name:
        return "wheels (libvips, asyncpg, cffi, tornado)"
    return "system libraries (libstdc++, libgcc_s, OpenSSL, zlib, ...)"


def bundled_elves(exe: Path) -> Iterator[tuple[str, bytes]]:
    from PyInstaller.archive.readers import CArchiveReader

    yield "(bootloader)", exe.read_bytes()
    archive = CArchiveReader(str(exe))
    for name in sorted(archive.toc):
        data = archive.extract(name)
        if data and data[:4] == b"\x7fELF":
            yield name, data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exe", type=Path)
    parser.add_argument("--max", default="2.28", help="newest glibc allowed (default 2.28)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per file")
    args = parser.parse_args()
    limit = tuple(int(p) for p in args.max.split("."))

    files = list(bundled_elves(args.exe))
    names = {Path(n).name for n, _ in files} | {n for n, _ in files}
    problems: list[str] = []
    by_class: dict[str, tuple[tuple[int, ...], str]] = {}
    for name, data in files:
        needed, versions = elf_needs(data)
        glibc = glibc_version(set().union(*versions.values()) if versions else set())
        if args.verbose:
            print(f"  GLIBC_{'.'.join(map(str, glibc)):<6} {name}")
        cls = file_class(name)
        if glibc > by_class.get(cls, ((0,), ""))[0]:
            by_class[cls] = (glibc, name)
        if glibc > limit:
            newer = sorted(
                v
                for vs in versions.values()
                for v in vs
                if v.startswith("GLIBC_") and glibc_version({v}) > limit
            )
            problems.append(f"{name} needs {', '.join(newer)}")
        for lib in needed:
            if lib not in GLIBC_LIBS and lib not in names:
                problems.append(f"{name} needs {lib}, which is neither bundled nor part of glibc")
    print(f"glibc needed by the {len(files)} ELF files in {args.exe} (at most {args.max} allowed):")
    for cls, (glibc, name) in sorted(by_class.items()):
        print(f"  {cls:<62} GLIBC_{'.'.join(map(str, glibc)):<6} ({name})")
    for problem in problems:
        print(f"FAIL {problem}")
    overall = max(g for g, _ in by_class.values())
    print(f"glibc check: highest GLIBC_{'.'.join(map(str, overall))}, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
