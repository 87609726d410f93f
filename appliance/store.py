"""Every SQL statement of the appliance, behind named methods."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import string
import time
from dataclasses import dataclass
from typing import Any

from appliance.db import Database, Row, simple_fold, utcnow
from appliance.fetchstats import ClientTotals, FetchCount

_ALPHABET = string.ascii_letters + string.digits


def random_token(length: int) -> str:
    """Base62 from the OS CSPRNG: 22 characters carry 131 bits."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_image_id() -> str:
    return "img_" + random_token(22)


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
    def from_row(cls, row: Row) -> ImageRecord:
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


_COLUMNS = (
    "seq, id, tenant_id, filename, alt_text, folder, mime_type, size_bytes, width, height, "
    "sha256, created_at, updated_at, deleted_at"
)
_I_COLUMNS = ", ".join("i." + c.strip() for c in _COLUMNS.split(","))

# FTS5 trigram answers substrings of three characters or more from its index.
MIN_INDEXED_SEARCH = 3


def _phrase(search: str) -> str:
    """The search as one literal FTS5 phrase: quotes doubled, nothing else special."""
    return '"' + search.replace('"', '""') + '"'


def _short_search(search: str) -> tuple[str, list[Any]]:
    """Too short for trigrams: a scan of the tenant's images. Folding in Python costs two
    calls a row (5 s at a million), so ASCII rows (as many characters as bytes) are matched
    by LIKE in C, whose ASCII case-insensitivity is the same fold there, and only the others
    go through `pictor_fold` (0.8 s at a million)."""
    needle = simple_fold(search)
    unicode_match = (
        "(instr(pictor_fold(i.filename), ?) > 0 OR instr(pictor_fold(i.alt_text), ?) > 0)"
    )
    if not needle.isascii():
        return unicode_match, [needle, needle]
    pattern = "%" + re.sub(r"([\\%_])", r"\\\1", needle) + "%"
    return (
        "(i.filename LIKE ? ESCAPE '\\' OR i.alt_text LIKE ? ESCAPE '\\'"
        " OR ((length(i.filename) != length(CAST(i.filename AS BLOB))"
        " OR length(i.alt_text) != length(CAST(i.alt_text AS BLOB)))"
        f" AND {unicode_match}))",
        [pattern, pattern, needle, needle],
    )


class ImageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, new: NewImage) -> ImageRecord:
        now = utcnow()
        async with self.db.transaction() as conn:
            cursor = await conn.execute(
                f"INSERT INTO images (id, tenant_id, filename, alt_text, folder, mime_type, "
                f"size_bytes, width, height, sha256, created_at, updated_at) "
                f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
                (
                    new_image_id(),
                    new.tenant_id,
                    new.filename,
                    new.alt_text,
                    new.folder,
                    new.mime_type,
                    new.size_bytes,
                    new.width,
                    new.height,
                    new.sha256,
                    now,
                    now,
                ),
            )
            row = await cursor.fetchone()
            await cursor.close()
        assert row is not None
        return ImageRecord.from_row(row)

    async def get(self, tenant_id: int, image_id: str) -> ImageRecord | None:
        """A live image of this tenant; other tenants' ids look exactly like unknown ones."""
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM images WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL",
            (image_id, tenant_id),
        )
        return None if row is None else ImageRecord.from_row(row)

    async def get_public(self, image_id: str) -> ImageRecord | None:
        """Any image by id, tombstones included (the proxy answers 410 for those)."""
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM images WHERE id = ?", (image_id,))
        return None if row is None else ImageRecord.from_row(row)

    async def list_page(
        self, tenant_id: int, *, folder: str | None, search: str | None, page: int, page_size: int
    ) -> Page:
        """Newest first (upload order, so ties within a second are ordered too)."""
        source, order = "images i", "i.seq"
        where = ["i.tenant_id = ?", "i.deleted_at IS NULL"]
        params: list[Any] = [tenant_id]
        indexed = bool(search) and len(search or "") >= MIN_INDEXED_SEARCH
        if indexed:
            assert search is not None
            # The index drives: FTS5 yields its matches newest first (by rowid, which is
            # seq) and each is looked up by primary key, so a page stops after its rows.
            # (Driven by images instead, SQLite ran the MATCH once per row: seconds.)
            source, order = "images_fts f CROSS JOIN images i ON i.seq = f.rowid", "f.rowid"
            where.insert(0, "images_fts MATCH ?")
            params.insert(0, _phrase(search))
        if folder is not None:
            where.append("i.folder = ?")
            params.append(folder)
        if search and not indexed:
            condition, values = _short_search(search)
            where.append(condition)
            params += values
        clause = " AND ".join(where)
        total = await self._total(tenant_id, folder, search, indexed, source, clause, params)
        rows = await self.db.fetchall(
            f"SELECT {_I_COLUMNS} FROM {source} WHERE {clause} "
            f"ORDER BY {order} DESC LIMIT ? OFFSET ?",
            [*params, page_size, (page - 1) * page_size],
        )
        return Page([ImageRecord.from_row(r) for r in rows], total)

    async def _total(
        self,
        tenant_id: int,
        folder: str | None,
        search: str | None,
        indexed: bool,
        source: str,
        clause: str,
        params: list[Any],
    ) -> int:
        if folder is None and not search:
            sql, args = (
                "SELECT coalesce((SELECT live_images FROM tenant_stats WHERE tenant_id = ?), 0)",
                [tenant_id],
            )
        elif indexed and folder is None and await self._owns_every_live_image(tenant_id):
            # The index holds live images only; when they are all this tenant's, its own
            # count is the answer, without looking up each match (10 ms, not 80, at 167k).
            sql, args = "SELECT count(*) FROM images_fts WHERE images_fts MATCH ?", [params[0]]
        else:
            sql, args = f"SELECT count(*) FROM {source} WHERE {clause}", params
        row = await self.db.fetchone(sql, args)
        return int(row[0]) if row else 0

    async def _owns_every_live_image(self, tenant_id: int) -> bool:
        row = await self.db.fetchone(
            "SELECT coalesce((SELECT live_images FROM tenant_stats WHERE tenant_id = ?), 0)"
            " = (SELECT coalesce(sum(live_images), 0) FROM tenant_stats)",
            (tenant_id,),
        )
        return bool(row and row[0])

    async def folders(self, tenant_id: int) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT folder FROM folder_stats WHERE tenant_id = ? AND live_images > 0 "
            "ORDER BY folder",
            (tenant_id,),
        )
        return [str(r[0]) for r in rows]

    async def update(
        self, tenant_id: int, image_id: str, changes: dict[str, str | None]
    ) -> ImageRecord | None:
        allowed = {"alt_text", "folder"}
        if not changes.keys() <= allowed:
            raise ValueError(f"cannot update {sorted(changes.keys() - allowed)}")
        async with self.db.transaction() as conn:
            if changes:
                sets = ", ".join(f"{name} = ?" for name in sorted(changes))
                await conn.execute(
                    f"UPDATE images SET {sets}, updated_at = ? "
                    "WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL",
                    [*(changes[n] for n in sorted(changes)), utcnow(), image_id, tenant_id],
                )
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM images "
                "WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL",
                (image_id, tenant_id),
            )
            row = await cursor.fetchone()
            await cursor.close()
        return None if row is None else ImageRecord.from_row(row)

    async def delete(self, tenant_id: int, image_id: str) -> tuple[ImageRecord, bool] | None:
        """Tombstone the image. Returns it and whether its blob is no longer used by anyone."""
        async with self.db.transaction() as conn:
            cursor = await conn.execute(
                f"UPDATE images SET deleted_at = ? "
                f"WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL RETURNING {_COLUMNS}",
                (utcnow(), image_id, tenant_id),
            )
            row = await cursor.fetchone()
            await cursor.close()
            if row is None:
                return None
            record = ImageRecord.from_row(row)
            users = await conn.execute_fetchall(
                "SELECT 1 FROM images WHERE sha256 = ? AND deleted_at IS NULL LIMIT 1",
                (record.sha256,),
            )
        return record, not list(users)

    async def live_images(self) -> list[ImageRecord]:
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM images WHERE deleted_at IS NULL ORDER BY seq"
        )
        return [ImageRecord.from_row(r) for r in rows]

    async def state(self, name: str) -> str | None:
        row = await self.db.fetchone("SELECT value FROM appliance_state WHERE name = ?", (name,))
        return None if row is None else str(row[0])

    async def set_state(self, name: str, value: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO appliance_state (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    async def live_digests(self) -> set[str]:
        rows = await self.db.fetchall("SELECT DISTINCT sha256 FROM images WHERE deleted_at IS NULL")
        return {str(r[0]) for r in rows}

    # -- fetch statistics and totals (operations) ---------------------------------------

    async def add_fetches(self, batch: list[FetchCount]) -> None:
        """One transaction for a whole batch; additive, so nodes and restarts add up."""
        async with self.db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO image_fetches (image_id, day, client, fetches, last_fetched_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (image_id, day, client) DO UPDATE SET "
                "fetches = fetches + excluded.fetches, "
                "last_fetched_at = max(last_fetched_at, excluded.last_fetched_at)",
                [(c.image_id, c.day, c.client, c.fetches, c.last_fetched_at) for c in batch],
            )

    async def fetch_totals(self, image_id: str, since_day: str) -> list[ClientTotals]:
        """Per client family: all fetches, those on `since_day` or later, the latest time."""
        rows = await self.db.fetchall(
            "SELECT client, sum(fetches), "
            "sum(CASE WHEN day >= ? THEN fetches ELSE 0 END), max(last_fetched_at) "
            "FROM image_fetches WHERE image_id = ? GROUP BY client",
            (since_day, image_id),
        )
        return [ClientTotals(str(r[0]), int(r[1]), int(r[2]), r[3]) for r in rows]

    async def stored_totals(self) -> tuple[int, int]:
        """Live images of all tenants and the sum of their sizes (a scan: cache it)."""
        row = await self.db.fetchone(
            "SELECT count(*), coalesce(sum(size_bytes), 0) FROM images WHERE deleted_at IS NULL"
        )
        return (int(row[0]), int(row[1])) if row else (0, 0)


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


KEY_PREFIX = "pk_"
_KEY_ID_LEN = 16
_SECRET_LEN = 43  # 256 bits of base62


def _hash_secret(secret: str) -> bytes:
    # The secret carries 256 random bits, so a plain SHA-256 is not brute-forceable.
    return hashlib.sha256(secret.encode()).digest()


def split_key(key: str) -> tuple[str, str] | None:
    """`pk_<key id>_<secret>` -> (key id, secret); None when it has not that shape."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(key_id) != _KEY_ID_LEN or len(secret) != _SECRET_LEN:
        return None
    if not (key_id.isascii() and key_id.isalnum() and secret.isascii() and secret.isalnum()):
        return None
    return key_id, secret


class KeyStore:
    # last_used_at is written at most once a minute per key, not on every request.
    LAST_USED_RESOLUTION = 60.0

    def __init__(self, db: Database) -> None:
        self.db = db
        self._last_touch: dict[str, float] = {}

    async def ensure_tenant(self, name: str) -> Tenant:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO tenants (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                (name, utcnow()),
            )
            rows = list(
                await conn.execute_fetchall("SELECT id, name FROM tenants WHERE name = ?", (name,))
            )
        return Tenant(int(rows[0][0]), str(rows[0][1]))

    async def tenant_count(self) -> int:
        row = await self.db.fetchone("SELECT count(*) FROM tenants")
        return int(row[0]) if row else 0

    async def create_key(self, tenant_name: str) -> CreatedKey:
        tenant = await self.ensure_tenant(tenant_name)
        key_id, secret = random_token(_KEY_ID_LEN), random_token(_SECRET_LEN)
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO api_keys (id, tenant_id, secret_sha256, created_at) "
                "VALUES (?, ?, ?, ?)",
                (key_id, tenant.id, _hash_secret(secret), utcnow()),
            )
        return CreatedKey(key_id=key_id, key=f"{KEY_PREFIX}{key_id}_{secret}", tenant=tenant.name)

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self.db.fetchall(
            "SELECT k.id, t.name, k.created_at, k.last_used_at, k.revoked_at "
            "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id ORDER BY k.created_at, k.id"
        )
        return [KeyRecord(*r) for r in rows]

    async def revoke(self, key_id: str) -> bool:
        async with self.db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (utcnow(), key_id),
            )
            changed = cursor.rowcount
            await cursor.close()
        return changed > 0

    async def authenticate(self, key: str) -> Tenant | None:
        """The tenant of a valid, unrevoked key. Read on every request, so a revocation made
        by another process (`keys revoke`) takes effect at once."""
        parts = split_key(key)
        if parts is None:
            return None
        key_id, secret = parts
        row = await self.db.fetchone(
            "SELECT k.secret_sha256, k.revoked_at, t.id, t.name "
            "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.id = ?",
            (key_id,),
        )
        expected = row[0] if row is not None else b"\0" * 32
        # Compare in constant time, and do the same work whether or not the id exists.
        if not hmac.compare_digest(_hash_secret(secret), bytes(expected)):
            return None
        if row is None or row[1] is not None:
            return None
        await self._touch(key_id)
        return Tenant(int(row[2]), str(row[3]))

    async def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        if (
            now - self._last_touch.get(key_id, -self.LAST_USED_RESOLUTION)
            < self.LAST_USED_RESOLUTION
        ):
            return
        self._last_touch[key_id] = now
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?", (utcnow(), key_id)
            )


# -- the same statements for a plain sqlite3 connection (the `backup` tool's copy) --------


def snapshot_live_digests(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT DISTINCT sha256 FROM images WHERE deleted_at IS NULL")
    return [str(r[0]) for r in rows]


def snapshot_delete_by_digest(conn: sqlite3.Connection, digests: list[str]) -> None:
    with conn:
        conn.executemany(
            "UPDATE images SET deleted_at = ? WHERE sha256 = ? AND deleted_at IS NULL",
            [(utcnow(), sha) for sha in digests],
        )


def snapshot_live_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM images WHERE deleted_at IS NULL").fetchone()[0])
