"""Data tools for admins: `verify` re-hashes every blob, `backup` copies a consistent library.

Both work on a library that a running appliance is serving. `verify` works on every backend;
`backup` copies the embedded default (SQLite and the blob directory), and `migrate` moves a
library between backends.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from appliance.backends import DB_NAME, open_blobs, open_metadata
from appliance.blobs import BlobNotFound, BlobStore
from appliance.blobs.local import LocalBlobStore, fsync_dir
from appliance.config import Settings
from appliance.store.sqlite import (
    snapshot_delete_by_digest,
    snapshot_live_count,
    snapshot_live_digests,
)
from appliance.store.sqlite_db import register_functions


@dataclass
class VerifyReport:
    images: int = 0
    blobs: int = 0
    missing: list[str] = field(default_factory=list)  # "img_... (sha)"
    corrupt: list[str] = field(default_factory=list)
    integrity: str = ""

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt and self.integrity == "ok"


async def _sha256_of(blobs: BlobStore, sha256: str) -> str | None:
    digest = hashlib.sha256()
    try:
        reader = await blobs.open(sha256)
    except BlobNotFound:
        return None
    try:
        while chunk := await reader.read(1 << 20):
            digest.update(chunk)
    finally:
        await reader.close()
    return digest.hexdigest()


async def verify(settings: Settings) -> VerifyReport:
    """Every live image's blob exists and hashes to its recorded digest; the database is
    sound."""
    metadata = await open_metadata(settings)
    blobs = open_blobs(settings)
    try:
        report = VerifyReport(integrity=await metadata.check())
        checked: dict[str, str | None] = {}
        for image in await metadata.images.live_images():
            report.images += 1
            if image.sha256 not in checked:
                checked[image.sha256] = await _sha256_of(blobs, image.sha256)
            actual = checked[image.sha256]
            label = f"{image.id} ({image.sha256})"
            if actual is None:
                report.missing.append(label)
            elif actual != image.sha256:
                report.corrupt.append(label)
        report.blobs = len(checked)
        return report
    finally:
        await metadata.close()
        await blobs.close()


@dataclass
class BackupReport:
    images: int
    blobs: int
    vanished: int  # deleted while the backup ran: recorded as deleted in the copy


def _backup(data_dir: Path, dest: Path) -> BackupReport:
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; back up into a new directory")
    dest.mkdir(parents=True, exist_ok=True)
    # 1. A consistent snapshot of the database through SQLite's online backup API.
    source = sqlite3.connect(data_dir / DB_NAME)
    target = sqlite3.connect(dest / DB_NAME)
    register_functions(target)  # the copy's triggers fold search text
    try:
        with target:
            source.backup(target)
    finally:
        source.close()
    src_blobs, dst_blobs = LocalBlobStore(data_dir), LocalBlobStore(dest)
    try:
        digests = snapshot_live_digests(target)
        vanished: list[str] = []
        # 2. The blobs the snapshot uses. Blobs never change; one may vanish if its last
        # image was deleted after the snapshot: that image is then deleted in the copy too.
        for sha in digests:
            dst = dst_blobs.path(sha)
            dst.parent.mkdir(exist_ok=True)
            try:
                shutil.copyfile(src_blobs.path(sha), dst)
            except FileNotFoundError:
                vanished.append(sha)
                continue
            with open(dst, "rb") as f:
                os.fsync(f.fileno())
        for parent in {dst_blobs.path(sha).parent for sha in digests}:
            if parent.exists():
                fsync_dir(parent)
        snapshot_delete_by_digest(target, vanished)
        images = snapshot_live_count(target)
    finally:
        target.close()
    fsync_dir(dest)
    return BackupReport(images=images, blobs=len(digests) - len(vanished), vanished=len(vanished))


async def backup(data_dir: Path, dest: Path) -> BackupReport:
    return await asyncio.to_thread(_backup, data_dir, dest)
