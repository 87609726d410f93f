"""`pictor migrate`: copy a library to another pair of backends, resumably, while it serves.

What is copied: tenants and keys (secrets stay hashes), every image row with its id and
timestamps (tombstones too, so deleted images stay 410), and the originals they use. Derived
files are not copied: rendering is deterministic, so the target remakes the same bytes under
the same ETags on first request.

The order keeps the target sound at every moment: an image's blob is durable in the target
before its row is. Progress is kept in the target (`migrate_seq`), so an interrupted run
resumes where it stopped, and a finished one can be run again: it copies what was uploaded
since and re-syncs labels and deletions of every row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from appliance.blobs import BlobNotFound, BlobStore
from appliance.store import ImageRecord, Metadata

log = logging.getLogger("pictor.migrate")

BATCH = 500
CURSOR = "migrate_seq"  # the target's appliance_state: last source seq whose blob is copied


@dataclass
class MigrateReport:
    tenants: int = 0
    keys: int = 0
    images: int = 0
    deleted: int = 0
    blobs_copied: int = 0
    blobs_present: int = 0
    missing: list[str] = dataclasses.field(default_factory=list)  # live, blob gone at source


async def copy_blob(source: BlobStore, target: BlobStore, sha256: str) -> bool:
    """Copy one original; False when the target already had it. Raises BlobNotFound."""
    if await target.exists(sha256):
        return False
    reader = await source.open(sha256)
    temp = target.new_temp()
    try:
        try:
            while chunk := await reader.read(1 << 20):
                await asyncio.to_thread(temp.write, chunk)
        finally:
            await reader.close()
        await asyncio.to_thread(temp.close)
        if temp.sha256 != sha256:
            raise ValueError(f"source blob {sha256} hashes to {temp.sha256}")
        await target.put(temp)
    finally:
        temp.discard()
    return True


async def migrate(
    source: Metadata,
    source_blobs: BlobStore,
    target: Metadata,
    target_blobs: BlobStore,
    progress: Callable[[str], None] = lambda line: None,
) -> MigrateReport:
    report = MigrateReport()
    tenant_map: dict[int, int] = {}
    for tenant in await source.keys.list_tenants():
        tenant_map[tenant.id] = (await target.keys.ensure_tenant(tenant.name)).id
    report.tenants = len(tenant_map)
    keys = await source.keys.export_keys()
    await target.keys.import_keys(keys)
    report.keys = len(keys)

    resume_from = int(await target.images.state(CURSOR) or 0)
    seq = 0
    while True:
        batch = await source.images.export_images(seq, BATCH)
        if not batch:
            break
        copied: list[ImageRecord] = []
        for record in batch:
            record = await _with_blob(
                record, source, source_blobs, target_blobs, resume_from, report
            )
            copied.append(dataclasses.replace(record, tenant_id=tenant_map[record.tenant_id]))
            report.images += 1
            report.deleted += record.deleted_at is not None
        await target.images.import_images(copied)
        seq = batch[-1].seq
        if seq > resume_from:
            await target.images.set_state(CURSOR, str(seq))
        progress(f"copied {report.images} image(s), {report.blobs_copied} blob(s)")
    return report


async def _with_blob(
    record: ImageRecord,
    source: Metadata,
    source_blobs: BlobStore,
    target_blobs: BlobStore,
    resume_from: int,
    report: MigrateReport,
) -> ImageRecord:
    """The record to copy, its blob made durable in the target first. A blob that vanished
    at the source means the image was deleted meanwhile: it is copied as deleted."""
    if record.deleted_at is not None:
        return record
    if record.seq <= resume_from and await target_blobs.exists(record.sha256):
        report.blobs_present += 1
        return record
    try:
        if await copy_blob(source_blobs, target_blobs, record.sha256):
            report.blobs_copied += 1
        else:
            report.blobs_present += 1
        return record
    except BlobNotFound:
        current = await source.images.get_public(record.id)
        if current is not None and current.deleted_at is not None:
            return current
        report.missing.append(f"{record.id} ({record.sha256})")
        log.error("the source has no blob for live image %s (%s)", record.id, record.sha256)
        return record
