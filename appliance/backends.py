"""Open the metadata backend and the blob store that the settings name."""

from __future__ import annotations

from concurrent.futures import Executor

from appliance.blobs import BlobStore
from appliance.blobs.local import LocalBlobStore
from appliance.blobs.s3 import S3BlobStore
from appliance.blobs.s3client import S3Config
from appliance.config import ConfigError, Settings
from appliance.store import Metadata
from appliance.store.sqlite import open_sqlite

DB_NAME = "pictor.db"


def open_blobs(settings: Settings, executor: Executor | None = None) -> BlobStore:
    """Blocking (creates the data directory's folders)."""
    if settings.blob_store == "file":
        return LocalBlobStore(settings.data_dir, executor)
    if settings.blob_store.startswith("s3://"):
        try:
            config = S3Config.from_url(settings.blob_store, endpoint=settings.s3_endpoint)
        except ValueError as exc:
            raise ConfigError(f"--blob-store: {exc}") from None
        return S3BlobStore(config, settings.data_dir / "tmp", executor)
    raise ConfigError(f"--blob-store {settings.blob_store}: not a blob store URL")


async def open_metadata(settings: Settings) -> Metadata:
    if settings.database == "sqlite":
        return await open_sqlite(settings.data_dir / DB_NAME)
    from appliance.store.postgres import open_postgres  # asyncpg only where it is used

    return await open_postgres(settings.database)
