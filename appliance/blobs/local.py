"""The default blob store: content-addressed files under the data directory.

Layout: `blobs/ab/<sha256>` for originals, `derived/ab/<sha256>.<variant>` for thumbnails and
other representations, `tmp/` for uploads in flight. A blob is fsynced, linked into place and
its directory fsynced before `put` returns, so no database row can point at bytes a crash
could lose. Every path is built from a hex digest and a checked variant name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import BinaryIO, TypeVar

from appliance.blobs.interface import (
    BlobNotFound,
    StoredBlob,
    TempBlob,
    check_digest,
    check_variant,
    empty_directory,
    is_digest,
)
from appliance.errors import StorageUnavailable

T = TypeVar("T")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_at(path: Path, offset: int) -> tuple[BinaryIO, int]:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the reader
    except FileNotFoundError:
        raise BlobNotFound(str(path)) from None
    size = os.fstat(f.fileno()).st_size
    f.seek(offset)
    return f, size


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BlobNotFound(str(path)) from None


class _FileReader:
    """An open file: a delete meanwhile cannot change what it reads."""

    def __init__(self, store: LocalBlobStore, f: BinaryIO, size: int) -> None:
        self._store = store
        self._file = f
        self.size = size

    async def read(self, n: int) -> bytes:
        return await self._store._run(self._file.read, n)

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


class LocalBlobStore:
    readers_survive_delete = True  # an open file outlives its unlink
    def __init__(self, root: Path, executor: Executor | None = None) -> None:
        """Blocking (creates the directories); `executor` runs the file I/O."""
        self.root = root
        self.blob_dir = root / "blobs"
        self.derived_dir = root / "derived"
        self.scratch = root / "tmp"
        self._executor = executor
        for d in (self.root, self.blob_dir, self.derived_dir, self.scratch):
            d.mkdir(parents=True, exist_ok=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- paths (also used by the admin tools, which work on files directly) -------------

    def path(self, sha256: str) -> Path:
        check_digest(sha256)
        return self.blob_dir / sha256[:2] / sha256

    def derived_path(self, sha256: str, variant: str) -> Path:
        check_digest(sha256)
        check_variant(variant)
        return self.derived_dir / sha256[:2] / f"{sha256}.{variant}"

    def _key_path(self, sha256: str, variant: str | None) -> Path:
        return self.path(sha256) if variant is None else self.derived_path(sha256, variant)

    # -- the BlobStore interface --------------------------------------------------------

    def new_temp(self) -> TempBlob:
        path = self.scratch / f"up-{secrets.token_hex(12)}.part"
        return TempBlob(path=path, _file=open(path, "xb"))

    def _put(self, temp: TempBlob) -> None:
        dest = self.path(temp.sha256)
        if dest.exists():
            return
        dest.parent.mkdir(exist_ok=True)
        # A hard link publishes the fsynced temp file atomically and never replaces a file
        # already there (the same bytes, put by a concurrent upload).
        with contextlib.suppress(FileExistsError):
            os.link(temp.path, dest)
        fsync_dir(dest.parent)

    async def put(self, temp: TempBlob) -> None:
        await self._run(self._put, temp)

    async def exists(self, sha256: str) -> bool:
        return await self._run(self.path(sha256).is_file)

    async def open(self, sha256: str, variant: str | None = None, start: int = 0) -> _FileReader:
        f, size = await self._run(_open_at, self._key_path(sha256, variant), start)
        return _FileReader(self, f, size)

    async def read(self, sha256: str, variant: str | None = None) -> bytes:
        return await self._run(_read_file, self._key_path(sha256, variant))

    def _put_derived(self, sha256: str, variant: str, data: bytes) -> None:
        dest = self.derived_path(sha256, variant)
        dest.parent.mkdir(exist_ok=True)
        tmp = self.scratch / f"derived-{secrets.token_hex(12)}.part"
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)

    async def put_derived(self, sha256: str, variant: str, data: bytes) -> None:
        await self._run(self._put_derived, sha256, variant, data)

    def _delete(self, sha256: str) -> None:
        for derived in self.derived_path(sha256, "x").parent.glob(f"{sha256}.*"):
            derived.unlink(missing_ok=True)
        self.path(sha256).unlink(missing_ok=True)

    async def delete(self, sha256: str) -> None:
        await self._run(self._delete, sha256)

    async def delete_derived(self, sha256: str, variant: str) -> None:
        await self._run(self.derived_path(sha256, variant).unlink, True)

    def _drop_derived(self) -> int:
        count = 0
        for path in self.derived_dir.glob("??/*"):
            path.unlink(missing_ok=True)
            count += 1
        return count

    async def drop_derived(self) -> int:
        return await self._run(self._drop_derived)

    def _list(self) -> list[StoredBlob]:
        found: list[StoredBlob] = []
        for directory, derived in ((self.blob_dir, False), (self.derived_dir, True)):
            for p in directory.glob("??/*"):
                sha, _, variant = p.name.partition(".")
                if not is_digest(sha) or derived != bool(variant):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    st = p.stat()
                    found.append(StoredBlob(sha, variant or None, st.st_size, st.st_mtime))
        return found

    async def list_blobs(self) -> list[StoredBlob]:
        return await self._run(self._list)

    @contextlib.asynccontextmanager
    async def source_file(self, sha256: str) -> AsyncIterator[str]:
        path = self.path(sha256)
        if not await self._run(path.is_file):
            raise BlobNotFound(str(path))
        yield str(path)

    async def sweep_scratch(self) -> int:
        return await self._run(empty_directory, self.scratch)

    async def ping(self) -> None:
        try:
            await self._run(self._probe)
        except OSError as exc:
            raise StorageUnavailable(
                f"The blob directory does not answer: {exc.strerror or exc}."
            ) from exc

    def _probe(self) -> None:
        """The directories are there and the data directory takes a write (one remounted
        read-only, or gone, fails here). A probe left by a crash is swept at start."""
        for directory in (self.blob_dir, self.derived_dir):
            os.stat(directory)
        probe = self.scratch / f"ready-{secrets.token_hex(6)}.probe"
        probe.write_bytes(b"ok")
        probe.unlink()

    async def close(self) -> None:
        return None
