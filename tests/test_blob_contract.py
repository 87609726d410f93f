"""The BlobStore interface, held to the same answers by every implementation: the data
directory and an S3 object store (a real SeaweedFS on loopback). Then what only an object
store can do: be stopped, hang, and come back."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from appliance.blobs import BlobNotFound, BlobStore, StoredBlob
from appliance.blobs.local import LocalBlobStore
from appliance.blobs.s3 import CHUNK, PING_SECONDS, S3BlobStore
from appliance.blobs.s3client import S3Client
from appliance.errors import StorageUnavailable
from tests.s3_server import S3Target, SeaweedFS

T = TypeVar("T")
Maker = Callable[[], BlobStore]


@pytest.fixture(params=["directory", "s3"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Maker:
    """Makes the store under test (inside the test's event loop, which closes it)."""
    if request.param == "directory":
        return lambda: LocalBlobStore(tmp_path / "data")
    target: S3Target = request.getfixturevalue("s3_target")
    return lambda: S3BlobStore(target.config(), tmp_path / "data" / "tmp")


def with_store(make: Maker, scenario: Callable[[BlobStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store = make()
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(main())


async def put(store: BlobStore, data: bytes) -> str:
    """Receive bytes the way an upload does, publish them, discard the temp file."""
    temp = store.new_temp()
    try:
        await asyncio.to_thread(temp.write, data)
        await asyncio.to_thread(temp.close)
        await store.put(temp)
    finally:
        await asyncio.to_thread(temp.discard)
    return temp.sha256


async def read_from(store: BlobStore, sha: str, variant: str | None, start: int, n: int) -> bytes:
    """Everything from `start`, read `n` bytes at a time; checks the reader's size."""
    reader = await store.open(sha, variant, start)
    parts = []
    try:
        while chunk := await reader.read(n):
            assert len(chunk) <= n
            parts.append(chunk)
        size = reader.size
    finally:
        await reader.close()
    data = b"".join(parts)
    assert size == start + len(data) or start >= size
    return data


Summary = list[tuple[str, str | None, int]]


def ordered(items: Summary) -> Summary:
    return sorted(items, key=lambda item: (item[0], item[1] or "", item[2]))


def summary(blobs: list[StoredBlob]) -> Summary:
    return ordered([(b.sha256, b.variant, b.size) for b in blobs])


def scratch_files(store: BlobStore) -> list[str]:
    return sorted(p.name for p in store.scratch.iterdir())


BIG = os.urandom(2 * CHUNK + 12345)  # crosses the S3 reader's chunk boundaries


def test_put_then_read_and_open_at_any_offset(make_store: Maker) -> None:
    async def scenario(store: BlobStore) -> None:
        sha = await put(store, BIG)
        assert sha == hashlib.sha256(BIG).hexdigest()
        assert await store.exists(sha)
        assert await store.read(sha) == BIG
        for start in (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, len(BIG) - 1, len(BIG)):
            for n in (65536, CHUNK, 3 * CHUNK):
                assert await read_from(store, sha, None, start, n) == BIG[start:], (start, n)
        assert scratch_files(store) == []  # the temp file was the caller's, and is gone

    with_store(make_store, scenario)


def test_a_10_mb_original_streams_in_and_out(make_store: Maker) -> None:
    """The largest upload the contract accepts: put from the scratch file, read back."""
    data = os.urandom(10 * 1024 * 1024)

    async def scenario(store: BlobStore) -> None:
        sha = await put(store, data)
        assert await read_from(store, sha, None, 0, 1 << 20) == data
        assert await read_from(store, sha, None, len(data) - 5, 1 << 20) == data[-5:]

    with_store(make_store, scenario)


def test_an_unknown_digest_is_blob_not_found(make_store: Maker) -> None:
    sha = hashlib.sha256(b"never stored").hexdigest()

    async def scenario(store: BlobStore) -> None:
        assert not await store.exists(sha)
        with pytest.raises(BlobNotFound):
            await store.open(sha)
        with pytest.raises(BlobNotFound):
            await store.open(sha, "thumbnail", 10)
        with pytest.raises(BlobNotFound):
            await store.read(sha)
        with pytest.raises(BlobNotFound):
            await store.read(sha, "thumbnail")
        with pytest.raises(BlobNotFound):
            async with store.source_file(sha):
                pass
        await store.delete(sha)  # idempotent: nothing to delete is no error
        await store.delete_derived(sha, "thumbnail")
        assert await store.list_blobs() == []

    with_store(make_store, scenario)


def test_put_is_idempotent(make_store: Maker) -> None:
    data = b"the same bytes, uploaded three times"

    async def scenario(store: BlobStore) -> Summary:
        first = await put(store, data)
        assert await put(store, data) == first
        temp = store.new_temp()
        await asyncio.to_thread(temp.write, data)
        await asyncio.to_thread(temp.close)
        await store.put(temp)
        await store.put(temp)  # the same temp twice
        await asyncio.to_thread(temp.discard)
        assert await store.read(first) == data
        return summary(await store.list_blobs())

    sha = hashlib.sha256(data).hexdigest()
    assert with_store(make_store, scenario) == [(sha, None, len(data))]


def test_derived_files_live_beside_their_original(make_store: Maker) -> None:
    original = os.urandom(5000)
    thumb = os.urandom(700)
    wide = os.urandom(CHUNK + 10)

    async def scenario(store: BlobStore) -> None:
        sha = await put(store, original)
        other = await put(store, b"another original")
        before = time.time()
        await store.put_derived(sha, "thumbnail", thumb)
        await store.put_derived(sha, "w600-jpeg", wide)
        await store.put_derived(sha, "thumbnail", thumb)  # again: same bytes, no error
        assert await store.read(sha, "thumbnail") == thumb
        assert await store.read(sha, "w600-jpeg") == wide
        assert await read_from(store, sha, "w600-jpeg", 100, 4096) == wide[100:]
        listed = await store.list_blobs()
        assert summary(listed) == ordered(
            [
                (sha, None, len(original)),
                (other, None, 16),
                (sha, "thumbnail", len(thumb)),
                (sha, "w600-jpeg", len(wide)),
            ]
        )
        # The modification time is the store's clock, within reason of ours (S3 keeps
        # seconds, and the two clocks may differ a little).
        for blob in listed:
            assert before - 120 < blob.modified < time.time() + 120, blob
        await store.delete_derived(sha, "w600-jpeg")
        with pytest.raises(BlobNotFound):
            await store.read(sha, "w600-jpeg")
        assert await store.drop_derived() == 1
        assert summary(await store.list_blobs()) == ordered(
            [(sha, None, len(original)), (other, None, 16)]
        )
        assert await store.read(sha) == original

    with_store(make_store, scenario)


def test_delete_removes_the_original_and_its_derived_files_only(make_store: Maker) -> None:
    async def scenario(store: BlobStore) -> None:
        doomed = await put(store, b"doomed original")
        kept = await put(store, b"kept original")
        await store.put_derived(doomed, "thumbnail", b"doomed thumb")
        await store.put_derived(doomed, "w160", b"doomed w160")
        await store.put_derived(kept, "thumbnail", b"kept thumb")
        await store.delete(doomed)
        assert not await store.exists(doomed)
        with pytest.raises(BlobNotFound):
            await store.read(doomed, "thumbnail")
        assert summary(await store.list_blobs()) == ordered(
            [(kept, None, 13), (kept, "thumbnail", 10)]
        )
        await store.delete(doomed)  # idempotent
        assert await store.read(kept, "thumbnail") == b"kept thumb"

    with_store(make_store, scenario)


def test_source_file_is_a_local_copy_for_the_context_only(make_store: Maker) -> None:
    async def scenario(store: BlobStore) -> None:
        sha = await put(store, BIG)
        async with store.source_file(sha) as path:
            assert await asyncio.to_thread(Path(path).read_bytes) == BIG
        assert scratch_files(store) == []  # a downloaded copy is removed afterwards
        assert await store.read(sha) == BIG

    with_store(make_store, scenario)


def test_sweep_scratch_removes_unfinished_uploads(make_store: Maker) -> None:
    async def scenario(store: BlobStore) -> tuple[int, list[str], list[StoredBlob]]:
        temp = store.new_temp()
        await asyncio.to_thread(temp.write, b"half an upload")
        swept = await store.sweep_scratch()
        await asyncio.to_thread(temp.discard)
        return swept, scratch_files(store), await store.list_blobs()

    assert with_store(make_store, scenario) == (1, [], [])


def test_ping_answers_when_the_store_does(make_store: Maker) -> None:
    async def scenario(store: BlobStore) -> None:
        await store.ping()

    with_store(make_store, scenario)


# -- only an object store ------------------------------------------------------------------


def test_s3_key_layout(seaweedfs: SeaweedFS, s3_target: S3Target, tmp_path: Path) -> None:
    """PREFIX/blobs/ab/<sha256> and PREFIX/derived/ab/<sha256>.<variant>; anything else under
    the prefix is not ours and is never listed (nor swept)."""
    data = b"an original"
    sha = hashlib.sha256(data).hexdigest()
    p = s3_target.prefix
    for foreign in (f"{p}/blobs/zz/not-a-digest", f"{p}/derived/{sha[:2]}/{sha}", f"{p}/x"):
        assert seaweedfs.request("PUT", f"/{s3_target.bucket}/{foreign}", body=b"?").status == 200

    async def scenario(store: BlobStore) -> Summary:
        await put(store, data)
        await store.put_derived(sha, "thumbnail", b"thumb")
        return summary(await store.list_blobs())

    make = lambda: S3BlobStore(s3_target.config(), tmp_path / "tmp")  # noqa: E731
    assert with_store(make, scenario) == [(sha, None, 11), (sha, "thumbnail", 5)]
    assert sorted(seaweedfs.keys(s3_target.bucket, p + "/")) == sorted(
        [
            f"{p}/blobs/{sha[:2]}/{sha}",
            f"{p}/derived/{sha[:2]}/{sha}.thumbnail",
            f"{p}/blobs/zz/not-a-digest",
            f"{p}/derived/{sha[:2]}/{sha}",
            f"{p}/x",
        ]
    )


def test_s3_store_stopped_is_unavailable_within_bounds_then_recovers(
    seaweedfs: SeaweedFS, s3_target: S3Target, tmp_path: Path
) -> None:
    original = os.urandom(300_000)

    async def scenario(store: BlobStore) -> tuple[list[str], float, bytes, bytes]:
        sha = await put(store, original)
        await asyncio.to_thread(seaweedfs.stop)
        began = time.monotonic()
        failed = []
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("put", lambda: put(store, b"uploaded while the store is down")),
            ("exists", lambda: store.exists(sha)),
            ("open", lambda: store.open(sha)),
            ("read", lambda: store.read(sha, "thumbnail")),
            ("put_derived", lambda: store.put_derived(sha, "thumbnail", b"t")),
            ("delete", lambda: store.delete(sha)),
            ("list_blobs", store.list_blobs),
            ("ping", store.ping),
        ]
        for name, call in calls:
            try:
                await call()
            except StorageUnavailable as exc:
                assert exc.status == 503 and exc.headers == {"Retry-After": "5"}
                failed.append(name)
        elapsed = time.monotonic() - began
        await asyncio.to_thread(seaweedfs.start)
        await store.ping()  # the same store, recovered by itself
        after = await store.read(sha)
        again = await put(store, b"uploaded after the restart")
        return failed, elapsed, after, await store.read(again)

    make = lambda: S3BlobStore(s3_target.config(), tmp_path / "tmp")  # noqa: E731
    failed, elapsed, after, again = with_store(make, scenario)
    assert failed == [
        "put",
        "exists",
        "open",
        "read",
        "put_derived",
        "delete",
        "list_blobs",
        "ping",
    ]
    assert elapsed < 8 * 10  # each call within its bound (connection refused: at once)
    assert after == original
    assert again == b"uploaded after the restart"


def test_s3_store_hung_is_unavailable_within_its_timeout(
    seaweedfs: SeaweedFS, s3_target: S3Target, tmp_path: Path
) -> None:
    """A frozen store accepts connections and never answers: ping gives up after its own
    short bound, a read after the request timeout."""

    async def scenario(store: BlobStore) -> list[str]:
        sha = await put(store, b"frozen in place")
        await asyncio.to_thread(seaweedfs.freeze)
        messages = []
        try:
            for call in (store.ping, lambda: store.read(sha)):
                with pytest.raises(StorageUnavailable) as caught:
                    await call()
                messages.append(caught.value.message)
        finally:
            seaweedfs.thaw()
        assert await store.read(sha) == b"frozen in place"
        return messages

    def make() -> S3BlobStore:
        config = s3_target.config()
        client = S3Client(config, connect_timeout=1.0, request_timeout=1.0)
        return S3BlobStore(config, tmp_path / "tmp", client=client)

    assert with_store(make, scenario) == [
        f"The object store did not answer GET within {PING_SECONDS:.1f} s; try again shortly.",
        "The object store did not answer GET within 1.0 s; try again shortly.",
    ]
