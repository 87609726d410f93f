"""What every metadata backend offers: the records, the stores, and the rules they share.

A backend (`sqlite.py`, `postgres.py`) implements `Metadata`, with its `ImageStore` and
`KeyStore`. Every SQL statement of a backend lives in its own module. Correctness never rests
on one process: `ImageStore.locked` serialises everything that touches one digest across every
process on the database, and `events_since` tells every node what another one deleted or
revoked, so that caches can forget it.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

_ALPHABET = string.ascii_letters + string.digits


def utcnow() -> str:
    """Timestamps are stored and shown as RFC 3339 UTC with second precision."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_token(length: int) -> str:
    """Base62 from the OS CSPRNG: 22 characters carry 131 bits."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_image_id() -> str:
    return "img_" + random_token(22)


def simple_fold(value: str) -> str:
    """Unicode simple case folding, one character to one character, as FTS5's trigram
    tokenizer folds (the micro sign to mu, capital sharp s to ß; ß itself and ligatures
    stay). Every backend's search matches with this fold, so they all give one answer."""
    if value.isascii():
        return value.lower()  # the common case, four times faster
    return "".join(_fold_char(c) for c in value)


def _fold_char(c: str) -> str:
    folded = c.casefold()
    if len(folded) == 1:
        return folded
    lowered = c.lower()
    return lowered if len(lowered) == 1 else c


@dataclass(frozen=True)
class ImageRecord:
    seq: int
    id: str
    tenant_id: int
    filename: str
    alt_text: str
    folder: str | None
    mime_type: str
    size_bytes: int
    width: int
    height: int
    sha256: str
    created_at: str
    updated_at: str
    deleted_at: str | None

    @classmethod
    def from_mapping(cls, row: Any) -> ImageRecord:
        return cls(**{k: row[k] for k in row.keys()})  # noqa: SIM118


@dataclass(frozen=True)
class NewImage:
    tenant_id: int
    filename: str
    alt_text: str
    folder: str | None
    mime_type: str
    size_bytes: int
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class Page:
    images: list[ImageRecord]
    total: int


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str


@dataclass(frozen=True)
class CreatedKey:
    key_id: str
    key: str  # shown once, never stored
    tenant: str


@dataclass(frozen=True)
class KeyRecord:
    id: str
    tenant: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


@dataclass(frozen=True)
class KeyRow:
    """A key as stored (its secret only as a hash), for copying a library elsewhere."""

    id: str
    tenant: str
    secret_sha256: bytes
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


IMAGE_DELETED = "image_deleted"
KEY_REVOKED = "key_revoked"


@dataclass(frozen=True)
class Event:
    """Something another node may hold in a cache: an image deleted, a key revoked."""

    seq: int
    kind: str  # IMAGE_DELETED or KEY_REVOKED
    subject: str  # the image id or the key id


@dataclass(frozen=True)
class FetchCount:
    """Fetches through /i/ of one image on one UTC day by one client family, and the latest
    of them: what a node adds to the totals when it flushes its counts."""

    image_id: str
    day: str  # YYYY-MM-DD, UTC
    client: str  # gmail, yahoo, outlook, apple, other
    fetches: int
    last_fetched_at: str  # RFC 3339 UTC, seconds


@dataclass(frozen=True)
class ClientTotals:
    """An image's stored fetch totals for one client family."""

    client: str
    total: int
    recent: int  # on the days since the `since_day` asked for, inclusive
    last_fetched_at: str | None


KEY_PREFIX = "pk_"
KEY_ID_LEN = 16
SECRET_LEN = 43  # 256 bits of base62
# last_used_at is written at most once a minute per key, not on every request.
LAST_USED_RESOLUTION = 60.0


def hash_secret(secret: str) -> bytes:
    # The secret carries 256 random bits, so a plain SHA-256 is not brute-forceable.
    return hashlib.sha256(secret.encode()).digest()


def new_key_parts() -> tuple[str, str]:
    return random_token(KEY_ID_LEN), random_token(SECRET_LEN)


def format_key(key_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}{key_id}_{secret}"


def split_key(key: str) -> tuple[str, str] | None:
    """`pk_<key id>_<secret>` -> (key id, secret); None when it has not that shape."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(key_id) != KEY_ID_LEN or len(secret) != SECRET_LEN:
        return None
    if not (key_id.isascii() and key_id.isalnum() and secret.isascii() and secret.isalnum()):
        return None
    return key_id, secret


# FTS5 trigram (SQLite) and pg_trgm (PostgreSQL) answer substrings of three characters or
# more from an index; shorter needles scan the tenant's images.
MIN_INDEXED_SEARCH = 3


class DigestTx(Protocol):
    """A transaction that holds a digest's lock: nothing else touching that digest (an
    upload publishing it, a delete removing its blob) runs on any node meanwhile."""

    async def insert(self, new: NewImage) -> ImageRecord: ...

    async def in_use(self) -> bool:
        """Whether any live image (of any tenant) has this digest."""
        ...


class ImageStore(Protocol):
    async def get(self, tenant_id: int, image_id: str) -> ImageRecord | None:
        """A live image of this tenant; other tenants' ids look exactly like unknown ones."""
        ...

    async def get_public(self, image_id: str) -> ImageRecord | None:
        """Any image by id, tombstones included (the proxy answers 410 for those)."""
        ...

    async def list_page(
        self,
        tenant_id: int,
        *,
        folder: str | None,
        search: str | None,
        page: int,
        page_size: int,
        sha256: str | None = None,
    ) -> Page:
        """Newest first (upload order, so ties within a second are ordered too)."""
        ...

    async def folders(self, tenant_id: int) -> list[str]: ...

    async def update(
        self, tenant_id: int, image_id: str, changes: dict[str, str | None]
    ) -> ImageRecord | None: ...

    async def delete(self, tenant_id: int, image_id: str) -> ImageRecord | None:
        """Tombstone a live image and record the event; None when there is none."""
        ...

    def locked(self, sha256: str) -> AbstractAsyncContextManager[DigestTx]: ...

    async def live_images(self) -> list[ImageRecord]: ...

    async def export_images(self, after_seq: int, limit: int) -> list[ImageRecord]:
        """Every image, tombstones included, in upload order after `after_seq`."""
        ...

    async def import_images(self, records: list[ImageRecord]) -> None:
        """Copy images in (their `tenant_id` already this store's): an unknown id is
        inserted with its timestamps, in the order given; a known one takes the labels and
        `updated_at` given, and a tombstone once given is kept (an event is recorded)."""
        ...

    async def live_digests(self) -> set[str]: ...

    async def deleted_since(self, cutoff: str) -> set[str]:
        """Digests of images tombstoned at or after `cutoff` (an RFC 3339 UTC timestamp)."""
        ...

    async def state(self, name: str) -> str | None: ...

    async def set_state(self, name: str, value: str) -> None: ...

    async def add_fetches(self, batch: list[FetchCount]) -> None:
        """Add a node's fetch counts in one transaction, as additive upserts (the stored
        count plus the batch's, the later of the two times): never a read-modify-write, so
        that any number of nodes flushing at once add up."""
        ...

    async def fetch_totals(self, image_id: str, since_day: str) -> list[ClientTotals]:
        """Per client family with fetches: all of them, those on `since_day` (YYYY-MM-DD) or
        later, and the latest fetch time."""
        ...

    async def stored_totals(self) -> tuple[int, int]:
        """Live images of every tenant and the sum of their sizes (for the metrics)."""
        ...

    async def events_since(self, cursor: int | None) -> tuple[list[Event], int]:
        """Events after `cursor` and the cursor to ask with next time. `None` asks for no
        past events, only the cursor of now."""
        ...

    async def wait_for_events(self, max_seconds: float) -> None:
        """Return when another process may have recorded events, or after `max_seconds`."""
        ...


class KeyStore(Protocol):
    async def ensure_tenant(self, name: str) -> Tenant: ...

    async def tenant_count(self) -> int: ...

    async def create_key(self, tenant_name: str) -> CreatedKey: ...

    async def create_first_key(self, tenant_name: str) -> CreatedKey | None:
        """A key for a new tenant when the library has no tenant at all, exactly once
        however many processes start together; None when there already was one."""
        ...

    async def list_keys(self) -> list[KeyRecord]: ...

    async def list_tenants(self) -> list[Tenant]: ...

    async def export_keys(self) -> list[KeyRow]: ...

    async def import_keys(self, rows: list[KeyRow]) -> None:
        """Copy keys in by id (tenants by name); a revocation once given is kept."""
        ...

    async def revoke(self, key_id: str) -> bool: ...

    async def authenticate(self, key: str) -> Tenant | None:
        """The tenant of a valid, unrevoked key, read from the database on every request
        so that a revocation made anywhere takes effect at once."""
        ...


class Metadata(Protocol):
    """One metadata backend, opened (and migrated) by its module's `open_*` function."""

    @property
    def images(self) -> ImageStore: ...

    @property
    def keys(self) -> KeyStore: ...

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers (readiness)."""
        ...

    async def check(self) -> str:
        """The database's own integrity check: "ok" when sound."""
        ...

    async def close(self) -> None: ...
