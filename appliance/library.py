"""The image library: what an upload, a delete or a thumbnail request does, step by step.

It ties the metadata store, the blob files and the imaging code together and keeps their
order right: blob durable before its row, row gone before its blob, one blob per content.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from appliance import imaging, validation
from appliance.blobs import BlobStore, TempBlob
from appliance.errors import (
    ApiError,
    BadRequest,
    NotFound,
    UnsupportedMediaType,
    storage_error,
)
from appliance.store import ImageRecord, ImageStore, NewImage

log = logging.getLogger("pictor.library")
T = TypeVar("T")

THUMBNAIL = "thumbnail"
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}


@dataclass(frozen=True)
class UploadForm:
    filename: str | None
    alt_text: str | None
    folder: str | None


class Library:
    def __init__(
        self,
        images: ImageStore,
        blobs: BlobStore,
        *,
        io_pool: ThreadPoolExecutor,
        imaging_pool: ThreadPoolExecutor,
        cache_size: int = 10_000,
    ) -> None:
        self.images = images
        self.blobs = blobs
        self._io = io_pool
        self._imaging = imaging_pool
        # Striped locks: a blob's publication with its row, and a row's deletion with its
        # blob's removal, never interleave for the same digest.
        self._blob_locks = [asyncio.Lock() for _ in range(64)]
        self._thumbnails_in_flight: dict[str, asyncio.Future[Path]] = {}
        # Public lookups by id: records never change but for their tombstone, so they are
        # cached (bounded, LRU) and updated by delete. Unknown ids are not cached.
        self._public: OrderedDict[str, ImageRecord] = OrderedDict()
        self._public_max = cache_size
        self.on_delete: list[Callable[[str], None]] = []  # e.g. the proxy's body cache
        # Read by the metrics: imaging jobs queued or running, representations rendered.
        self.imaging_jobs = 0
        self.rendered = 0

    async def run_io(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def run_imaging(self, fn: Callable[..., T], *args: object) -> T:
        self.imaging_jobs += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._imaging, fn, *args)
        finally:
            self.imaging_jobs -= 1

    def _lock(self, sha256: str) -> asyncio.Lock:
        return self._blob_locks[int(sha256[:8], 16) % len(self._blob_locks)]

    # -- start-up -----------------------------------------------------------------------

    async def sweep(self) -> tuple[int, int]:
        """Remove unfinished uploads and blobs no live image uses (a crash's leftovers), with
        their thumbnails, and thumbnails left without a blob (rendered while it was deleted)."""
        temps = await self.run_io(self.blobs.sweep_temp)
        await self._drop_stale_thumbnails()
        live = await self.images.live_digests()
        on_disk = await self.run_io(self.blobs.all_digests)
        derived = await self.run_io(self.blobs.derived_digests)
        orphans = on_disk - live
        for sha in orphans | (derived - live):
            await self.run_io(self.blobs.delete, sha)
        for sha in live - on_disk:
            log.error("blob %s is missing: its images cannot be served (run `verify`)", sha)
        return temps, len(orphans)

    async def _drop_stale_thumbnails(self) -> None:
        """Thumbnails made by code of another thumbnail version are removed (and remade on
        demand), so that no old bytes are served under a new ETag after an upgrade."""
        if await self.images.state("thumbnail_version") == imaging.THUMBNAIL_VERSION:
            return
        dropped = await self.run_io(self.blobs.drop_derived)
        if dropped:
            log.info("removed %d thumbnail(s) of another version", dropped)
        await self.images.set_state("thumbnail_version", imaging.THUMBNAIL_VERSION)

    # -- upload -------------------------------------------------------------------------

    async def ingest(self, tenant_id: int, temp: TempBlob, form: UploadForm) -> ImageRecord:
        """Validate a received upload and publish it; the temp file is consumed either way."""
        try:
            mime = imaging.sniff(temp.head)
            if mime is None:
                raise UnsupportedMediaType(
                    "The file is not a JPEG, PNG, GIF or WebP image. Upload one of those."
                )
            alt_text = validation.alt_text(form.alt_text or "")
            folder = validation.folder(form.folder)
            filename = validation.filename(form.filename, _EXTENSIONS[mime])
            try:
                await self.run_io(temp.close)  # flush and fsync: a full disk shows here
            except OSError as exc:
                raise storage_error(exc) from exc
            try:
                info = await self.run_imaging(imaging.probe, str(temp.path), mime)
                thumb = await self.run_imaging(imaging.thumbnail, str(temp.path), info)
            except imaging.ImageRejected as exc:
                raise BadRequest(exc.message, code=exc.code) from None
            sha = temp.sha256
            new = NewImage(
                tenant_id=tenant_id,
                filename=filename,
                alt_text=alt_text,
                folder=folder,
                mime_type=mime,
                size_bytes=temp.size,
                width=info.width,
                height=info.height,
                sha256=sha,
            )
            async with self._lock(sha):
                try:
                    await self.run_io(self.blobs.commit, temp)
                    record = await self.images.insert(new)
                except (OSError, sqlite3.Error) as exc:
                    raise storage_error(exc) from exc
                # Under the lock, so that a delete of this content cannot slip in between
                # and leave a thumbnail without its blob.
                await self._keep_thumbnail(sha, thumb)
        except BaseException:
            await self.run_io(temp.discard)
            raise
        return record

    async def _keep_thumbnail(self, sha: str, thumb: bytes) -> None:
        """The thumbnail was made anyway (it proved the file decodes); keeping it makes the
        gallery's first view instant. Losing it costs only a remake on first request."""
        try:
            if not await self.run_io(self.blobs.derived_path(sha, THUMBNAIL).is_file):
                await self.run_io(self.blobs.put_derived, sha, THUMBNAIL, thumb)
        except OSError:
            log.exception("could not keep the thumbnail of %s", sha)

    # -- delete -------------------------------------------------------------------------

    async def delete(self, tenant_id: int, image_id: str) -> None:
        record = await self.images.get(tenant_id, image_id)
        if record is None:
            raise NotFound("No image with this id.", code="image_not_found")
        async with self._lock(record.sha256):
            result = await self.images.delete(tenant_id, image_id)
            if result is None:
                raise NotFound("No image with this id.", code="image_not_found")
            deleted, blob_unused = result
            self._remember(deleted)
            for forget in self.on_delete:
                forget(deleted.id)
            if blob_unused:
                await self.run_io(self.blobs.delete, deleted.sha256)

    # -- public lookups -----------------------------------------------------------------

    def _remember(self, record: ImageRecord) -> None:
        self._public[record.id] = record
        self._public.move_to_end(record.id)
        while len(self._public) > self._public_max:
            self._public.popitem(last=False)

    def cached_public(self, image_id: str) -> ImageRecord | None:
        record = self._public.get(image_id)
        if record is not None:
            self._public.move_to_end(image_id)
        return record

    async def public_record(self, image_id: str) -> ImageRecord | None:
        record = self.cached_public(image_id)
        if record is None:
            record = await self.images.get_public(image_id)
            if record is not None:
                self._remember(record)
        return record

    async def thumbnail_path(self, record: ImageRecord) -> Path:
        """The thumbnail file, made now if it is missing; concurrent first requests for the
        same content share one rendering."""
        path = self.blobs.derived_path(record.sha256, THUMBNAIL)
        if path.is_file():
            return path
        pending = self._thumbnails_in_flight.get(record.sha256)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._thumbnails_in_flight[record.sha256] = future
        try:
            path = await self._render_thumbnail(record)
            self.rendered += 1
            future.set_result(path)
            return path
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self._thumbnails_in_flight[record.sha256]

    async def _render_thumbnail(self, record: ImageRecord) -> Path:
        source = self.blobs.path(record.sha256)
        if not await self.run_io(source.is_file):
            raise FileNotFoundError(source)  # deleted meanwhile: the caller answers 410
        try:
            info = await self.run_imaging(imaging.probe, str(source), record.mime_type)
            data = await self.run_imaging(imaging.thumbnail, str(source), info)
        except imaging.ImageRejected as exc:  # the stored original was accepted once
            raise ApiError(f"The thumbnail could not be made: {exc.message}") from exc
        return await self.run_io(self.blobs.put_derived, record.sha256, THUMBNAIL, data)
