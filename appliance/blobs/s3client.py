"""A small S3 client: AWS Signature V4 over Tornado's own HTTP/1.1 connections, with keep-alive.

Why our own: the executable has a 40 MB budget (obstore adds ~15 MB and aborted at interpreter
exit in 1 run of 6; aiobotocore brings aiohttp and 28 MB of botocore models), and we need only
six calls of plain S3: PUT (with `If-None-Match: *` where the store has it), GET with Range,
HEAD, DELETE, ListObjectsV2 and a bucket check. Why not `AsyncHTTPClient`: its simple client
closes the connection after every request (`Connection: close`, no keep-alive), which would
cost a TCP (and TLS) handshake per 1 MiB chunk; so requests go through `tornado.tcpclient` and
`tornado.http1connection`, the pieces `AsyncHTTPClient` itself is made of, with a small pool of
kept-alive connections on the same event loop.

- Signing: every request is signed (SigV4, header form). The payload hash is always the real
  SHA-256 of the body (never `UNSIGNED-PAYLOAD`), so the store verifies what it received; for an
  original that hash is the blob's own digest, already computed while it was received. PUTs
  also carry it as `x-amz-checksum-sha256`, which is what SeaweedFS checks (it ignores a
  mismatching payload hash) and what AWS stores with the object.
- Addressing: path-style (`ENDPOINT/BUCKET/KEY`) when an endpoint is configured; otherwise
  AWS virtual-host style (`https://BUCKET.s3.REGION.amazonaws.com/KEY`), or path-style on AWS
  for bucket names with dots (which a wildcard certificate cannot cover).
- Time bounds: connect within `connect_timeout` (2 s); each whole request (waiting for a free
  connection included) within `request_timeout` (5 s), plus time for the body at `min_rate`
  bytes/s (1 MiB/s: 15 s for a 10 MB upload).
  Nothing waits longer: a stopped or hung store is `StorageUnavailable` within the bound.
- TLS: certificates and host names are verified for https endpoints (the system's CAs, or
  `ca_file`).
- XML (ListObjectsV2 and error bodies) is parsed with `xml.etree.ElementTree`, only from the
  configured endpoint's answers and only up to `MAX_XML_BYTES`: Python's expat (>= 2.4.1)
  refuses entity-expansion bombs and ElementTree resolves no external entities; `defusedxml`
  would add nothing here but a dependency.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import functools
import hashlib
import hmac
import os
import re
import ssl
import time
import weakref
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO, NoReturn, TypeVar
from urllib.parse import quote, urlsplit

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from appliance.errors import StorageUnavailable

T = TypeVar("T")

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_XML_BYTES = 8 * 1024 * 1024  # a ListObjectsV2 page of 1000 keys is ~300 KB
MAX_ERROR_BYTES = 64 * 1024
UPLOAD_CHUNK = 256 * 1024
IDLE_MAX_SECONDS = 15.0  # below the idle timeouts of common stores (AWS closes after ~20 s)

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_UNRESERVED = "-_.~"


class ObjectNotFound(FileNotFoundError):
    """No object under this key (404)."""


class S3Error(Exception):
    """The store refused the request (4xx other than 404): wrong credentials, no such bucket,
    a bad request. A configuration problem or a bug, not an outage."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


# -- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class S3Config:
    """Where the bytes go: `s3://BUCKET[/PREFIX]` plus the environment of CONTRACT.md."""

    bucket: str
    prefix: str  # "" or "a/b", without leading or trailing slashes
    credentials: Credentials
    region: str = "us-east-1"
    endpoint: str | None = None  # e.g. http://127.0.0.1:8333; path-style when set

    @classmethod
    def from_url(
        cls, url: str, environ: Mapping[str, str] | None = None, endpoint: str | None = None
    ) -> S3Config:
        """Parse `s3://BUCKET[/PREFIX]` and read AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
        AWS_SESSION_TOKEN (optional), AWS_REGION and, unless `endpoint` (the --s3-endpoint
        setting) is given, PICTOR_S3_ENDPOINT."""
        env = os.environ if environ is None else environ
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"a blob store URL looks like s3://BUCKET/PREFIX, not {url!r}")
        bucket = parts.netloc
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise ValueError(f"{bucket!r} is not a valid S3 bucket name")
        prefix = parts.path.removeprefix("/").removesuffix("/")
        if "//" in f"/{prefix}/" and prefix:
            raise ValueError(f"the prefix {prefix!r} has an empty path segment")
        access_key = env.get("AWS_ACCESS_KEY_ID", "")
        secret_key = env.get("AWS_SECRET_ACCESS_KEY", "")
        if not access_key or not secret_key:
            raise ValueError("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the S3 store")
        endpoint = endpoint or env.get("PICTOR_S3_ENDPOINT") or None
        if endpoint is not None:
            ep = urlsplit(endpoint)
            if ep.scheme not in ("http", "https") or not ep.hostname or ep.query or ep.fragment:
                raise ValueError(
                    f"PICTOR_S3_ENDPOINT must look like https://s3.example.com, not {endpoint!r}"
                )
            endpoint = endpoint.rstrip("/")
        return cls(
            bucket=bucket,
            prefix=prefix,
            credentials=Credentials(access_key, secret_key, env.get("AWS_SESSION_TOKEN") or None),
            region=env.get("AWS_REGION") or "us-east-1",
            endpoint=endpoint,
        )


# -- Signature V4 --------------------------------------------------------------------------


def uri_encode(value: str, *, keep_slash: bool) -> str:
    """RFC 3986 encoding as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~ (and '/'
    in paths), as %XX of its UTF-8 bytes."""
    return quote(value, safe=_UNRESERVED + ("/" if keep_slash else ""))


def canonical_query(params: Mapping[str, str]) -> str:
    pairs = sorted(
        (uri_encode(k, keep_slash=False), uri_encode(v, keep_slash=False))
        for k, v in params.items()
    )
    return "&".join(f"{k}={v}" for k, v in pairs)


def signing_key(secret_key: str, date: str, region: str, service: str = "s3") -> bytes:
    key = hmac.new(f"AWS4{secret_key}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_sha256: str,
    credentials: Credentials,
    region: str,
    now: datetime,
) -> dict[str, str]:
    """The headers to add to a request so that S3 accepts it: `x-amz-date`,
    `x-amz-content-sha256`, (`x-amz-security-token`) and `Authorization`.

    `path` is the encoded request path, `headers` every header to be signed (at least
    `host`); all of them and the added ones are signed."""
    amz_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    added = {"x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256}
    if credentials.session_token:
        added["x-amz-security-token"] = credentials.session_token
    signed = {k.lower(): " ".join(v.strip().split()) for k, v in headers.items()}
    signed.update(added)
    names = sorted(signed)
    canonical_request = "\n".join(
        [
            method,
            path,
            canonical_query(query),
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{date}/{region}/s3/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = signing_key(credentials.secret_key, date, region)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    added["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return added


# -- HTTP/1.1 with keep-alive --------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    headers: httputil.HTTPHeaders
    body: bytes


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime


class _Collect(httputil.HTTPMessageDelegate):
    """Gathers one response; a body over `limit` bytes is flagged and dropped (raising here
    would only be logged by Tornado)."""

    def __init__(self, limit: int, *, head: bool) -> None:
        self.limit = limit
        self.head = head  # a HEAD's Content-Length is the object's, there is no body
        self.status = 0
        self.headers = httputil.HTTPHeaders()
        self.version = ""
        self.chunks: list[bytes] = []
        self.size = 0
        self.started = False
        self.done = False
        self.too_large = False

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        assert isinstance(start_line, httputil.ResponseStartLine)
        self.started = True
        self.status = start_line.code
        self.version = start_line.version
        self.headers = headers
        if not self.head:
            with contextlib.suppress(ValueError):
                self.too_large = int(headers.get("Content-Length", "0")) > self.limit

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.too_large = True
            self.chunks.clear()
        else:
            self.chunks.append(chunk)
        return None

    def finish(self) -> None:
        self.done = True

    def on_connection_close(self) -> None:
        pass


@dataclass
class _Body:
    """A request body: bytes in memory, or `size` bytes of a local file read in chunks."""

    sha256: str
    size: int
    data: bytes | None = None
    path: str | None = None


class _Channel:
    """Chunks from the connection to the reader, at most `capacity` held: when it is full,
    the connection stops reading the socket, and TCP slows the store down."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: deque[bytes] = deque()
        self.ended = False
        self.aborted = False
        self.error: BaseException | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    async def put(self, chunk: bytes) -> None:
        while len(self.items) >= self.capacity and not self.aborted:
            self._writable.clear()
            await self._writable.wait()
        if not self.aborted:
            self.items.append(chunk)
            self._readable.set()

    def abort(self) -> None:
        """The reader is gone: drop what is held and whatever still arrives."""
        self.aborted = True
        self.items.clear()
        self._writable.set()

    def end(self, error: BaseException | None = None) -> None:
        if not self.ended:
            self.ended, self.error = True, error
        self._readable.set()

    async def get(self) -> bytes | None:
        """The next chunk; None at the end; raises what ended the stream early."""
        while not self.items and not self.ended:
            self._readable.clear()
            await self._readable.wait()
        if self.items:
            chunk = self.items.popleft()
            self._writable.set()
            return chunk
        if self.error is not None:
            raise self.error
        return None


class _Streaming(_Collect):
    """A GET answer whose 2xx body goes through a `_Channel` (other bodies are collected)."""

    def __init__(self, limit: int, capacity: int) -> None:
        super().__init__(limit, head=False)
        self.channel = _Channel(capacity)
        self.headers_ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        super().headers_received(start_line, headers)
        if not 200 <= self.status < 300:
            return
        self.too_large = False  # a 2xx body streams, whatever its size
        if not self.headers_ready.done():
            self.headers_ready.set_result(None)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if 200 <= self.status < 300:
            return self.channel.put(chunk)  # awaited by the connection: back-pressure
        super().data_received(chunk)
        return None

    def finish(self) -> None:
        super().finish()
        self.channel.end()
        if not self.headers_ready.done():
            self.headers_ready.set_result(None)

    def on_connection_close(self) -> None:
        self.channel.end(StreamClosedError(real_error=ConnectionError("closed mid-body")))
        if not self.headers_ready.done():
            self.headers_ready.set_result(None)


class ObjectStream:
    """An object being received by one GET, read forwards at the reader's pace."""

    def __init__(
        self,
        client: S3Client,
        stream: IOStream | None,  # None: nothing to receive (at or past the end)
        reading: asyncio.Future[bool] | None,
        answer: _Streaming,
        size: int,
        release: Callable[[], None],
    ) -> None:
        self._client = client
        self._stream = stream
        self._reading = reading
        self._answer = answer
        self.size = size
        self._release = release
        self._buffer = b""
        self._closed = False

    async def read(self, n: int) -> bytes:
        """Up to n next bytes; b"" at the end. Each wait for the store is bounded."""
        if not self._buffer:
            try:
                async with asyncio.timeout(self._client.request_timeout):
                    chunk = await self._answer.channel.get()
            except TimeoutError:
                await self.close()
                raise StorageUnavailable(
                    "The object store stopped sending within "
                    f"{self._client.request_timeout:.1f} s; try again shortly."
                ) from None
            except _TRANSIENT as exc:
                await self.close()
                raise StorageUnavailable(
                    "The object store closed the connection mid-object; try again shortly."
                ) from exc
            if chunk is None:
                return b""
            self._buffer = chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer = b""
        answer, reading, stream = self._answer, self._reading, self._stream
        if stream is not None and reading is not None:
            if reading.done() and answer.done and not answer.channel.items:
                alive = not reading.cancelled() and reading.exception() is None
                self._client._finish(stream, "GET", answer, alive and reading.result())
            else:
                answer.channel.abort()  # not read to the end: the connection is dropped,
                stream.close()  # and the connection's reading ends on its own
        self._release()


class _Pool:
    """Connections to one host:port, at most `limit` at a time, idle ones kept for reuse."""

    def __init__(
        self, host: str, port: int, tls: ssl.SSLContext | None, limit: int, connect_timeout: float
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.slots = asyncio.Semaphore(limit)
        # Streaming GETs hold their connection while the reader (a mail client, through the
        # proxy) takes its time: they have slots of their own, so that they never starve
        # the short calls.
        self.stream_slots = asyncio.Semaphore(4 * limit)
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.idle: deque[tuple[IOStream, float]] = deque()
        self.tcp: TCPClient | None = None  # made on first use, on the running loop
        self.closed = False
        self.connections_made = 0
        self.streams: weakref.WeakSet[IOStream] = weakref.WeakSet()

    def take_idle(self) -> IOStream | None:
        now = time.monotonic()
        while self.idle:
            stream, since = self.idle.pop()  # the most recently used: least likely timed out
            if not stream.closed() and now - since < IDLE_MAX_SECONDS:
                return stream
            stream.close()
        return None

    async def connect(self) -> IOStream:
        if self.tcp is None:
            self.tcp = TCPClient()
        stream = await self.tcp.connect(
            self.host,
            self.port,
            ssl_options=self.tls,  # verified against `host` (TCPClient passes it as SNI)
            timeout=self.connect_timeout,
        )
        stream.set_nodelay(True)
        self.connections_made += 1
        self.streams.add(stream)
        return stream

    def give_back(self, stream: IOStream) -> None:
        if self.closed or stream.closed() or len(self.idle) >= self.limit:
            stream.close()
        else:
            self.idle.append((stream, time.monotonic()))

    def close(self) -> None:
        self.closed = True
        while self.idle:
            self.idle.pop()[0].close()
        if self.tcp is not None:
            self.tcp.close()


_TRANSIENT = (StreamClosedError, ConnectionError, TimeoutError, OSError, ssl.SSLError)


class S3Client:
    """Typed calls on one bucket. Keys are full object keys (the caller adds any prefix)."""

    def __init__(
        self,
        config: S3Config,
        *,
        max_connections: int = 32,
        connect_timeout: float = 2.0,
        request_timeout: float = 5.0,
        min_rate: float = 1024 * 1024,
        executor: Executor | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.config = config
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.min_rate = min_rate
        self._executor = executor
        self._conditional_put = True  # cleared if the store answers 501 to If-None-Match
        if config.endpoint is not None:
            ep = urlsplit(config.endpoint)
            scheme, host = ep.scheme, ep.hostname or ""
            port = ep.port or (443 if scheme == "https" else 80)
            self._bucket_path = f"{ep.path.rstrip('/')}/{config.bucket}"
        elif "." in config.bucket:
            scheme, host, port = "https", f"s3.{config.region}.amazonaws.com", 443
            self._bucket_path = f"/{config.bucket}"
        else:
            scheme, host, port = "https", f"{config.bucket}.s3.{config.region}.amazonaws.com", 443
            self._bucket_path = ""
        default_port = 443 if scheme == "https" else 80
        bracketed = f"[{host}]" if ":" in host else host
        self._host_header = bracketed if port == default_port else f"{bracketed}:{port}"
        tls = ssl.create_default_context(cafile=ca_file) if scheme == "https" else None
        self._pool = _Pool(host, port, tls, max_connections, connect_timeout)
        self._params = HTTP1ConnectionParameters(
            no_keep_alive=False, chunk_size=256 * 1024, max_header_size=64 * 1024
        )

    @property
    def open_connections(self) -> int:
        """Connections open now, in use or idle (0 after `close()` once requests ended)."""
        return sum(not stream.closed() for stream in self._pool.streams)

    @property
    def connections_made(self) -> int:
        """TCP connections opened so far (kept-alive ones are reused, not counted again)."""
        return self._pool.connections_made

    # -- the calls ---------------------------------------------------------------------

    async def put_file(self, key: str, path: str, sha256: str, size: int) -> None:
        """Store `size` bytes read from the local file `path`, whose SHA-256 is `sha256`
        (signed as the payload hash, so the store checks the bytes it got)."""
        await self._put(key, _Body(sha256=sha256, size=size, path=path))

    async def put_bytes(self, key: str, data: bytes) -> None:
        if len(data) > 1024 * 1024:
            digest = await self._run(lambda: hashlib.sha256(data).hexdigest())
        else:
            digest = hashlib.sha256(data).hexdigest()
        await self._put(key, _Body(sha256=digest, size=len(data), data=data))

    async def _put(self, key: str, body: _Body) -> None:
        headers = {
            "content-type": "application/octet-stream",
            # The same digest again, as the flexible checksum: AWS checks the signed payload
            # hash, but some stores (SeaweedFS 4.48) check only this one (BadDigest).
            "x-amz-checksum-sha256": base64.b64encode(bytes.fromhex(body.sha256)).decode(),
        }
        if self._conditional_put:
            headers["if-none-match"] = "*"
        resp = await self._request("PUT", key, headers=headers, body=body)
        if resp.status == 501 and self._conditional_put:
            self._conditional_put = False  # the store has no conditional PUT: plain PUT
            await self._put(key, body)
            return
        # 412: the key exists already. Keys are content addresses: same key, same bytes.
        if resp.status not in (200, 412):
            self._raise(resp, key)

    async def get(self, key: str, *, limit: int = 64 * 1024 * 1024) -> bytes:
        """A whole object, of at most `limit` bytes."""
        resp = await self._request("GET", key, limit=limit)
        if resp.status != 200:
            self._raise(resp, key)
        return resp.body

    async def get_range(self, key: str, start: int, length: int) -> tuple[bytes, int]:
        """Up to `length` bytes from offset `start`, and the object's whole size. At or past
        the end: no bytes."""
        if start < 0 or length <= 0:
            raise ValueError(f"bad range: start {start}, length {length}")
        headers = {"range": f"bytes={start}-{start + length - 1}"}
        resp = await self._request("GET", key, headers=headers, limit=length)
        if resp.status == 206:
            return resp.body, _total_size(resp.headers, key)
        if resp.status == 200:  # a store that ignores Range (or an empty object)
            return resp.body[start : start + length], len(resp.body)
        if resp.status == 416:
            return b"", _total_size(resp.headers, key)
        self._raise(resp, key)

    async def open_stream(self, key: str, start: int = 0) -> ObjectStream:
        """The object from `start` to its end, by one GET whose body is read only as fast
        as the caller reads (so a delete while it streams cannot cut it short). Raises
        ObjectNotFound; at or past the end, the stream is empty. Close it."""
        headers = {"range": f"bytes={start}-"} if start else {}
        path = self._target(key)
        pool = self._pool
        if pool.closed:
            raise StorageUnavailable("The S3 client is closed.")
        await pool.stream_slots.acquire()
        try:
            async with asyncio.timeout(self.request_timeout):
                for attempt in range(3):
                    opened = await self._open_stream(path, headers, key)
                    if opened is None:  # a kept-alive connection turned out closed
                        continue
                    if isinstance(opened, ObjectStream):
                        return opened
                    if opened.status in (500, 503) and attempt == 0:
                        await asyncio.sleep(0.05)
                        continue
                    if opened.status >= 500:
                        raise StorageUnavailable(
                            f"The object store answered {opened.status} "
                            f"{_error_code(opened)}; try again shortly."
                        )
                    if opened.status == 416:
                        return _empty_stream(self, _total_size(opened.headers, key))
                    self._raise(opened, key)
                raise StorageUnavailable(
                    "The object store keeps closing the connection; try again shortly."
                )
        except ObjectNotFound:  # an OSError, but no outage
            pool.stream_slots.release()
            raise
        except TimeoutError:
            pool.stream_slots.release()
            raise StorageUnavailable(
                f"The object store did not answer GET within {self.request_timeout:.1f} s; "
                "try again shortly."
            ) from None
        except _TRANSIENT as exc:
            pool.stream_slots.release()
            reason = getattr(exc, "real_error", None) or exc
            raise StorageUnavailable(
                f"The object store is unreachable ({reason or type(exc).__name__}); "
                "try again shortly."
            ) from exc
        except BaseException:
            pool.stream_slots.release()
            raise

    async def _open_stream(
        self, path: str, extra: Mapping[str, str], key: str
    ) -> ObjectStream | Response | None:
        """Send the GET and wait for its headers: a stream for a 2xx, the whole (small)
        answer otherwise, None when a reused connection was found closed."""
        headers = {"host": self._host_header, **extra}
        headers.update(
            sign(
                "GET",
                path,
                {},
                headers,
                EMPTY_SHA256,
                self.config.credentials,
                self.config.region,
                datetime.now(UTC),
            )
        )
        pool = self._pool
        stream = pool.take_idle()
        reused = stream is not None
        if stream is None:
            stream = await pool.connect()
        answer = _Streaming(MAX_ERROR_BYTES, capacity=4)
        conn = HTTP1Connection(stream, True, self._params)
        conn.set_max_body_size(1 << 62)  # a 2xx body streams; others are bounded by `answer`
        reading: asyncio.Future[bool] | None = None
        try:
            await conn.write_headers(
                httputil.RequestStartLine("GET", path, "HTTP/1.1"), httputil.HTTPHeaders(headers)
            )
            conn.finish()
            reading = asyncio.ensure_future(conn.read_response(answer))
            reading.add_done_callback(_retrieve)  # a stream closed early ends it with an error
            waits: list[asyncio.Future[Any]] = [reading, answer.headers_ready]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not answer.started:
                stream.close()
                if reused:
                    return None
                raise StreamClosedError(real_error=ConnectionError("closed before answering"))
            if 200 <= answer.status < 300:
                size = _stream_size(answer.headers, key)
                released = False

                def release() -> None:
                    nonlocal released
                    if not released:
                        released = True
                        pool.stream_slots.release()

                return ObjectStream(self, stream, reading, answer, size, release)
            alive = await reading
        except BaseException:
            stream.close()
            if reading is not None and not reading.done():
                reading.cancel()
            raise
        if answer.too_large or not answer.done:
            stream.close()
            raise StreamClosedError(real_error=ConnectionError("an unusable error answer"))
        self._finish(stream, "GET", answer, alive)
        return Response(answer.status, answer.headers, b"".join(answer.chunks))

    def _finish(self, stream: IOStream, method: str, answer: _Collect, alive: bool) -> None:
        """Keep the connection for the next request if the answer allows, else close it."""
        keep = (
            alive
            and answer.version == "HTTP/1.1"
            and answer.headers.get("Connection", "").lower() != "close"
            and (
                "Content-Length" in answer.headers
                or "chunked" in answer.headers.get("Transfer-Encoding", "").lower()
                or method == "HEAD"
                or answer.status in (204, 304)
            )
        )
        if keep:
            self._pool.give_back(stream)
        else:
            stream.close()

    async def head(self, key: str) -> ObjectInfo:
        resp = await self._request("HEAD", key)
        if resp.status != 200:
            self._raise(resp, key)
        return ObjectInfo(
            key=key,
            size=int(resp.headers.get("Content-Length", "0")),
            last_modified=_http_date(resp.headers.get("Last-Modified")),
        )

    async def exists(self, key: str) -> bool:
        try:
            await self.head(key)
        except ObjectNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        """Remove an object; a missing one is no error (S3 answers 204 either way)."""
        resp = await self._request("DELETE", key)
        if resp.status not in (200, 204, 404):
            self._raise(resp, key)
        if resp.status == 404 and _error_code(resp) == "NoSuchBucket":
            self._raise(resp, key)

    async def list(self, prefix: str, *, page_size: int = 1000) -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, page by page (ListObjectsV2)."""
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix, "max-keys": str(page_size)}
            if token is not None:
                query["continuation-token"] = token
            resp = await self._request("GET", None, query=query, limit=MAX_XML_BYTES)
            if resp.status != 200:
                self._raise(resp, prefix)
            objects, token = _parse_list(resp.body)
            for info in objects:
                yield info
            if token is None:
                return

    async def check_bucket(self, time_limit: float | None = None) -> None:
        """Cheap proof that the bucket answers with our credentials: a one-key listing."""
        query = {"list-type": "2", "prefix": self.config.prefix, "max-keys": "1"}
        resp = await self._request(
            "GET", None, query=query, limit=MAX_XML_BYTES, time_limit=time_limit
        )
        if resp.status != 200:
            self._raise(resp, self.config.bucket)

    async def create_bucket(self) -> None:
        """Create the bucket (for tests and first setup); an existing one of ours is fine."""
        body = b""
        if self.config.region != "us-east-1":
            body = (
                "<CreateBucketConfiguration><LocationConstraint>"
                f"{self.config.region}</LocationConstraint></CreateBucketConfiguration>"
            ).encode()
        resp = await self._request(
            "PUT",
            None,
            body=_Body(sha256=hashlib.sha256(body).hexdigest(), size=len(body), data=body),
        )
        if resp.status != 200 and _error_code(resp) != "BucketAlreadyOwnedByYou":
            self._raise(resp, self.config.bucket)

    async def close(self) -> None:
        self._pool.close()

    # -- requests ----------------------------------------------------------------------

    def _target(self, key: str | None) -> str:
        path = self._bucket_path + "/" + (key or "")
        return uri_encode(path, keep_slash=True)

    async def _request(
        self,
        method: str,
        key: str | None,
        *,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        body: _Body | None = None,
        limit: int = MAX_ERROR_BYTES,
        time_limit: float | None = None,
    ) -> Response:
        """Sign and send one request; retry once on a fresh connection when a kept-alive one
        turns out closed, and once after a 500 or 503 (every call here is idempotent)."""
        if self._pool.closed:
            raise StorageUnavailable("The S3 client is closed.")
        path = self._target(key)
        query = dict(query or {})
        budget = time_limit or self.request_timeout + (body.size if body else 0) / self.min_rate
        try:
            async with asyncio.timeout(budget):
                for attempt in range(3):
                    resp = await self._send(method, path, query, headers or {}, body, limit)
                    if resp is None:  # a reused connection was closed: once more, fresh
                        continue
                    if resp.status in (500, 503) and attempt == 0:
                        await asyncio.sleep(0.05)
                        continue
                    if resp.status >= 500:
                        raise StorageUnavailable(
                            f"The object store answered {resp.status} {_error_code(resp)}; "
                            "try again shortly."
                        )
                    return resp
                raise StorageUnavailable(
                    "The object store keeps closing the connection; try again shortly."
                )
        except TimeoutError:
            raise StorageUnavailable(
                f"The object store did not answer {method} within {budget:.1f} s; "
                "try again shortly."
            ) from None
        except _TRANSIENT as exc:
            reason = getattr(exc, "real_error", None) or exc
            raise StorageUnavailable(
                f"The object store is unreachable ({reason or type(exc).__name__}); "
                "try again shortly."
            ) from exc

    async def _send(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        extra: Mapping[str, str],
        body: _Body | None,
        limit: int,
    ) -> Response | None:
        """One exchange. None when a reused connection failed before any answer."""
        headers = {"host": self._host_header, **extra}
        if body is not None:
            headers["content-length"] = str(body.size)
        headers.update(
            sign(
                method,
                path,
                query,
                headers,
                body.sha256 if body else EMPTY_SHA256,
                self.config.credentials,
                self.config.region,
                datetime.now(UTC),
            )
        )
        target = path + ("?" + canonical_query(query) if query else "")
        pool = self._pool
        async with pool.slots:
            stream = pool.take_idle()
            reused = stream is not None
            if stream is None:
                stream = await pool.connect()
            limit = max(limit, MAX_ERROR_BYTES)  # room for an error's XML, whatever was asked
            delegate = _Collect(limit, head=method == "HEAD")
            conn = HTTP1Connection(stream, True, self._params)
            conn.set_max_body_size(limit)
            reading: asyncio.Future[bool] | None = None
            wrote_all = False
            try:
                await conn.write_headers(
                    httputil.RequestStartLine(method, target, "HTTP/1.1"),
                    httputil.HTTPHeaders(headers),
                    body.data if body is not None and body.data else None,
                )
                # Read while the body is still being sent: a store may answer (403, 400)
                # before it has the whole body, and close the connection.
                reading = asyncio.ensure_future(conn.read_response(delegate))
                try:
                    complete = True
                    if body is not None and body.path is not None:
                        complete = await self._write_file(conn, body, delegate)
                    if complete:
                        conn.finish()
                        wrote_all = True
                    else:
                        conn.close()  # answered before the whole body went: never reused
                except (StreamClosedError, ConnectionError):
                    if not delegate.started:
                        raise
                    conn.close()
                alive = await reading
            except (StreamClosedError, ConnectionError):
                stream.close()
                if reused and not delegate.started:
                    return None
                raise
            except BaseException:
                stream.close()  # timed out or cancelled mid-exchange: never reuse it
                raise
            finally:
                if reading is not None and not reading.done():
                    reading.cancel()
            if delegate.too_large:
                stream.close()
                raise S3Error(0, "ResponseTooLarge", f"the answer was over {limit} bytes")
            if not delegate.done:
                stream.close()
                if reused and not delegate.started:
                    return None
                raise StreamClosedError(real_error=ConnectionError("the connection closed"))
            self._finish(stream, method, delegate, alive and wrote_all)
        return Response(delegate.status, delegate.headers, b"".join(delegate.chunks))

    async def _write_file(self, conn: HTTP1Connection, body: _Body, answer: _Collect) -> bool:
        """Send the file's bytes; False if the store answered before it had them all."""
        assert body.path is not None
        path = body.path
        f: BinaryIO = await self._run(lambda: open(path, "rb"))  # noqa: SIM115
        try:
            remaining = body.size
            while remaining > 0:
                if answer.started:
                    return False
                chunk = await self._run(functools.partial(f.read, min(UPLOAD_CHUNK, remaining)))
                if not chunk:
                    raise OSError(f"{path} is shorter than the {body.size} bytes announced")
                remaining -= len(chunk)
                await conn.write(chunk)  # back-pressure: waits until the socket took it
            return True
        finally:
            await self._run(f.close)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _raise(self, resp: Response, key: str) -> NoReturn:
        code = _error_code(resp)
        if resp.status == 404 and code not in ("NoSuchBucket",):
            raise ObjectNotFound(f"no object {key!r} in bucket {self.config.bucket!r}")
        raise S3Error(resp.status, code, _error_message(resp) or f"on {key!r}")


# -- parsing -------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _error_fields(resp: Response) -> dict[str, str]:
    if not resp.body or len(resp.body) > MAX_ERROR_BYTES:
        return {}
    try:
        root = ET.fromstring(resp.body)  # noqa: S314 - bounded, from our endpoint only
    except ET.ParseError:
        return {}
    return {_local(el.tag): (el.text or "") for el in root}


def _error_code(resp: Response) -> str:
    return _error_fields(resp).get("Code", "") or f"HTTP{resp.status}"


def _error_message(resp: Response) -> str:
    return _error_fields(resp).get("Message", "")


def _parse_list(body: bytes) -> tuple[list[ObjectInfo], str | None]:
    root = ET.fromstring(body)  # noqa: S314 - bounded, from our endpoint only
    objects: list[ObjectInfo] = []
    truncated = False
    token: str | None = None
    for el in root:
        name = _local(el.tag)
        if name == "Contents":
            fields = {_local(c.tag): (c.text or "") for c in el}
            objects.append(
                ObjectInfo(
                    key=fields["Key"],
                    size=int(fields.get("Size", "0")),
                    last_modified=datetime.fromisoformat(fields["LastModified"]),
                )
            )
        elif name == "IsTruncated":
            truncated = (el.text or "").strip().lower() == "true"
        elif name == "NextContinuationToken":
            token = el.text or None
    return objects, token if truncated else None


def _retrieve(future: asyncio.Future[bool]) -> None:
    if not future.cancelled():
        future.exception()


def _stream_size(headers: httputil.HTTPHeaders, key: str) -> int:
    """The whole object's size from a 206's Content-Range, or a 200's Content-Length."""
    if "Content-Range" in headers:
        return _total_size(headers, key)
    try:
        return int(headers["Content-Length"])
    except (KeyError, ValueError):
        raise S3Error(0, "NoContentLength", f"no size in the answer for {key!r}") from None


def _empty_stream(client: S3Client, size: int) -> ObjectStream:
    """A stream at (or past) the end of an object: nothing to read."""
    answer = _Streaming(0, capacity=1)
    answer.channel.end()
    return ObjectStream(client, None, None, answer, size, client._pool.stream_slots.release)


_CONTENT_RANGE = re.compile(r"^bytes (?:\d+-\d+|\*)/(\d+)$")


def _total_size(headers: httputil.HTTPHeaders, key: str) -> int:
    match = _CONTENT_RANGE.match(headers.get("Content-Range", "").strip())
    if match is None:
        raise S3Error(0, "BadContentRange", f"no usable Content-Range for {key!r}")
    return int(match.group(1))


def _http_date(value: str | None) -> datetime:
    try:
        parsed = email.utils.parsedate_to_datetime(value or "")
    except (TypeError, ValueError):
        return datetime.fromtimestamp(0, UTC)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
