"""The SQLite backend: every SQL statement for SQLite, behind the interface's methods.

The default, embedded backend: one database file under the data directory (`sqlite_db.py`
holds the connections, `sqlite_migrations.py` the schema). SQLite's own write lock
(`BEGIN IMMEDIATE`) serialises writers across processes, so `locked()` needs no lock of ours.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from appliance.errors import StorageUnavailable
from appliance.store.interface import (
    IMAGE_DELETED,
    KEY_REVOKED,
    LAST_USED_RESOLUTION,
    MIN_INDEXED_SEARCH,
    ClientTotals,
    CreatedKey,
    Event,
    FetchCount,
    ImageRecord,
    KeyRecord,
    KeyRow,
    NewImage,
    Page,
    Tenant,
    format_key,
    hash_secret,
    new_image_id,
    new_key_parts,
    simple_fold,
    split_key,
    utcnow,
)
from appliance.store.sqlite_db import Database, Row

RESET = "reset"  # events were pruned past a cursor: forget every cached record
EVENTS_KEPT = 100_000


def _record(row: Row) -> ImageRecord:
    return ImageRecord.from_mapping(row)


_COLUMNS = (
    "seq, id, tenant_id, filename, alt_text, folder, mime_type, size_bytes, width, height, "
    "sha256, created_at, updated_at, deleted_at"
)
_I_COLUMNS = ", ".join("i." + c.strip() for c in _COLUMNS.split(","))


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


async def _insert(conn: aiosqlite.Connection, new: NewImage) -> ImageRecord:
    now = utcnow()
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
    return _record(row)


async def _record_event(conn: aiosqlite.Connection, kind: str, subject: str) -> None:
    cursor = await conn.execute(
        "INSERT INTO events (kind, subject, created_at) VALUES (?, ?, ?) RETURNING seq",
        (kind, subject, utcnow()),
    )
    row = await cursor.fetchone()
    await cursor.close()
    assert row is not None
    await conn.execute("DELETE FROM events WHERE seq <= ?", (int(row[0]) - EVENTS_KEPT,))


class _DigestTx:
    def __init__(self, conn: aiosqlite.Connection, sha256: str) -> None:
        self._conn = conn
        self._sha256 = sha256

    async def insert(self, new: NewImage) -> ImageRecord:
        assert new.sha256 == self._sha256
        return await _insert(self._conn, new)

    async def in_use(self) -> bool:
        rows = await self._conn.execute_fetchall(
            "SELECT 1 FROM images WHERE sha256 = ? AND deleted_at IS NULL LIMIT 1",
            (self._sha256,),
        )
        return bool(list(rows))


class SQLiteImageStore:
    # How often another process's events are looked for: SQLite has no notifications.
    POLL_SECONDS = 0.25

    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def locked(self, sha256: str) -> AsyncIterator[_DigestTx]:
        """SQLite's write lock, held across processes: nothing else writes meanwhile."""
        async with self.db.transaction() as conn:
            yield _DigestTx(conn, sha256)

    async def get(self, tenant_id: int, image_id: str) -> ImageRecord | None:
        """A live image of this tenant; other tenants' ids look exactly like unknown ones."""
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM images WHERE id = ? AND tenant_id = ? AND deleted_at IS NULL",
            (image_id, tenant_id),
        )
        return None if row is None else _record(row)

    async def get_public(self, image_id: str) -> ImageRecord | None:
        """Any image by id, tombstones included (the proxy answers 410 for those)."""
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM images WHERE id = ?", (image_id,))
        return None if row is None else _record(row)

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
            params.insert(0, _phrase(simple_fold(search)))
        if folder is not None:
            where.append("i.folder = ?")
            params.append(folder)
        if sha256 is not None:
            where.append("i.sha256 = ?")
            params.append(sha256)
        if search and not indexed:
            condition, values = _short_search(search)
            where.append(condition)
            params += values
        clause = " AND ".join(where)
        total = await self._total(
            tenant_id,
            folder is not None or sha256 is not None,
            search,
            indexed,
            source,
            clause,
            params,
        )
        rows = await self.db.fetchall(
            f"SELECT {_I_COLUMNS} FROM {source} WHERE {clause} "
            f"ORDER BY {order} DESC LIMIT ? OFFSET ?",
            [*params, page_size, (page - 1) * page_size],
        )
        return Page([_record(r) for r in rows], total)

    async def _total(
        self,
        tenant_id: int,
        filtered: bool,
        search: str | None,
        indexed: bool,
        source: str,
        clause: str,
        params: list[Any],
    ) -> int:
        if not filtered and not search:
            sql, args = (
                "SELECT coalesce((SELECT live_images FROM tenant_stats WHERE tenant_id = ?), 0)",
                [tenant_id],
            )
        elif indexed and not filtered and await self._owns_every_live_image(tenant_id):
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
        return None if row is None else _record(row)

    async def delete(self, tenant_id: int, image_id: str) -> ImageRecord | None:
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
            await _record_event(conn, IMAGE_DELETED, image_id)
        return _record(row)

    async def live_images(self) -> list[ImageRecord]:
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM images WHERE deleted_at IS NULL ORDER BY seq"
        )
        return [_record(r) for r in rows]

    async def deleted_since(self, cutoff: str) -> set[str]:
        rows = await self.db.fetchall(
            "SELECT DISTINCT sha256 FROM images WHERE deleted_at >= ?", (cutoff,)
        )
        return {str(r[0]) for r in rows}

    async def export_images(self, after_seq: int, limit: int) -> list[ImageRecord]:
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM images WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [_record(r) for r in rows]

    async def import_images(self, records: list[ImageRecord]) -> None:
        async with self.db.transaction() as conn:
            for r in records:
                cursor = await conn.execute("SELECT deleted_at FROM images WHERE id = ?", (r.id,))
                existing = await cursor.fetchone()
                await cursor.close()
                await conn.execute(
                    "INSERT INTO images (id, tenant_id, filename, alt_text, folder, mime_type, "
                    "size_bytes, width, height, sha256, created_at, updated_at, deleted_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET alt_text = excluded.alt_text, "
                    "folder = excluded.folder, updated_at = excluded.updated_at, "
                    "deleted_at = coalesce(images.deleted_at, excluded.deleted_at)",
                    (
                        r.id,
                        r.tenant_id,
                        r.filename,
                        r.alt_text,
                        r.folder,
                        r.mime_type,
                        r.size_bytes,
                        r.width,
                        r.height,
                        r.sha256,
                        r.created_at,
                        r.updated_at,
                        r.deleted_at,
                    ),
                )
                if existing is not None and existing[0] is None and r.deleted_at is not None:
                    await _record_event(conn, IMAGE_DELETED, r.id)

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

    async def events_since(self, cursor: int | None) -> tuple[list[Event], int]:
        if cursor is None:
            row = await self.db.fetchone("SELECT coalesce(max(seq), 0) FROM events")
            return [], int(row[0]) if row else 0
        rows = await self.db.fetchall(
            "SELECT seq, kind, subject FROM events WHERE seq > ? ORDER BY seq LIMIT 10000",
            (cursor,),
        )
        events = [Event(int(r[0]), str(r[1]), str(r[2])) for r in rows]
        if events and events[0].seq > cursor + 1:
            # Pruned past our cursor (or a gap): what was missed is unknown.
            events.insert(0, Event(cursor + 1, RESET, ""))
        return events, events[-1].seq if events else cursor

    async def wait_for_events(self, max_seconds: float) -> None:
        await asyncio.sleep(min(max_seconds, self.POLL_SECONDS))


async def _ensure_tenant(conn: aiosqlite.Connection, name: str) -> Tenant:
    await conn.execute(
        "INSERT INTO tenants (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
        (name, utcnow()),
    )
    rows = list(await conn.execute_fetchall("SELECT id, name FROM tenants WHERE name = ?", (name,)))
    return Tenant(int(rows[0][0]), str(rows[0][1]))


async def _create_key(conn: aiosqlite.Connection, tenant_name: str) -> CreatedKey:
    tenant = await _ensure_tenant(conn, tenant_name)
    key_id, secret = new_key_parts()
    await conn.execute(
        "INSERT INTO api_keys (id, tenant_id, secret_sha256, created_at) VALUES (?, ?, ?, ?)",
        (key_id, tenant.id, hash_secret(secret), utcnow()),
    )
    return CreatedKey(key_id=key_id, key=format_key(key_id, secret), tenant=tenant.name)


class SQLiteKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._last_touch: dict[str, float] = {}

    async def ensure_tenant(self, name: str) -> Tenant:
        async with self.db.transaction() as conn:
            return await _ensure_tenant(conn, name)

    async def tenant_count(self) -> int:
        row = await self.db.fetchone("SELECT count(*) FROM tenants")
        return int(row[0]) if row else 0

    async def create_key(self, tenant_name: str) -> CreatedKey:
        async with self.db.transaction() as conn:
            return await _create_key(conn, tenant_name)

    async def create_first_key(self, tenant_name: str) -> CreatedKey | None:
        async with self.db.transaction() as conn:  # BEGIN IMMEDIATE: one process at a time
            rows = list(await conn.execute_fetchall("SELECT 1 FROM tenants LIMIT 1"))
            if rows:
                return None
            return await _create_key(conn, tenant_name)

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self.db.fetchall(
            "SELECT k.id, t.name, k.created_at, k.last_used_at, k.revoked_at "
            "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id ORDER BY k.created_at, k.id"
        )
        return [KeyRecord(*r) for r in rows]

    async def list_tenants(self) -> list[Tenant]:
        rows = await self.db.fetchall("SELECT id, name FROM tenants ORDER BY id")
        return [Tenant(int(r[0]), str(r[1])) for r in rows]

    async def export_keys(self) -> list[KeyRow]:
        rows = await self.db.fetchall(
            "SELECT k.id, t.name, k.secret_sha256, k.created_at, k.last_used_at, k.revoked_at "
            "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id ORDER BY k.created_at, k.id"
        )
        return [KeyRow(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) for r in rows]

    async def import_keys(self, rows: list[KeyRow]) -> None:
        async with self.db.transaction() as conn:
            for row in rows:
                tenant = await _ensure_tenant(conn, row.tenant)
                await conn.execute(
                    "INSERT INTO api_keys (id, tenant_id, secret_sha256, created_at, "
                    "last_used_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET "
                    "last_used_at = coalesce(excluded.last_used_at, api_keys.last_used_at), "
                    "revoked_at = coalesce(api_keys.revoked_at, excluded.revoked_at)",
                    (
                        row.id,
                        tenant.id,
                        row.secret_sha256,
                        row.created_at,
                        row.last_used_at,
                        row.revoked_at,
                    ),
                )

    async def revoke(self, key_id: str) -> bool:
        async with self.db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (utcnow(), key_id),
            )
            changed = cursor.rowcount
            await cursor.close()
            if changed:
                await _record_event(conn, KEY_REVOKED, key_id)
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
        if not hmac.compare_digest(hash_secret(secret), bytes(expected)):
            return None
        if row is None or row[1] is not None:
            return None
        await self._touch(key_id)
        return Tenant(int(row[2]), str(row[3]))

    async def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        if now - self._last_touch.get(key_id, -LAST_USED_RESOLUTION) < LAST_USED_RESOLUTION:
            return
        self._last_touch[key_id] = now
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?", (utcnow(), key_id)
            )


class SQLiteMetadata:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.images = SQLiteImageStore(db)
        self.keys = SQLiteKeyStore(db)

    async def ping(self) -> None:
        """A fresh connection must open the file and read from it: the appliance's own
        connections answer from their page caches, and keep a file open that was moved,
        replaced or made unreadable meanwhile."""
        path = self.db.path
        if path is None:
            await self.db.fetchone("SELECT 1")
            return
        try:
            await asyncio.wait_for(asyncio.to_thread(_ping_file, path), PING_TIMEOUT)
        except (sqlite3.Error, OSError, TimeoutError) as exc:
            raise StorageUnavailable(
                f"The database {path.name} does not answer: {exc or type(exc).__name__}."
            ) from exc

    async def check(self) -> str:
        return await self.db.integrity_check()

    async def close(self) -> None:
        await self.db.close()


PING_TIMEOUT = 2.0  # seconds


def _ping_file(path: Path) -> None:
    # mode=rw: a missing file is an error, never a new empty database.
    conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=PING_TIMEOUT)
    try:
        conn.execute("SELECT count(*) FROM migrations").fetchone()
    finally:
        conn.close()


async def open_sqlite(path: Path) -> SQLiteMetadata:
    """Open (creating and migrating) the database file."""
    return SQLiteMetadata(await Database.open(path))


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
