"""The public image proxy at /i/{id}: no auth, immutable caching, conditionals and ranges.

Order of work, as in Tornado's StaticFileHandler: resolve -> validate -> headers ->
preconditions (RFC 9110 13.2.2) -> Range -> Content-Length -> body, streamed in 64 KiB chunks
with back-pressure. Hot representations (headers and small bodies) are kept in memory, so a
newsletter burst for one image touches neither SQLite nor the disk.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from tornado.iostream import StreamClosedError

from appliance import conditional
from appliance.errors import ApiError, BadRequest, Gone, NotFound
from appliance.handlers.base import BaseHandler
from appliance.imaging import THUMBNAIL_VERSION
from appliance.library import THUMBNAIL, Library
from appliance.store import ImageRecord

CACHE_CONTROL = "public, max-age=31536000, immutable"
CHUNK = 64 * 1024
VARIANTS = (None, THUMBNAIL)


class PreconditionFailed(ApiError):
    status = 412
    code = "precondition_failed"


class RangeNotSatisfiable(ApiError):
    status = 416
    code = "range_not_satisfiable"


@dataclass(frozen=True)
class Representation:
    """One servable file with its validators; `body` is set when it is small enough to keep."""

    path: str
    size: int
    mime_type: str
    etag: str
    last_modified: datetime
    last_modified_header: str
    body: bytes | None


def _created(record: ImageRecord) -> datetime:
    return datetime.strptime(record.created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


class RepresentationCache:
    """LRU of representations by (id, variant), bounded in entries and in body bytes."""

    def __init__(
        self,
        max_entries: int = 4096,
        max_bytes: int = 64 * 1024 * 1024,
        max_body: int = 1024 * 1024,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_body = max_body
        self._entries: OrderedDict[tuple[str, str | None], Representation] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, str | None]) -> Representation | None:
        rep = self._entries.get(key)
        if rep is not None:
            self._entries.move_to_end(key)
        return rep

    def put(self, key: tuple[str, str | None], rep: Representation) -> None:
        self.discard(key)
        self._entries[key] = rep
        self._bytes += len(rep.body or b"")
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= len(old.body or b"")

    def discard(self, key: tuple[str, str | None]) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old.body or b"")

    def forget(self, image_id: str) -> None:
        for variant in VARIANTS:
            self.discard((image_id, variant))


def _read_all(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _open_at(path: str, offset: int) -> BinaryIO:
    f = open(path, "rb")  # noqa: SIM115 - closed by the caller
    f.seek(offset)
    return f


class PublicImageHandler(BaseHandler):
    cache: RepresentationCache

    def initialize(self, services: object, cache: RepresentationCache) -> None:  # type: ignore[override]
        super().initialize(services)  # type: ignore[arg-type]
        self.cache = cache

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", "default-src 'none'; sandbox")
        self.set_header("Cross-Origin-Resource-Policy", "cross-origin")

    @property
    def library(self) -> Library:
        return self.services.library

    async def head(self, image_id: str) -> None:
        await self.get(image_id, include_body=False)

    async def get(self, image_id: str, include_body: bool = True) -> None:
        variant = self._variant()
        record = self.library.cached_public(image_id) or await self.library.public_record(image_id)
        if record is None:
            raise NotFound("No image with this id.", code="image_not_found")
        if record.deleted_at is not None:
            raise Gone("This image was deleted.", code="image_deleted")
        rep = self.cache.get((image_id, variant)) or await self._load(record, variant)
        byte_range = self._send(rep, include_body)
        if not self._finished:
            await self._stream(record, rep, byte_range)

    def _variant(self) -> str | None:
        values = self.request.query_arguments.get("variant")
        if not values:
            return None
        value = values[-1].decode("latin-1")
        if len(values) > 1 or value not in VARIANTS:
            raise BadRequest(
                f"Unknown variant {value[:40]!r}; the only variant is 'thumbnail'.",
                code="unknown_variant",
            )
        return value

    async def _load(self, record: ImageRecord, variant: str | None) -> Representation:
        if variant == THUMBNAIL:
            path = str(await self.library.thumbnail_path(record))
            etag = f'"{record.sha256[:32]}-t{THUMBNAIL_VERSION}"'
        else:
            path = str(self.library.blobs.path(record.sha256))
            etag = f'"{record.sha256}"'
        try:
            size = (await self.library.run_io(os.stat, path)).st_size
            body = (
                await self.library.run_io(_read_all, path) if size <= self.cache.max_body else None
            )
        except FileNotFoundError:
            raise await self._vanished(record) from None
        modified = _created(record)
        rep = Representation(
            path=path,
            size=size if body is None else len(body),
            mime_type=record.mime_type,
            etag=etag,
            last_modified=modified,
            last_modified_header=conditional.http_date(modified),
            body=body,
        )
        self.cache.put((record.id, variant), rep)
        return rep

    async def _vanished(self, record: ImageRecord) -> ApiError:
        """The file went away under us: the image was deleted meanwhile (else a bug)."""
        current = await self.library.images.get_public(record.id)
        if current is not None and current.deleted_at is not None:
            return Gone("This image was deleted.", code="image_deleted")
        return ApiError("The image's file is missing; the error was logged.")

    def _send(self, rep: Representation, include_body: bool) -> conditional.ByteRange | None:
        """Headers, preconditions and Range. Finishes the answer when it can (304, HEAD, a
        cached body); otherwise returns the range (None: all) still to be streamed."""
        self.set_header("Content-Type", rep.mime_type)
        self.set_header("ETag", rep.etag)
        self.set_header("Last-Modified", rep.last_modified_header)
        self.set_header("Cache-Control", CACHE_CONTROL)
        self.set_header("Accept-Ranges", "bytes")
        headers = self.request.headers
        # RFC 9110 13.2.2: If-Match, else If-Unmodified-Since; then If-None-Match, else
        # If-Modified-Since; Range last, and only when no precondition answered first.
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
            not_modified = ims is not None and not conditional.modified_since(
                ims, rep.last_modified
            )
        if not_modified:
            self.set_status(304)
            self.finish()
            return None
        byte_range = self._range(rep)
        if byte_range is not None:
            self.set_status(206)
            self.set_header("Content-Range", byte_range.content_range(rep.size))
            start, length = byte_range.start, byte_range.length
        else:
            start, length = 0, rep.size
        self.set_header("Content-Length", str(length))
        if not include_body:
            self.finish()
        elif rep.body is not None:
            self.finish(rep.body[start : start + length])
        return byte_range

    def _range(self, rep: Representation) -> conditional.ByteRange | None:
        header = self.request.headers.get("Range")
        if header is None:
            return None
        if_range = self.request.headers.get("If-Range")
        if if_range is not None and not conditional.if_range_holds(
            if_range, rep.etag, rep.last_modified
        ):
            return None
        try:
            return conditional.parse_range(header, rep.size)
        except conditional.Unsatisfiable:
            raise RangeNotSatisfiable(
                f"The range is outside the image's {rep.size} bytes.",
                headers={"Content-Range": f"bytes */{rep.size}"},
            ) from None

    async def _stream(
        self, record: ImageRecord, rep: Representation, byte_range: conditional.ByteRange | None
    ) -> None:
        """A large body from its open file: a delete meanwhile cannot change what we send."""
        start = 0 if byte_range is None else byte_range.start
        remaining = rep.size if byte_range is None else byte_range.length
        try:
            f = await self.library.run_io(_open_at, rep.path, start)
        except FileNotFoundError:
            # Nothing was flushed yet, so the error answer replaces the headers set so far.
            self.cache.forget(record.id)
            raise await self._vanished(record) from None
        try:
            while remaining > 0:
                chunk = await self.library.run_io(f.read, min(CHUNK, remaining))
                if not chunk:
                    raise OSError(f"{rep.path} is shorter than recorded")
                remaining -= len(chunk)
                self.write(chunk)
                await self.flush()  # back-pressure: wait until the client took it
        except StreamClosedError:
            return  # the client hung up; nothing more to do
        finally:
            with contextlib.suppress(OSError):
                f.close()
        self.finish()
