"""Content-addressed blob files under the data directory.

Layout: `blobs/ab/<sha256>` for originals, `derived/ab/<sha256>.<variant>` for thumbnails,
`tmp/` for uploads in flight. A blob is written to a temp file, fsynced, renamed into place
and its directory fsynced before any database row may point at it. User-supplied names never
touch the filesystem: every path is built from a hex digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_VARIANT = re.compile(r"^[a-z0-9]+$")


def _check_digest(sha256: str) -> str:
    if not _HEX64.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class TempBlob:
    """An upload being received: bytes go to a temp file while their hash is computed."""

    path: Path
    _file: BinaryIO = field(repr=False)
    size: int = 0
    head: bytes = b""
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256, repr=False)

    def write(self, data: bytes) -> None:
        """Blocking: run it off the event loop."""
        if len(self.head) < 64:
            self.head += data[: 64 - len(self.head)]
        self._hash.update(data)
        self._file.write(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        """Blocking: flush and fsync the temp file, so a rename publishes durable bytes."""
        f = self._file
        if not f.closed:
            f.flush()
            os.fsync(f.fileno())
            f.close()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class BlobStore:
    """put (via TempBlob + commit), path, delete on content-addressed files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs"
        self.derived_dir = root / "derived"
        self.tmp_dir = root / "tmp"
        for d in (self.root, self.blob_dir, self.derived_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        _check_digest(sha256)
        return self.blob_dir / sha256[:2] / sha256

    def derived_path(self, sha256: str, variant: str) -> Path:
        _check_digest(sha256)
        if not _VARIANT.match(variant):
            raise ValueError(f"bad variant name {variant!r}")
        return self.derived_dir / sha256[:2] / f"{sha256}.{variant}"

    def new_temp(self) -> TempBlob:
        path = self.tmp_dir / f"up-{secrets.token_hex(12)}.part"
        return TempBlob(path=path, _file=open(path, "xb"))

    def commit(self, temp: TempBlob) -> Path:
        """Blocking. Publish a closed temp blob under its digest; the same bytes stored once."""
        dest = self.path(temp.sha256)
        if dest.exists():
            temp.discard()
            return dest
        dest.parent.mkdir(exist_ok=True)
        os.replace(temp.path, dest)
        fsync_dir(dest.parent)
        return dest

    def put_derived(self, sha256: str, variant: str, data: bytes) -> Path:
        """Blocking. Write a derived file (thumbnail) atomically; it can always be remade."""
        dest = self.derived_path(sha256, variant)
        dest.parent.mkdir(exist_ok=True)
        tmp = self.tmp_dir / f"derived-{secrets.token_hex(12)}.part"
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        return dest

    def delete(self, sha256: str) -> None:
        """Blocking. Remove a blob and everything derived from it, derived files first: a
        crash in between then leaves an unused blob, which the start-up sweep removes."""
        for derived in self.derived_path(sha256, "x").parent.glob(f"{sha256}.*"):
            derived.unlink(missing_ok=True)
        self.path(sha256).unlink(missing_ok=True)

    def all_digests(self) -> set[str]:
        return {p.name for p in self.blob_dir.glob("??/*") if p.is_file() and _HEX64.match(p.name)}

    def derived_digests(self) -> set[str]:
        """The digests that derived files (thumbnails) exist for."""
        names = (p.name.partition(".")[0] for p in self.derived_dir.glob("??/*") if p.is_file())
        return {name for name in names if _HEX64.match(name)}

    def drop_derived(self) -> int:
        """Blocking. Remove every derived file (they are remade on demand)."""
        count = 0
        for path in self.derived_dir.glob("??/*"):
            path.unlink(missing_ok=True)
            count += 1
        return count

    def sweep_temp(self) -> int:
        """Blocking. Remove leftovers of uploads that never finished (start-up only)."""
        count = 0
        for p in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                p.unlink()
                count += 1
        return count
