"""Open the metadata backend and the blob store that the settings name."""

from __future__ import annotations

from concurrent.futures import Executor

from appliance.blobs import BlobStore
from appliance.blobs.local import LocalBlobStore
from appliance.config import ConfigError, Settings
from appliance.store import Metadata
from appliance.store.sqlite import open_sqlite

DB_NAME = "pictor.db"


def open_blobs(settings: Settings, executor: Executor | None = None) -> BlobStore:
    """Blocking (creates the data directory's folders)."""
    if settings.blob_store == "file":
        return LocalBlobStore(settings.data_dir, executor)
    raise ConfigError(f"--blob-store {settings.blob_store}: this backend is not available yet")


async def open_metadata(settings: Settings) -> Metadata:
    if settings.database == "sqlite":
        return await open_sqlite(settings.data_dir / DB_NAME)
    raise ConfigError("--database: this backend is not available yet")
