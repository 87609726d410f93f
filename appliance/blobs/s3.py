"""Blobs in any S3-compatible object store (`--blob-store s3://BUCKET[/PREFIX]`).

Layout, beside the directory store's: `PREFIX/blobs/ab/<sha256>` for originals and
`PREFIX/derived/ab/<sha256>.<variant>` for thumbnails and other representations. Keys are
content addresses, so an object never changes once written: two nodes putting the same bytes
write the same object (`If-None-Match: *` where the store has it), and ranged reads of one
object always agree. Uploads arrive in this node's scratch directory; `put` streams the file
with its digest signed as the payload hash, and the object is durable once the store answers
200. A read is one GET from the offset (`Range: bytes=N-`), its body received only as fast
as the reader takes it (TCP back-pressure), so memory stays bounded whatever the size.

Errors: a missing object is `BlobNotFound`; an unreachable, hung or refusing store is
`StorageUnavailable` (503) within the client's bounded timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
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
from appliance.blobs.s3client import ObjectNotFound, ObjectStream, S3Client, S3Config, S3Error
from appliance.errors import StorageUnavailable

T = TypeVar("T")
CHUNK = 1024 * 1024  # what `read` and `source_file` ask the reader for at a time
PING_SECONDS = 2.0
DELETE_CONCURRENCY = 16


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """The client's errors in the interface's terms."""
    try:
        yield
    except ObjectNotFound as exc:
        raise BlobNotFound(str(exc)) from None
    except S3Error as exc:
        # Wrong credentials, a missing bucket: the store is unusable to us until an admin
        # fixes it, which is an outage of the service, not a bug of the request.
        raise StorageUnavailable(
            f"The object store refused to {what} ({exc.status} {exc.code}): "
            "check the bucket and the credentials."
        ) from exc


class _S3Reader:
    """One GET from the offset to the end, its body taken from the connection only as the
    proxy asks for it (after the mail client took the previous chunk). Being one request, a
    delete meanwhile cannot cut it short: S3 stores finish a GET they began."""

    def __init__(self, stream: ObjectStream) -> None:
        self._stream = stream
        self.size = stream.size

    async def read(self, n: int) -> bytes:
        with _translated("read an object"):
            return await self._stream.read(n)

    async def close(self) -> None:
        await self._stream.close()


class S3BlobStore:
    # A reader is one GET, and the stores tried finish a GET they began (SeaweedFS sent all
    # 40 MB of an object deleted after its first 64 KB; see test_s3client), but S3 does not
    # promise it for every store: the library still defers removing unused originals.
    readers_survive_delete = False

    def __init__(
        self,
        config: S3Config,
        scratch: Path,
        executor: Executor | None = None,
        *,
        client: S3Client | None = None,
    ) -> None:
        """Blocking (creates the scratch directory); `executor` runs the local file I/O."""
        self.config = config
        self.scratch = scratch
        self._executor = executor
        self.client = client or S3Client(config, executor=executor)
        base = f"{config.prefix}/" if config.prefix else ""
        self._blobs = f"{base}blobs/"
        self._derived = f"{base}derived/"
        scratch.mkdir(parents=True, exist_ok=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- keys ---------------------------------------------------------------------------

    def key(self, sha256: str, variant: str | None = None) -> str:
        check_digest(sha256)
        if variant is None:
            return f"{self._blobs}{sha256[:2]}/{sha256}"
        return f"{self._derived}{sha256[:2]}/{sha256}.{check_variant(variant)}"

    def _parse(self, key: str) -> tuple[str, str | None] | None:
        """(digest, variant) of one of our keys; None for anything else in the prefix."""
        if key.startswith(self._blobs):
            rest, derived = key[len(self._blobs) :], False
        elif key.startswith(self._derived):
            rest, derived = key[len(self._derived) :], True
        else:
            return None
        fan, _, name = rest.partition("/")
        sha, dot, variant = name.partition(".")
        if not is_digest(sha) or fan != sha[:2] or derived != bool(dot):
            return None
        if derived:
            try:
                check_variant(variant)
            except ValueError:
                return None
        return sha, (variant if derived else None)

    # -- the BlobStore interface --------------------------------------------------------

    def new_temp(self) -> TempBlob:
        path = self.scratch / f"up-{secrets.token_hex(12)}.part"
        return TempBlob(path=path, _file=open(path, "xb"))

    async def put(self, temp: TempBlob) -> None:
        """Durable when the store answered 200 to the PUT (or 412: already there)."""
        with _translated("store an image"):
            await self.client.put_file(
                self.key(temp.sha256), str(temp.path), temp.sha256, temp.size
            )

    async def exists(self, sha256: str) -> bool:
        with _translated("look up an image"):
            return await self.client.exists(self.key(sha256))

    async def open(self, sha256: str, variant: str | None = None, start: int = 0) -> _S3Reader:
        with _translated("read an image"):
            return _S3Reader(await self.client.open_stream(self.key(sha256, variant), start))

    async def read(self, sha256: str, variant: str | None = None) -> bytes:
        reader = await self.open(sha256, variant)
        parts = []
        while chunk := await reader.read(CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    async def put_derived(self, sha256: str, variant: str, data: bytes) -> None:
        """Rendering is deterministic, so a derived object, like an original, never changes:
        a second PUT of the same key is refused by `If-None-Match` or rewrites equal bytes."""
        with _translated("store a derived image"):
            await self.client.put_bytes(self.key(sha256, variant), data)

    async def _keys(self, prefix: str) -> list[tuple[str, StoredBlob]]:
        found = []
        with _translated("list the images"):
            async for info in self.client.list(prefix):
                parsed = self._parse(info.key)
                if parsed is not None:
                    blob = StoredBlob(
                        parsed[0], parsed[1], info.size, info.last_modified.timestamp()
                    )
                    found.append((info.key, blob))
        return found

    async def _delete_keys(self, keys: list[str]) -> None:
        slots = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def one(key: str) -> None:
            async with slots:
                await self.client.delete(key)

        with _translated("delete an image"):
            await asyncio.gather(*(one(k) for k in keys))

    async def delete(self, sha256: str) -> None:
        """Derived objects first, then the original: a crash in between leaves an unused
        original, which a sweep removes."""
        derived = await self._keys(f"{self._derived}{sha256[:2]}/{check_digest(sha256)}.")
        await self._delete_keys([key for key, _ in derived])
        with _translated("delete an image"):
            await self.client.delete(self.key(sha256))

    async def delete_derived(self, sha256: str, variant: str) -> None:
        with _translated("delete a derived image"):
            await self.client.delete(self.key(sha256, variant))

    async def drop_derived(self) -> int:
        derived = await self._keys(self._derived)
        await self._delete_keys([key for key, _ in derived])
        return len(derived)

    async def list_blobs(self) -> list[StoredBlob]:
        """Originals and derived objects, with the store's last-modified time (the sweep's
        grace period is measured against it)."""
        return [blob for _, blob in await self._keys(self._blobs) + await self._keys(self._derived)]

    @contextlib.asynccontextmanager
    async def source_file(self, sha256: str) -> AsyncIterator[str]:
        """The original downloaded into the scratch directory, removed afterwards."""
        path = self.scratch / f"src-{secrets.token_hex(12)}.part"
        reader = await self.open(sha256)
        try:
            f: BinaryIO = await self._run(open, path, "xb")
            try:
                while chunk := await reader.read(CHUNK):
                    await self._run(f.write, chunk)
            finally:
                await self._run(f.close)
            yield str(path)
        finally:
            await reader.close()
            with contextlib.suppress(FileNotFoundError):
                await self._run(os.unlink, path)

    async def sweep_scratch(self) -> int:
        return await self._run(empty_directory, self.scratch)

    async def ping(self) -> None:
        """A one-key listing under the prefix, within `PING_SECONDS`."""
        with _translated("list the bucket"):
            await self.client.check_bucket(PING_SECONDS)

    async def close(self) -> None:
        await self.client.close()
