"""Metadata backends: the interface (`interface.py`) and one module per implementation."""

from appliance.store.interface import (
    CreatedKey,
    DigestTx,
    Event,
    FolderCount,
    FolderRename,
    ImageRecord,
    ImageStore,
    KeyRecord,
    KeyStore,
    Metadata,
    NewImage,
    Page,
    Tenant,
)

__all__ = [
    "CreatedKey",
    "DigestTx",
    "Event",
    "FolderCount",
    "FolderRename",
    "ImageRecord",
    "ImageStore",
    "KeyRecord",
    "KeyStore",
    "Metadata",
    "NewImage",
    "Page",
    "Tenant",
]
