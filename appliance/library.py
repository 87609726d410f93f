"""The image library: what an upload, a delete or a thumbnail request does, step by step.

It ties the metadata store, the blob store and the imaging code together and keeps the order
of durable steps, whichever backends it holds: blob durable before its row, row tombstoned
before its blob is removed, and both under the digest's lock (`ImageStore.locked`), which
every process on the database shares, so dedup and blob removal stay right across nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from appliance import imaging, validation, variants
from appliance.blobs import BlobNotFound, BlobReader, BlobStore, TempBlob
from appliance.config import RENDER_CONCURRENCY, RENDER_QUEUE
from appliance.errors import (
    ApiError,
    BadRequest,
    BusyRendering,
    NotFound,
    StorageUnavailable,
    UnsupportedMediaType,
    storage_error,
)
from appliance.store import ImageRecord, ImageStore, NewImage
from appliance.store.interface import IMAGE_DELETED

log = logging.getLogger("pictor.library")
T = TypeVar("T")

THUMBNAIL = "thumbnail"
# How long an original no image uses stays in an object store, so that streams of it in
# flight on any node finish; the sweep's grace period covers a node that died meanwhile.
DEFERRED_REMOVAL_SECONDS = 600.0
# Renderings on demand (widths, formats, a lost thumbnail) are limited by load, not for
# correctness: config.RENDER_CONCURRENCY at once, config.RENDER_QUEUE waiting for a slot;
# past that the answer is 503 with Retry-After.
RENDER_RETRY_AFTER = 2  # seconds: a rendering of a 12 MP photo takes about 0.1 s
# What the derived files on disk were made by; any other value at start drops them all.
DERIVED_VERSION = f"t{imaging.THUMBNAIL_VERSION}-r{variants.RENDER_VERSION}"
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
        render_concurrency: int = RENDER_CONCURRENCY,
        render_queue: int = RENDER_QUEUE,
    ) -> None:
        self.images = images
        self.blobs = blobs
        self._io = io_pool
        self.imaging_pool = imaging_pool
        self._renders_in_flight: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._render_slots = asyncio.Semaphore(render_concurrency)
        self.render_queue = render_queue
        self.renders = 0  # renderings made by this process (tests, metrics)
        self.renders_running = 0
        self.renders_waiting = 0
        # The size as shown (after EXIF orientation) of digests whose orientation mattered.
        self._shown: OrderedDict[str, tuple[int, int]] = OrderedDict()
        # Public lookups by id: records never change but for their tombstone, so they are
        # cached (bounded, LRU) and updated by delete, here or (by event) on another node.
        # Unknown ids are not cached.
        self._public: OrderedDict[str, ImageRecord] = OrderedDict()
        self._public_max = cache_size
        self.on_delete: list[Callable[[str], None]] = []  # e.g. the proxy's body cache
        # Read by the metrics: imaging jobs queued or running, representations rendered.
        self.imaging_jobs = 0
        self.rendered = 0
        self.on_reset: list[Callable[[], None]] = []
        # Originals left unused by a delete, removed after a delay when the blob store's
        # readers do not outlive a delete (streams in flight finish first).
        self._removals: dict[str, asyncio.TimerHandle] = {}
        self._removal_tasks: set[asyncio.Task[None]] = set()

    async def run_io(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def run_imaging(self, fn: Callable[..., T], *args: object) -> T:
        self.imaging_jobs += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.imaging_pool, fn, *args)
        finally:
            self.imaging_jobs -= 1

    # -- start-up -----------------------------------------------------------------------

    async def sweep(self, grace_seconds: float = 0.0, *, scratch: bool = True) -> tuple[int, int]:
        """Remove unfinished uploads of this node (only when it is not serving: `scratch`),
        and objects no live image uses (a crash's leftovers, thumbnails rendered while their
        image was deleted) that are older than the grace period. Each original is removed
        under its digest's lock, after a liveness check, so a sweep never races an upload of
        the same bytes on any node."""
        temps = await self.blobs.sweep_scratch() if scratch else 0
        await self._drop_stale_thumbnails()
        live = await self.images.live_digests()
        stored = await self.blobs.list_blobs()
        cutoff = time.time() - grace_seconds
        # Young objects, and objects whose last image was deleted within the grace period
        # (a stream of it may still be running), are left for a later sweep.
        recent = (
            await self.images.deleted_since(
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cutoff))
            )
            if grace_seconds > 0
            else set()
        )
        originals = {b.sha256 for b in stored if b.variant is None}
        unused = {
            b.sha256
            for b in stored
            if b.sha256 not in live and b.modified <= cutoff and b.sha256 not in recent
        }
        removed = 0
        for sha in unused:
            async with self.images.locked(sha) as tx:
                if not await tx.in_use():
                    await self.blobs.delete(sha)
                    removed += sha in originals
        for sha in live - originals:
            log.error("blob %s is missing: its images cannot be served (run `verify`)", sha)
        return temps, removed

    async def sweep_forever(self, interval: float, grace_seconds: float) -> None:
        """Sweep now and then, for as long as the service runs (scaled out, where another
        node's crash leaves orphans that no restart of this one would sweep). The grace
        period keeps a sweep off objects too new to judge."""
        while True:
            try:
                temps, removed = await self.sweep(grace_seconds, scratch=False)
                if temps or removed:
                    log.info("swept %d temp file(s) and %d unused blob(s)", temps, removed)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("the sweep failed; it runs again later", exc_info=True)
            await asyncio.sleep(interval * random.uniform(0.9, 1.1))

    async def _drop_stale_thumbnails(self) -> None:
        """Thumbnails and renderings made by code of another version are removed (and
        remade on demand), so that no old bytes are served under a new ETag after an
        upgrade."""
        if await self.images.state("thumbnail_version") == DERIVED_VERSION:
            return
        dropped = await self.blobs.drop_derived()
        if dropped:
            log.info("removed %d thumbnail(s) and rendering(s) of another version", dropped)
        await self.images.set_state("thumbnail_version", DERIVED_VERSION)

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
            try:
                async with self.images.locked(sha) as tx:
                    is_new = not await self.blobs.exists(sha)
                    if is_new:
                        await self.blobs.put(temp)
                    record = await tx.insert(new)
                    # Under the lock, so that a delete of this content cannot slip in
                    # between and leave a thumbnail without its blob.
                    if is_new:
                        await self._keep_thumbnail(record, thumb)
            except (OSError, sqlite3.Error) as exc:
                raise storage_error(exc) from exc
        finally:
            await self.run_io(temp.discard)  # published by now, or refused
        return record

    async def _keep_thumbnail(self, record: ImageRecord, thumb: bytes) -> None:
        """The thumbnail was made anyway (it proved the file decodes); keeping it makes the
        gallery's first view instant. Losing it costs only a remake on first request."""
        rendering = variants.resolve(
            variants.Ask(thumbnail=True), record.mime_type, record.width, record.height
        )
        assert rendering is not None  # a thumbnail is always made
        try:
            await self.blobs.put_derived(record.sha256, THUMBNAIL, _kept(record, rendering, thumb))
        except (OSError, StorageUnavailable):
            log.exception("could not keep the thumbnail of %s", record.sha256)

    # -- delete -------------------------------------------------------------------------

    async def delete(self, tenant_id: int, image_id: str) -> None:
        """Tombstone first (from then on every node answers 410), then remove the blob if no
        live image uses it any more. A crash in between leaves an unused blob: swept."""
        deleted = await self.images.delete(tenant_id, image_id)
        if deleted is None:
            raise NotFound("No image with this id.", code="image_not_found")
        self._forget(deleted.id)
        self._remember(deleted)
        if self.blobs.readers_survive_delete:
            await self._remove_if_unused(deleted.sha256)
        else:
            self._schedule_removal(deleted.sha256)

    async def _remove_if_unused(self, sha256: str) -> None:
        """Under the digest's lock: an upload of the same bytes on any node either went
        before (and the blob stays) or comes after (and puts it again)."""
        async with self.images.locked(sha256) as tx:
            if not await tx.in_use():
                await self.blobs.delete(sha256)

    def _schedule_removal(self, sha256: str) -> None:
        old = self._removals.pop(sha256, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._removals[sha256] = loop.call_later(
            DEFERRED_REMOVAL_SECONDS, self._start_removal, sha256
        )

    def _start_removal(self, sha256: str) -> None:
        self._removals.pop(sha256, None)
        task = asyncio.get_running_loop().create_task(self._deferred_removal(sha256))
        self._removal_tasks.add(task)
        task.add_done_callback(self._removal_tasks.discard)

    async def _deferred_removal(self, sha256: str) -> None:
        try:
            await self._remove_if_unused(sha256)
        except Exception:  # the store is away: the sweep removes it later
            log.warning("could not remove the unused blob %s; the sweep will", sha256)

    async def remove_unused_now(self) -> int:
        """Run the deferred removals at once (e.g. before a node stops, or in tests);
        returns how many were pending."""
        pending = list(self._removals)
        for sha256 in pending:
            self._removals.pop(sha256).cancel()
            await self._remove_if_unused(sha256)
        return len(pending)

    def cancel_removals(self) -> None:
        """At shutdown: pending removals are left to a later sweep."""
        for handle in self._removals.values():
            handle.cancel()
        self._removals.clear()

    # -- what other nodes did ------------------------------------------------------------

    async def follow_events(self) -> None:
        """Forget what other processes deleted, for as long as the service runs. Missed
        events (a lost connection) are read back by cursor; if they were pruned, every
        cached record is dropped."""
        cursor: int | None = None
        while True:
            try:
                if cursor is None:
                    _, cursor = await self.images.events_since(None)
                await self.images.wait_for_events(1.0)
                events, cursor = await self.images.events_since(cursor)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: retry, caches stay as they are
                log.warning("could not read events; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            for event in events:
                if event.kind == IMAGE_DELETED:
                    self._forget(event.subject)
                elif event.kind == "reset":
                    self._public.clear()
                    for reset in self.on_reset:
                        reset()

    def _forget(self, image_id: str) -> None:
        record = self._public.get(image_id)
        if record is not None and record.deleted_at is None:
            # A tombstone already cached (this node's own delete, whose event comes back
            # too) stays: the fast lane answers its 410s from it.
            del self._public[image_id]
        for forget in self.on_delete:
            forget(image_id)

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

    async def resolve(self, record: ImageRecord, ask: variants.Ask) -> variants.Rendering | None:
        """What answers `ask` for this image: a rendering, or None for the original's bytes.
        Raises NotFound for a path form that names nothing for this image."""
        width, height = record.width, record.height
        if variants.orientation_matters(ask, record.mime_type, width, height):
            width, height = await self._shown_size(record)
        return variants.resolve(ask, record.mime_type, width, height)

    async def _shown_size(self, record: ImageRecord) -> tuple[int, int]:
        """The size as shown, after EXIF orientation, from the original's header (once per
        digest and process; the database keeps only the stored size)."""
        shown = self._shown.get(record.sha256)
        if shown is None:
            async with self._render_slot(), self.blobs.source_file(record.sha256) as source:
                info = await self._probe(record, source)
            shown = info.shown
            self._shown[record.sha256] = shown
            while len(self._shown) > self._public_max:
                self._shown.popitem(last=False)
        return shown

    async def open_representation(
        self, record: ImageRecord, rendering: variants.Rendering | None
    ) -> tuple[variants.Rendering | None, BlobReader]:
        """The stored bytes of the original (`rendering` None) or of a rendering, made now
        if it is missing; concurrent first requests for it share one rendering. Returns the
        rendering that answers (None: the original answers in its place) and an open reader.
        Raises BlobNotFound when the original is gone (deleted meanwhile: answer 410)."""
        if rendering is None:
            return None, await self.blobs.open(record.sha256)
        try:
            reader = await self.blobs.open(record.sha256, rendering.name)
        except BlobNotFound:
            await self._render_once(record, rendering)
            reader = await self.blobs.open(record.sha256, rendering.name)
        if reader.size == 0:  # kept as "no smaller than the original": serve that
            await reader.close()
            return None, await self.blobs.open(record.sha256)
        return rendering, reader

    async def _render_once(self, record: ImageRecord, rendering: variants.Rendering) -> None:
        key = (record.sha256, rendering.name)
        pending = self._renders_in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._renders_in_flight[key] = future
        try:
            await self._render(record, rendering)
            self.rendered += 1
            future.set_result(None)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self._renders_in_flight[key]

    @contextlib.asynccontextmanager
    async def _render_slot(self) -> AsyncIterator[None]:
        """One of the bounded rendering slots; BusyRendering (503) when the queue for them
        is full."""
        if self._render_slots.locked() and self.renders_waiting >= self.render_queue:
            raise BusyRendering(
                f"Too many images are being rendered; try again in {RENDER_RETRY_AFTER} seconds.",
                headers={"Retry-After": str(RENDER_RETRY_AFTER)},
            )
        self.renders_waiting += 1
        try:
            await self._render_slots.acquire()
        finally:
            self.renders_waiting -= 1
        self.renders_running += 1
        try:
            yield
        finally:
            self.renders_running -= 1
            self._render_slots.release()

    async def _probe(self, record: ImageRecord, source: str) -> imaging.ImageInfo:
        try:
            return await self.run_imaging(imaging.probe, source, record.mime_type)
        except imaging.ImageRejected as exc:  # the stored original was accepted once
            raise ApiError(f"The image could not be read: {exc.message}") from exc

    async def _render(self, record: ImageRecord, rendering: variants.Rendering) -> None:
        """Render off the event loop, within a slot, and store the result beside the
        thumbnail (an empty file: the original answers in its place)."""
        async with self._render_slot(), self.blobs.source_file(record.sha256) as source:
            info = await self._probe(record, source)
            try:
                data = await self.run_imaging(variants.render, source, info, rendering)
            except imaging.ImageRejected as exc:
                raise ApiError(f"The image could not be rendered: {exc.message}") from exc
            self.renders += 1
        await self.blobs.put_derived(record.sha256, rendering.name, _kept(record, rendering, data))
        # Deleted while it was rendered? Then what was just stored goes with its original,
        # under the same lock and check as a delete.
        current = await self.images.get_public(record.id)
        if current is None or current.deleted_at is not None:
            async with self.images.locked(record.sha256) as tx:
                if not await tx.in_use():
                    await self.blobs.delete(record.sha256)


def _kept(record: ImageRecord, rendering: variants.Rendering, data: bytes) -> bytes:
    """What to store for a rendering: its bytes, or nothing when they are no smaller than
    the original in the original's own format (never more bytes than needed)."""
    if variants.not_smaller(rendering, data, record.mime_type, record.size_bytes):
        return b""
    return data
