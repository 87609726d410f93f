"""Blob stores: the interface (`interface.py`) and one module per implementation."""

from appliance.blobs.interface import (
    BlobNotFound,
    BlobReader,
    BlobStore,
    StoredBlob,
    TempBlob,
)

__all__ = ["BlobNotFound", "BlobReader", "BlobStore", "StoredBlob", "TempBlob"]
