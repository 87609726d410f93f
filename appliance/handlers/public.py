"""The public image proxy at /i/{id}: no auth, immutable caching, conditionals and ranges.

Order of work, as in Tornado's StaticFileHandler: resolve -> validate -> headers ->
preconditions (RFC 9110 13.2.2) -> Range -> Content-Length -> body, streamed in 1 MiB chunks
with back-pressure. Hot representations (headers and small bodies) are kept in memory, so a
newsletter burst for one image touches neither SQLite nor the disk.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from tornado.httputil import HTTPHeaders
from tornado.iostream import StreamClosedError

from appliance import conditional, variants
from appliance.blobs import BlobNotFound, BlobReader
from appliance.errors import ApiError, Gone, NotFound
from appliance.handlers.base import BaseHandler, Services, error_payload
from appliance.library import Library
from appliance.store import ImageRecord

CACHE_CONTROL = "public, max-age=31536000, immutable"
# A deleted image is gone for ever (ids are never reused), so its 410 may be cached, but not
# for ever: a day lets mail proxies and CDNs absorb the reopening of old newsletters, while a
# library restored from a backup (the one way a deleted id comes back) serves again within a
# day. Not `immutable`, so that a reload revalidates.
GONE_CACHE_CONTROL = "public, max-age=86400"
# Beyond BaseHandler's nosniff and Referrer-Policy: image bytes are never a document that
# could run script, and mail clients on any origin may embed them.
PUBLIC_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; sandbox"),
    ("Cross-Origin-Resource-Policy", "cross-origin"),
)
CHUNK = 1024 * 1024  # 64 KiB chunks cost 1.7x the CPU per MB (make bench, 10 MB GET)


def gone() -> Gone:
    return Gone(
        "This image was deleted.",
        code="image_deleted",
        headers={"Cache-Control": GONE_CACHE_CONTROL},
    )


GONE_BODY = error_payload(gone().body())  # the fast lane answers with exactly these bytes


class PreconditionFailed(ApiError):
    status = 412
    code = "precondition_failed"


class RangeNotSatisfiable(ApiError):
    status = 416
    code = "range_not_satisfiable"


@dataclass(frozen=True)
class Representation:
    """One servable object with its validators; `body` is set when it is small enough to
    keep in memory."""

    sha256: str
    variant: str | None
    size: int
    mime_type: str
    etag: str
    last_modified: datetime
    last_modified_header: str
    body: bytes | None


def _created(record: ImageRecord) -> datetime:
    return datetime.strptime(record.created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


CacheKey = tuple[str, str]  # (image id, variants.Ask.key)


class RepresentationCache:
    """LRU of representations by (id, what was asked), bounded in entries and in body
    bytes. The query and path forms of one ask share a key."""

    def __init__(
        self,
        max_entries: int = 4096,
        max_bytes: int = 64 * 1024 * 1024,
        max_body: int = 1024 * 1024,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_body = max_body
        self._entries: OrderedDict[CacheKey, Representation] = OrderedDict()
        self._asks: dict[str, set[str]] = {}  # image id -> its asks in the cache
        self._bytes = 0
        # Answers made from memory and answers that loaded first (read by the metrics).
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> Representation | None:
        rep = self._entries.get(key)
        if rep is not None:
            self._entries.move_to_end(key)
        return rep

    def put(self, key: CacheKey, rep: Representation) -> None:
        self.discard(key)
        self._entries[key] = rep
        self._asks.setdefault(key[0], set()).add(key[1])
        self._bytes += len(rep.body or b"")
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self.discard(next(iter(self._entries)))

    def discard(self, key: CacheKey) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old.body or b"")
            asks = self._asks[key[0]]
            asks.discard(key[1])
            if not asks:
                del self._asks[key[0]]

    def clear(self) -> None:
        self._entries.clear()
        self._asks.clear()
        self._bytes = 0

    def forget(self, image_id: str) -> None:
        for ask in list(self._asks.get(image_id, ())):
            self.discard((image_id, ask))


@dataclass(frozen=True)
class Plan:
    """What to answer for a representation: 200 (whole), 206 (one range) or 304."""

    status: int
    start: int
    length: int
    byte_range: conditional.ByteRange | None = None


def plan_response(rep: Representation, headers: HTTPHeaders) -> Plan:
    """RFC 9110 13.2.2: If-Match, else If-Unmodified-Since (412); then If-None-Match, else
    If-Modified-Since (304); Range last, only when no precondition answered first, and only
    when If-Range (if any) holds. Raises the 412 and 416 errors."""
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not conditional.match(if_match, rep.etag):
            raise PreconditionFailed("The image does not match If-Match.")
    elif (ius := headers.get("If-Unmodified-Since")) is not None and not (
        conditional.unmodified_since(ius, rep.last_modified)
    ):
        raise PreconditionFailed("The image was modified since If-Unmodified-Since.")
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        not_modified = conditional.none_match(if_none_match, rep.etag)
    else:
        ims = headers.get("If-Modified-Since")
        not_modified = ims is not None and not conditional.modified_since(ims, rep.last_modified)
    if not_modified:
        return Plan(304, 0, 0)
    range_header = headers.get("Range")
    if range_header is None:
        return Plan(200, 0, rep.size)
    if_range = headers.get("If-Range")
    if if_range is not None and not conditional.if_range_holds(
        if_range, rep.etag, rep.last_modified
    ):
        return Plan(200, 0, rep.size)
    try:
        byte_range = conditional.parse_range(range_header, rep.size)
    except conditional.Unsatisfiable:
        raise RangeNotSatisfiable(
            f"The range is outside the image's {rep.size} bytes.",
            headers={"Content-Range": f"bytes */{rep.size}"},
        ) from None
    if byte_range is None:
        return Plan(200, 0, rep.size)
    return Plan(206, byte_range.start, byte_range.length, byte_range)


def representation_headers(rep: Representation, plan: Plan) -> list[tuple[str, str]]:
    """The headers that describe the image in an answer of this plan (304: no body ones)."""
    headers = [
        ("Etag", rep.etag),
        ("Last-Modified", rep.last_modified_header),
        ("Cache-Control", CACHE_CONTROL),
        ("Accept-Ranges", "bytes"),
    ]
    if plan.status != 304:
        headers += [("Content-Type", rep.mime_type), ("Content-Length", str(plan.length))]
    if plan.byte_range is not None:
        headers.append(("Content-Range", plan.byte_range.content_range(rep.size)))
    return headers


class PublicImageHandler(BaseHandler):
    cache: RepresentationCache

    def initialize(self, services: Services, cache: RepresentationCache) -> None:  # type: ignore[override]
        super().initialize(services)
        self.cache = cache

    def set_default_headers(self) -> None:
        super().set_default_headers()
        for name, value in PUBLIC_HEADERS:
            self.set_header(name, value)

    @property
    def library(self) -> Library:
        return self.services.library

    async def head(self, path: str) -> None:  # type: ignore[override]
        await self.get(path, include_body=False)

    async def get(self, path: str, include_body: bool = True) -> None:
        image_id, ask = variants.split_path(path)
        if ask is None:
            ask = variants.from_query(self._query())
        record = await self.library.public_record(image_id)  # from its cache when it can
        if record is None:
            raise NotFound("No image with this id.", code="image_not_found")
        if record.deleted_at is not None:
            raise gone()
        rep = self.cache.get((image_id, ask.key))
        reader = None
        if rep is None:
            self.cache.misses += 1
            rep, reader = await self._load(record, ask)
        else:
            self.cache.hits += 1
        try:
            byte_range = self._send(rep, include_body)
            if include_body:  # a GET answered 200, 206 or 304 is a fetch; HEAD is not
                self.services.fetch_stats.count(image_id, self.request.headers.get("User-Agent"))
            if not self._finished:
                await self._stream(record, rep, byte_range, reader)
        finally:
            if reader is not None:
                await reader.close()

    def _query(self) -> dict[str, list[str]]:
        return {
            name: [v.decode("latin-1") for v in values]
            for name, values in self.request.query_arguments.items()
        }

    async def _load(
        self, record: ImageRecord, ask: variants.Ask
    ) -> tuple[Representation, BlobReader | None]:
        """The representation, kept in the cache; with the open reader when its body is too
        large to keep (the caller streams from it and closes it)."""
        try:
            rendering = await self.library.resolve(record, ask)
            rendering, reader = await self.library.open_representation(record, rendering)
        except BlobNotFound:
            raise await self._vanished(record) from None
        try:
            body = await _read_whole(reader) if reader.size <= self.cache.max_body else None
        except BaseException:
            await reader.close()
            raise
        if body is not None:
            await reader.close()
        modified = _created(record)
        rep = Representation(
            sha256=record.sha256,
            variant=None if rendering is None else rendering.name,
            size=reader.size if body is None else len(body),
            mime_type=record.mime_type if rendering is None else rendering.mime_type,
            etag=f'"{record.sha256}"' if rendering is None else rendering.etag(record.sha256),
            last_modified=modified,
            last_modified_header=conditional.http_date(modified),
            body=body,
        )
        self.cache.put((record.id, ask.key), rep)
        return rep, (None if body is not None else reader)

    async def _vanished(self, record: ImageRecord) -> ApiError:
        """The file went away under us: the image was deleted meanwhile (else a bug)."""
        current = await self.library.images.get_public(record.id)
        if current is not None and current.deleted_at is not None:
            return gone()
        return ApiError("The image's file is missing; the error was logged.")

    def _send(self, rep: Representation, include_body: bool) -> conditional.ByteRange | None:
        """Headers, preconditions and Range. Finishes the answer when it can (304, HEAD, a
        cached body); otherwise returns the range (None: all) still to be streamed."""
        plan = plan_response(rep, self.request.headers)
        self.set_status(plan.status)
        for name, value in representation_headers(rep, plan):
            self.set_header(name, value)
        if plan.status == 304 or not include_body:
            self.finish()
        elif rep.body is not None:
            self.finish(rep.body[plan.start : plan.start + plan.length])
        return plan.byte_range

    async def _stream(
        self,
        record: ImageRecord,
        rep: Representation,
        byte_range: conditional.ByteRange | None,
        reader: BlobReader | None,
    ) -> None:
        """A large body from its open object: a delete meanwhile cannot change what we
        send (content-addressed bytes never change; an open file stays readable)."""
        start = 0 if byte_range is None else byte_range.start
        remaining = rep.size if byte_range is None else byte_range.length
        try:
            if reader is None or start != 0:
                if reader is not None:
                    await reader.close()
                reader = await self.library.blobs.open(rep.sha256, rep.variant, start)
        except BlobNotFound:
            # Nothing was flushed yet, so the error answer replaces the headers set so far.
            self.cache.forget(record.id)
            raise await self._vanished(record) from None
        try:
            while remaining > 0:
                chunk = await reader.read(min(CHUNK, remaining))
                if not chunk:
                    raise OSError(f"{record.sha256} is shorter than recorded")
                remaining -= len(chunk)
                self.write(chunk)
                await self.flush()  # back-pressure: wait until the client took it
        except StreamClosedError:
            return  # the client hung up; nothing more to do
        finally:
            await reader.close()
        self.finish()


async def _read_whole(reader: BlobReader) -> bytes:
    parts: list[bytes] = []
    while chunk := await reader.read(CHUNK):
        parts.append(chunk)
    return b"".join(parts)
