"""The S3 client against a real SeaweedFS on loopback: signing, every call, connection reuse,
and what an unreachable or hung store looks like (no mocks)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from appliance.blobs.s3client import (
    Credentials,
    ObjectNotFound,
    S3Client,
    S3Config,
    S3Error,
    sign,
)
from appliance.errors import StorageUnavailable
from tests.s3_server import S3Target, SeaweedFS

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def client_for(target: S3Target, **kwargs: float) -> S3Client:
    return S3Client(target.config(), **kwargs)  # type: ignore[arg-type]


def test_signature_matches_the_aws_example() -> None:
    """The worked example 'GET Object' of the SigV4 documentation for S3."""
    creds = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    headers = sign(
        "GET",
        "/test.txt",
        {},
        {"host": "examplebucket.s3.amazonaws.com", "range": "bytes=0-9"},
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        creds,
        "us-east-1",
        datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert headers == {
        "x-amz-date": "20130524T000000Z",
        "x-amz-content-sha256": (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        ),
        "Authorization": (
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        ),
    }


def test_signature_of_a_listing_matches_the_aws_example() -> None:
    """The worked example 'GET Bucket (List Objects)': query parameters sorted and encoded."""
    creds = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    headers = sign(
        "GET",
        "/",
        {"max-keys": "2", "prefix": "J"},
        {"host": "examplebucket.s3.amazonaws.com"},
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        creds,
        "us-east-1",
        datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert headers["Authorization"].endswith(
        "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )


def test_the_store_refuses_unsigned_and_wrongly_signed_requests(
    seaweedfs: SeaweedFS, s3_target: S3Target
) -> None:
    path = f"/{s3_target.bucket}/{s3_target.prefix}/x"
    assert seaweedfs.request("PUT", path, body=b"signed").status == 200
    assert seaweedfs.request("GET", path, signed=False).status == 403
    assert seaweedfs.request("GET", path, secret_key=secrets.token_hex(8)).status == 403
    assert seaweedfs.request("GET", path).body == b"signed"


def test_a_wrong_secret_is_refused_with_403(s3_target: S3Target, tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"payload")
    digest = hashlib.sha256(b"payload").hexdigest()
    # 10 MB: the store answers 403 long before it has the body, and closes the connection.
    big = tmp_path / "big"
    big.write_bytes(os.urandom(10 * 1024 * 1024))
    big_digest = hashlib.sha256(big.read_bytes()).hexdigest()

    async def attempts() -> list[tuple[int, str]]:
        client = S3Client(s3_target.config(secret_key=secrets.token_hex(8)))
        outcomes = []
        size = 10 * 1024 * 1024
        try:
            for call in (
                lambda: client.put_file(f"{s3_target.prefix}/a", str(source), digest, 7),
                lambda: client.put_file(f"{s3_target.prefix}/c", str(big), big_digest, size),
                lambda: client.put_bytes(f"{s3_target.prefix}/b", b"payload"),
                lambda: client.get_range(f"{s3_target.prefix}/a", 0, 10),
                client.check_bucket,
            ):
                try:
                    await call()
                except S3Error as exc:
                    outcomes.append((exc.status, exc.code))
        finally:
            await client.close()
        return outcomes

    assert run(attempts()) == [(403, "SignatureDoesNotMatch")] * 5


def test_a_payload_that_does_not_match_its_signed_hash_is_refused(
    seaweedfs: SeaweedFS, s3_target: S3Target, tmp_path: Path
) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"the bytes on disk")
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    key = f"{s3_target.prefix}/mismatch"

    async def attempt() -> S3Error:
        client = client_for(s3_target)
        try:
            with pytest.raises(S3Error) as caught:
                await client.put_file(key, str(source), wrong, source.stat().st_size)
            return caught.value
        finally:
            await client.close()

    error = run(attempt())
    # AWS answers XAmzContentSHA256Mismatch (it checks the signed payload hash); SeaweedFS
    # checks the x-amz-checksum-sha256 we send beside it.
    assert (error.status, error.code) == (400, "BadDigest")
    assert seaweedfs.keys(s3_target.bucket, s3_target.prefix) == []


def test_put_get_range_head_list_delete(s3_target: S3Target, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    source = tmp_path / "blob"
    source.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    key = f"{s3_target.prefix}/blobs/{digest[:2]}/{digest}"

    async def scenario() -> None:
        client = client_for(s3_target)
        try:
            await client.put_file(key, str(source), digest, len(data))
            assert await client.exists(key)
            info = await client.head(key)
            assert (info.key, info.size) == (key, len(data))
            assert abs((datetime.now(UTC) - info.last_modified).total_seconds()) < 120
            assert await client.get(key) == data
            assert await client.get_range(key, 0, 1000) == (data[:1000], len(data))
            assert await client.get_range(key, 123_456, 65536) == (
                data[123_456 : 123_456 + 65536],
                len(data),
            )
            # A range running past the end gives what there is; at the end, nothing.
            assert await client.get_range(key, len(data) - 10, 1000) == (data[-10:], len(data))
            assert await client.get_range(key, len(data), 1000) == (b"", len(data))
            await client.delete(key)
            assert not await client.exists(key)
            with pytest.raises(ObjectNotFound):
                await client.get_range(key, 0, 10)
            with pytest.raises(ObjectNotFound):
                await client.head(key)
            await client.delete(key)  # a missing object is no error
        finally:
            await client.close()

    run(scenario())


def test_a_stream_outlives_a_delete_and_holds_little(
    seaweedfs: SeaweedFS, s3_target: S3Target
) -> None:
    """One GET per stream: the object deleted after the first chunk is still received whole.
    The reader takes the body at its own pace; closed early, its connection is dropped."""
    data = os.urandom(12 * 1024 * 1024)
    key = f"{s3_target.prefix}/streamed"

    async def scenario() -> tuple[bytes, int, int, int, int]:
        client = client_for(s3_target)
        try:
            await client.put_bytes(key, data)
            stream = await client.open_stream(key)
            first = await stream.read(65536)
            await asyncio.to_thread(seaweedfs.request, "DELETE", f"/{s3_target.bucket}/{key}")
            assert not await client.exists(key)
            parts = [first]
            while chunk := await stream.read(1 << 20):
                parts.append(chunk)
            await stream.close()
            idle_after_whole = client.open_connections
            await client.put_bytes(key, data)
            early = await client.open_stream(key, 1000)
            size = early.size
            assert await early.read(10) == data[1000:1010]
            await early.close()  # 12 MB not read: that connection cannot be reused
            with pytest.raises(ObjectNotFound):
                await client.open_stream(f"{s3_target.prefix}/missing")
            past = await client.open_stream(key, len(data))
            assert (past.size, await past.read(100)) == (len(data), b"")
            await past.close()
            return b"".join(parts), stream.size, size, idle_after_whole, client.open_connections
        finally:
            await client.close()

    body, size, early_size, idle_after_whole, idle_after_early = run(scenario())
    assert body == data
    assert (size, early_size) == (len(data), len(data))
    # Whole: the stream's connection and the one `exists` needed meanwhile are both kept;
    # the early-closed stream's connection is dropped.
    assert (idle_after_whole, idle_after_early) == (2, 1)


def test_put_of_an_existing_key_keeps_it(seaweedfs: SeaweedFS, s3_target: S3Target) -> None:
    """`If-None-Match: *`: the second PUT is refused by the store (412), which is success for
    a content address; the stored bytes stay the first ones."""
    key = f"{s3_target.prefix}/same"

    async def scenario() -> None:
        client = client_for(s3_target)
        try:
            await client.put_bytes(key, b"first")
            await client.put_bytes(key, b"second")
        finally:
            await client.close()

    run(scenario())
    assert seaweedfs.request("GET", f"/{s3_target.bucket}/{key}").body == b"first"


def test_list_pages_through_every_key(s3_target: S3Target) -> None:
    names = [f"{s3_target.prefix}/k/{n:02d}" for n in range(7)]

    async def scenario() -> list[tuple[str, int]]:
        client = client_for(s3_target)
        try:
            await asyncio.gather(*(client.put_bytes(k, k.encode()) for k in names))
            await client.put_bytes(f"{s3_target.prefix}/other", b"not listed")
            return [
                (i.key, i.size) async for i in client.list(f"{s3_target.prefix}/k/", page_size=3)
            ]
        finally:
            await client.close()

    assert run(scenario()) == [(k, len(k)) for k in names]


def test_sequential_requests_reuse_one_connection(s3_target: S3Target) -> None:
    async def scenario() -> tuple[int, int]:
        client = client_for(s3_target)
        try:
            for n in range(10):
                await client.put_bytes(f"{s3_target.prefix}/{n}", b"x" * n)
                await client.get_range(f"{s3_target.prefix}/{n}", 0, 100) if n else None
            sequential = client.connections_made
            await asyncio.gather(*(client.head(f"{s3_target.prefix}/{n}") for n in range(1, 9)))
            return sequential, client.connections_made
        finally:
            await client.close()

    sequential, after_parallel = run(scenario())
    assert sequential == 1
    assert 1 < after_parallel <= 8


def test_close_closes_every_connection(s3_target: S3Target) -> None:
    async def scenario() -> tuple[int, int, str]:
        client = client_for(s3_target)
        await client.put_bytes(f"{s3_target.prefix}/c", b"c")
        await asyncio.gather(*(client.head(f"{s3_target.prefix}/c") for _ in range(5)))
        before = client.open_connections
        await client.close()
        with pytest.raises(StorageUnavailable) as caught:
            await client.head(f"{s3_target.prefix}/c")
        return before, client.open_connections, caught.value.message

    before, after, message = run(scenario())
    assert before >= 2
    assert (after, message) == (0, "The S3 client is closed.")


def test_a_stopped_store_is_unavailable_then_recovers(
    seaweedfs: SeaweedFS, s3_target: S3Target
) -> None:
    key = f"{s3_target.prefix}/kept"

    async def scenario() -> tuple[float, bytes]:
        client = client_for(s3_target, connect_timeout=1.0, request_timeout=2.0)
        try:
            await client.put_bytes(key, b"kept across the restart")
            await asyncio.to_thread(seaweedfs.stop)
            began = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await client.get_range(key, 0, 100)
            with pytest.raises(StorageUnavailable):
                await client.put_bytes(f"{s3_target.prefix}/new", b"new")
            elapsed = time.monotonic() - began
            await asyncio.to_thread(seaweedfs.start)
            body, _ = await client.get_range(key, 0, 100)  # the same client, by itself
            return elapsed, body
        finally:
            await client.close()

    elapsed, body = run(scenario())
    assert body == b"kept across the restart"
    assert elapsed < 10  # bounded: two calls of at most connect/request timeout each


def test_a_hung_store_times_out_then_recovers(seaweedfs: SeaweedFS, s3_target: S3Target) -> None:
    """SIGSTOP freezes the real server with its sockets open: connections are accepted by the
    kernel, nothing answers. Every call must end within its request timeout."""
    key = f"{s3_target.prefix}/frozen"

    async def scenario() -> tuple[list[str], bytes]:
        client = client_for(s3_target, connect_timeout=0.5, request_timeout=0.5)
        try:
            await client.put_bytes(key, b"still there")
            await asyncio.to_thread(seaweedfs.freeze)
            try:
                messages = []
                for call in (client.get_range(key, 0, 10), client.put_bytes(key + "2", b"y")):
                    with pytest.raises(StorageUnavailable) as caught:
                        await call
                    messages.append(caught.value.message.split(" within")[0])
            finally:
                seaweedfs.thaw()
            body, _ = await client.get_range(key, 0, 100)
            return messages, body
        finally:
            await client.close()

    messages, body = run(scenario())
    assert messages == [
        "The object store did not answer GET",
        "The object store did not answer PUT",
    ]
    assert body == b"still there"


def test_config_from_url_and_environment() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "AK",
        "AWS_SECRET_ACCESS_KEY": "SK",
        "PICTOR_S3_ENDPOINT": "http://127.0.0.1:8333/",
    }
    assert S3Config.from_url("s3://pictor-images/prod/eu", env) == S3Config(
        bucket="pictor-images",
        prefix="prod/eu",
        credentials=Credentials("AK", "SK"),
        region="us-east-1",
        endpoint="http://127.0.0.1:8333",
    )
    assert S3Config.from_url("s3://bucket", {**env, "AWS_REGION": "eu-west-3"}) == S3Config(
        bucket="bucket",
        prefix="",
        credentials=Credentials("AK", "SK"),
        region="eu-west-3",
        endpoint="http://127.0.0.1:8333",
    )
    for bad in ("s3://", "http://bucket/x", "s3://Bad_Bucket", "s3://b/x?y=1", "s3://bucket//x"):
        with pytest.raises(ValueError):
            S3Config.from_url(bad, env)
    with pytest.raises(ValueError, match="AWS_ACCESS_KEY_ID"):
        S3Config.from_url("s3://bucket", {"AWS_SECRET_ACCESS_KEY": "SK"})
    with pytest.raises(ValueError, match="PICTOR_S3_ENDPOINT"):
        S3Config.from_url("s3://bucket", {**env, "PICTOR_S3_ENDPOINT": "ftp://x"})


def test_addressing_is_path_style_with_an_endpoint_and_virtual_host_on_aws() -> None:
    creds = Credentials("AK", "SK")
    path_style = S3Client(S3Config("bkt", "", creds, endpoint="http://127.0.0.1:9000"))
    aws = S3Client(S3Config("bkt", "", creds, region="eu-west-3"))
    dotted = S3Client(S3Config("my.bkt", "", creds))
    assert (path_style._host_header, path_style._target("p/k")) == ("127.0.0.1:9000", "/bkt/p/k")
    assert (aws._host_header, aws._target("p/k")) == ("bkt.s3.eu-west-3.amazonaws.com", "/p/k")
    assert (dotted._host_header, dotted._target("k")) == ("s3.us-east-1.amazonaws.com", "/my.bkt/k")
    for client in (path_style, aws, dotted):
        run(client.close())
