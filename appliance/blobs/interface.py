"""What every blob store offers: content-addressed originals and the files derived from them.

An original is stored under the SHA-256 of its bytes, a derived file (a thumbnail, a width or
format variant) under that digest and a variant name. User-supplied names never reach a store:
every key is built from a hex digest and a name matching `VARIANT_RE`. All I/O is async; an
implementation never blocks the event loop.

Uploads arrive in a `TempBlob`, a scratch file on this node, while their digest is computed;
`put` then makes them durable in the store. A store that cannot be reached raises
`StorageUnavailable` (503), within a bounded time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
VARIANT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def check_digest(sha256: str) -> str:
    if not _HEX64.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def check_variant(variant: str) -> str:
    if not VARIANT_RE.match(variant):
        raise ValueError(f"bad variant name {variant!r}")
    return variant


def is_digest(name: str) -> bool:
    return bool(_HEX64.match(name))


class BlobNotFound(FileNotFoundError):
    """The store has no object under that key."""


@dataclass(frozen=True)
class StoredBlob:
    """One object in a store, as its listing shows it (for sweeps and migration)."""

    sha256: str
    variant: str | None  # None: the original
    size: int
    modified: float  # seconds since the epoch


@dataclass
class TempBlob:
    """An upload being received: bytes go to a scratch file while their hash is computed."""

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
        """Blocking: flush and fsync the scratch file, so what is published is durable."""
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


def empty_directory(path: Path) -> int:
    """Blocking. Remove the files directly in `path` (a node's scratch leftovers)."""
    count = 0
    for p in path.iterdir():
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            p.unlink()
            count += 1
    return count


class BlobReader(Protocol):
    """An open object, read forwards from where it was opened."""

    size: int  # the whole object's size, whatever offset it was opened at

    async def read(self, n: int) -> bytes:
        """Up to n next bytes; b"" at the end."""
        ...

    async def close(self) -> None: ...


class BlobStore(Protocol):
    scratch: Path  # this node's scratch directory: uploads in flight, downloaded sources
    # Whether a reader already open keeps reading an object deleted meanwhile (an open file
    # does; an object store's next ranged GET does not): if not, the library removes unused
    # originals only after a delay, so that streams in flight on any node finish.
    readers_survive_delete: bool

    def new_temp(self) -> TempBlob:
        """A scratch file to receive an upload into (blocking, but only an open())."""
        ...

    async def put(self, temp: TempBlob) -> None:
        """Make a closed temp blob durable under its digest before returning. Idempotent;
        the temp file stays the caller's to discard."""
        ...

    async def exists(self, sha256: str) -> bool: ...

    async def open(self, sha256: str, variant: str | None = None, start: int = 0) -> BlobReader:
        """Raises BlobNotFound."""
        ...

    async def read(self, sha256: str, variant: str | None = None) -> bytes:
        """A whole (small) object. Raises BlobNotFound."""
        ...

    async def put_derived(self, sha256: str, variant: str, data: bytes) -> None:
        """Store a derived file durably; it can always be remade from its original."""
        ...

    async def delete(self, sha256: str) -> None:
        """Remove an original and everything derived from it, derived files first (a crash
        in between leaves an unused original, which a sweep removes). Idempotent."""
        ...

    async def delete_derived(self, sha256: str, variant: str) -> None: ...

    async def drop_derived(self) -> int:
        """Remove every derived file (they are remade on demand); returns how many."""
        ...

    async def list_blobs(self) -> list[StoredBlob]: ...

    def source_file(self, sha256: str) -> AbstractAsyncContextManager[str]:
        """A local path to the original that pyvips can read, for as long as the context
        lasts. Raises BlobNotFound."""
        ...

    async def sweep_scratch(self) -> int:
        """Remove leftovers of uploads that never finished (start-up only)."""
        ...

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the store answers (readiness)."""
        ...

    async def close(self) -> None: ...


async def read_all(reader: BlobReader, chunk: int = 1 << 20) -> AsyncIterator[bytes]:
    """Every remaining chunk of an open object (closes it at the end)."""
    try:
        while data := await reader.read(chunk):
            yield data
    finally:
        await reader.close()
