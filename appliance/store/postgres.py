"""The metadata store on PostgreSQL (asyncpg): every SQL statement for PostgreSQL is here.

Many nodes share one database, so nothing here rests on in-process locks:
- `locked(sha256)` is a transaction holding `pg_advisory_xact_lock` of the digest: uploads and
  deletes of the same bytes on any node take turns, and the lock goes with the commit;
- the first key is made under an advisory lock, once, however many nodes start together;
- migrations run under an advisory lock, once;
- deletes and revocations are recorded as events (ids in commit order) and announced with
  NOTIFY; `wait_for_events` listens on a connection of its own, and polls too, so a missed
  notification (or a lost connection) still shows within a second.

Faults: every call is bounded (connect, pool acquire and statement timeouts), and a database
that is down, restarting or unreachable is `StorageUnavailable` (503 with Retry-After), never a
500 nor a hang. The pool reconnects by itself once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg

from appliance.config import ConfigError
from appliance.errors import StorageUnavailable
from appliance.store.interface import (
    IMAGE_DELETED,
    KEY_REVOKED,
    LAST_USED_RESOLUTION,
    ClientTotals,
    CreatedKey,
    Event,
    FetchCount,
    ImageRecord,
    KeyRecord,
    KeyRow,
    Metadata,
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
from appliance.store.postgres_migrations import MIGRATIONS

log = logging.getLogger("pictor.store.postgres")
T = TypeVar("T")

# Bounds on every call, in seconds: a database that does not answer becomes a 503 after at
# most about this long, never a request that hangs.
CONNECT_TIMEOUT = 5.0
ACQUIRE_TIMEOUT = 5.0
STATEMENT_TIMEOUT = 10.0
PING_TIMEOUT = 2.0
# Waiting for another node's digest lock: its holder may be writing a 10 MB blob to the store.
LOCK_TIMEOUT = 30.0
# Statements that read or change the whole library (migrations, start-up sweeps, verify).
BULK_TIMEOUT = 3600.0
# A node that stops talking mid-transaction (frozen, partitioned) loses its locks after this.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
# No floor: connections are made on demand (and kept while in use, closed after 5 idle
# minutes). With a floor, asyncpg reconnects in the background during an outage, logging a
# traceback each time, and every node does so against a database that is coming back.
POOL_MIN, POOL_MAX = 0, 10
EVENT_CHANNEL = "pictor_events"
RESET = "reset"  # events were pruned past a cursor: forget every cached record
# wait_for_events returns after at most this long even without a notification: the caller
# then reads events_since, so a missed NOTIFY is seen within a second anyway.
POLL_INTERVAL = 0.5
LISTEN_RETRY = 0.5
LISTEN_KEEPALIVE = 10.0
UNAVAILABLE_LOG_INTERVAL = 10.0
EVENT_RETENTION = "1 day"  # events older than this are pruned: nodes read them in a second
EVENT_PRUNE_INTERVAL = 600.0

# Advisory locks of the two-int form (a key space apart from the digests' bigint locks).
_LOCK_SPACE = 0x50494354  # "PICT"
_MIGRATIONS_LOCK = 1
_FIRST_KEY_LOCK = 2

# Errors that mean "the database is not there right now", as opposed to a bug of ours.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, starting up, statement timeout
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
)


def _digest_lock(sha256: str) -> int:
    """The bigint advisory lock of a digest: its first 64 bits, signed."""
    value = int(sha256[:16], 16)
    return value - (1 << 64) if value >= 1 << 63 else value


def _unstorable(*values: str | None) -> bool:
    """Whether a value from a request (an id in a path, a filter) holds a NUL, which no text
    in PostgreSQL can: it matches nothing (rather than failing the statement)."""
    return any(v is not None and "\x00" in v for v in values)


def _like_contains(needle: str) -> str:
    """LIKE pattern for a literal substring: `%`, `_` and `\\` are ordinary characters."""
    return "%" + re.sub(r"([\\%_])", r"\\\1", needle) + "%"


# Errors at start that waiting will not cure: the admin must change something.
_MISCONFIGURED: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # no such user, bad password
    asyncpg.exceptions.InvalidCatalogNameError,  # no such database
    asyncpg.exceptions.InsufficientPrivilegeError,
    asyncpg.exceptions.UndefinedFileError,  # pg_trgm is not installed on the server
)


def _misconfigured(exc: BaseException) -> str:
    if isinstance(
        exc, asyncpg.exceptions.InsufficientPrivilegeError | asyncpg.exceptions.UndefinedFileError
    ):
        return (
            f"{exc}. The schema needs the pg_trgm extension (in PostgreSQL's contrib) and, "
            "for its first start, a user that may create tables and the extension in the "
            "database (or an admin's `CREATE EXTENSION pg_trgm` beforehand)."
        )
    return str(exc)


_UNAVAILABLE_OR_CLOSED: tuple[type[BaseException], ...] = (*_UNAVAILABLE, asyncpg.InterfaceError)

# Failures after which one more try on a new connection is safe for a read: the connection
# died under us (e.g. the server restarted since it was pooled), the statement never ran.
_LOST: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
)

_SESSION_SETTINGS = {
    "application_name": "pictor",
    "idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_TIMEOUT_MS),
    "timezone": "UTC",
}


_last_warning = [-60.0]


def _unavailable(exc: BaseException) -> StorageUnavailable:
    now = time.monotonic()
    if now - _last_warning[0] >= UNAVAILABLE_LOG_INTERVAL:  # not once per request
        _last_warning[0] = now
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    return StorageUnavailable("The database is not reachable right now. Try again shortly.")


async def _call(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc


Connection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"


class Session:
    """One pooled connection. Each statement is bounded by the statement timeout, and a
    failure to reach the database is StorageUnavailable (only the statements' own failures:
    whatever else the caller does meanwhile raises as it would)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: Any, timeout: float | None = None) -> str:  # noqa: ASYNC109
        return await _call(self.conn.execute(sql, *args, timeout=timeout))

    async def fetch(
        self,
        sql: str,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[asyncpg.Record]:
        return await _call(self.conn.fetch(sql, *args, timeout=timeout))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await _call(self.conn.fetchrow(sql, *args))

    async def fetchval(
        self,
        sql: str,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        return await _call(self.conn.fetchval(sql, *args, timeout=timeout))


async def _reset(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """What a connection needs before going back to the pool. asyncpg's default (unlock
    advisory locks, close cursors, UNLISTEN, RESET ALL) costs a round trip per call, and
    none of it applies: locks are transaction-scoped, nothing listens or SETs on pooled
    connections. Only a transaction somehow left open must not be handed on."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class Database:
    """An asyncpg pool whose every use is bounded in time."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], url: str) -> None:
        self.pool = pool
        self.url = url

    @classmethod
    async def open(
        cls, url: str, *, min_size: int = POOL_MIN, max_size: int = POOL_MAX
    ) -> Database:
        """Connect and migrate. Raises StorageUnavailable if the server does not answer."""
        pool: asyncpg.Pool[asyncpg.Record] = asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT,
            command_timeout=STATEMENT_TIMEOUT,
            server_settings=_SESSION_SETTINGS,
            reset=_reset,
        )
        try:
            await _call(asyncio.wait_for(pool, timeout=CONNECT_TIMEOUT * 2))
            db = cls(pool, url)
            await db.migrate()
        except _MISCONFIGURED as exc:
            pool.terminate()
            raise ConfigError(f"--database: {_misconfigured(exc)}") from exc
        except BaseException:
            pool.terminate()
            raise
        return db

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), timeout=ACQUIRE_TIMEOUT)
        except _UNAVAILABLE:
            self.pool.terminate()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        conn = await _call(self.pool.acquire(timeout=ACQUIRE_TIMEOUT))
        try:
            yield Session(conn)
        finally:
            # A connection whose reset fails or overstays is terminated by the pool itself,
            # which opens a new one on a later acquire.
            with contextlib.suppress(*_UNAVAILABLE_OR_CLOSED):
                await self.pool.release(conn, timeout=ACQUIRE_TIMEOUT)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        """BEGIN ... COMMIT on a pooled connection; rolled back on any exception."""
        async with self.session() as session:
            tx = session.conn.transaction()
            await _call(tx.start())
            try:
                yield session
            except BaseException:
                try:
                    await asyncio.wait_for(tx.rollback(), timeout=ACQUIRE_TIMEOUT)
                except Exception:
                    # A connection in an unknown state (dead, or a statement cancelled
                    # mid-flight) goes nowhere near the pool: the server rolls it back.
                    session.conn.terminate()
                raise
            await _call(tx.commit())

    async def read(self, fn: Callable[[Session], Awaitable[T]]) -> T:
        """A read-only call, tried once more on a fresh connection if its pooled connection
        turned out to be dead (a server restart the pool had not seen yet)."""
        try:
            async with self.session() as session:
                return await fn(session)
        except StorageUnavailable as exc:
            if not isinstance(exc.__cause__, _LOST):
                raise
        async with self.session() as session:
            return await fn(session)

    async def fetch(
        self,
        sql: str,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[asyncpg.Record]:
        return await self.read(lambda s: s.fetch(sql, *args, timeout=timeout))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.read(lambda s: s.fetchrow(sql, *args))

    async def fetchval(
        self,
        sql: str,
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        return await self.read(lambda s: s.fetchval(sql, *args, timeout=timeout))

    async def migrate(self) -> None:
        """Apply the missing migrations, once however many nodes start together: the first
        takes the lock and migrates, the others wait for it and find nothing left to do."""
        async with self.transaction() as tx:
            # Another node may be migrating a big table: wait as long as a migration may take.
            await tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                _LOCK_SPACE,
                _MIGRATIONS_LOCK,
                timeout=BULK_TIMEOUT,
            )
            await tx.execute(
                "CREATE TABLE IF NOT EXISTS migrations "
                "(name text PRIMARY KEY, applied_at text NOT NULL)"
            )
            done = {r["name"] for r in await tx.fetch("SELECT name FROM migrations")}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                await tx.execute(sql, timeout=BULK_TIMEOUT)
                await tx.execute(
                    "INSERT INTO migrations (name, applied_at) VALUES ($1, $2)", name, utcnow()
                )
                log.info("applied migration %s", name)

    async def applied_migrations(self) -> list[tuple[str, str]]:
        rows = await self.fetch("SELECT name, applied_at FROM migrations ORDER BY name")
        return [(str(r["name"]), str(r["applied_at"])) for r in rows]


_COLUMNS = (
    "seq, id, tenant_id, filename, alt_text, folder, mime_type, size_bytes, width, height, "
    "sha256, created_at, updated_at, deleted_at"
)


def _record(row: asyncpg.Record) -> ImageRecord:
    return ImageRecord(**dict(row.items()))


# The batch as arrays, one per column, unnested in the order given (WITH ORDINALITY): the
# rows an id already had (seen before the statement), the upsert, and the ids it tombstoned.
_IMPORT_IMAGES = """
WITH given AS (
    SELECT * FROM unnest(
        $1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
        $8::integer[], $9::integer[], $10::text[], $11::text[], $12::text[], $13::text[],
        $14::text[], $15::text[]
    ) WITH ORDINALITY AS g(id, tenant_id, filename, alt_text, folder, mime_type, size_bytes,
        width, height, sha256, created_at, updated_at, deleted_at, filename_folded,
        alt_text_folded, ord)
),
before AS (SELECT i.id, i.deleted_at FROM images i JOIN given USING (id)),
upserted AS (
    INSERT INTO images (id, tenant_id, filename, alt_text, folder, mime_type, size_bytes,
        width, height, sha256, created_at, updated_at, deleted_at, filename_folded,
        alt_text_folded)
    SELECT id, tenant_id, filename, alt_text, folder, mime_type, size_bytes, width, height,
        sha256, created_at, updated_at, deleted_at, filename_folded, alt_text_folded
    FROM given ORDER BY ord
    ON CONFLICT (id) DO UPDATE SET alt_text = excluded.alt_text,
        alt_text_folded = excluded.alt_text_folded, folder = excluded.folder,
        updated_at = excluded.updated_at,
        deleted_at = coalesce(images.deleted_at, excluded.deleted_at)
    RETURNING id, deleted_at
)
SELECT u.id FROM upserted u JOIN before b USING (id)
WHERE b.deleted_at IS NULL AND u.deleted_at IS NOT NULL
"""


def _runs_of_distinct_ids(records: list[ImageRecord]) -> list[list[ImageRecord]]:
    """Consecutive runs in which no id repeats (one upsert cannot touch a row twice)."""
    runs: list[list[ImageRecord]] = [[]]
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            runs.append([])
            seen = set()
        runs[-1].append(record)
        seen.add(record.id)
    return [run for run in runs if run]


def _import_columns(records: list[ImageRecord]) -> list[list[Any]]:
    fields = [
        "id", "tenant_id", "filename", "alt_text", "folder", "mime_type", "size_bytes",
        "width", "height", "sha256", "created_at", "updated_at", "deleted_at",
    ]  # fmt: skip
    columns = [[getattr(r, f) for r in records] for f in fields]
    columns.append([simple_fold(r.filename) for r in records])
    columns.append([simple_fold(r.alt_text) for r in records])
    return columns


class PostgresDigestTx:
    """The digest's transaction, holding its advisory lock until it ends."""

    def __init__(self, tx: Session, sha256: str) -> None:
        self._tx = tx
        self._sha256 = sha256

    async def insert(self, new: NewImage) -> ImageRecord:
        if new.sha256 != self._sha256:
            raise ValueError("insert of other bytes than the locked digest's")
        now = utcnow()
        row = await self._tx.fetchrow(
            "INSERT INTO images (id, tenant_id, filename, alt_text, folder, mime_type, "
            "size_bytes, width, height, sha256, created_at, updated_at, "
            "filename_folded, alt_text_folded) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13) "
            f"RETURNING {_COLUMNS}",
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
            simple_fold(new.filename),
            simple_fold(new.alt_text),
        )
        assert row is not None
        return _record(row)

    async def in_use(self) -> bool:
        """Whether a live image (committed by anyone, or inserted in this transaction) has
        these bytes. Under the lock, so no upload of them can commit meanwhile."""
        return bool(
            await self._tx.fetchval(
                "SELECT EXISTS (SELECT 1 FROM images WHERE sha256 = $1 AND deleted_at IS NULL)",
                self._sha256,
            )
        )


class PostgresImageStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._listener: _Listener | None = None
        self._pruned_at = -EVENT_PRUNE_INTERVAL

    @asynccontextmanager
    async def locked(self, sha256: str) -> AsyncIterator[PostgresDigestTx]:
        async with self.db.transaction() as tx:
            await tx.execute(
                "SELECT pg_advisory_xact_lock($1)", _digest_lock(sha256), timeout=LOCK_TIMEOUT
            )
            yield PostgresDigestTx(tx, sha256)

    async def get(self, tenant_id: int, image_id: str) -> ImageRecord | None:
        """A live image of this tenant; other tenants' ids look exactly like unknown ones."""
        if _unstorable(image_id):
            return None
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM images "
            "WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL",
            image_id,
            tenant_id,
        )
        return None if row is None else _record(row)

    async def get_public(self, image_id: str) -> ImageRecord | None:
        """Any image by id, tombstones included (the proxy answers 410 for those)."""
        if _unstorable(image_id):
            return None
        row = await self.db.fetchrow(f"SELECT {_COLUMNS} FROM images WHERE id = $1", image_id)
        return None if row is None else _record(row)

    async def list_page(
        self,
        tenant_id: int,
        *,
        folder: str | None,
        search: str | None,
        sha256: str | None = None,
        page: int,
        page_size: int,
    ) -> Page:
        """Newest first (upload order). Search is a literal, case-folded substring of the
        filename or the alt text, exactly as on SQLite: both sides are folded by
        simple_fold, and LIKE compares code points (the trigram indexes only narrow)."""
        if _unstorable(folder, sha256, search):
            return Page([], 0)
        where = ["tenant_id = $1", "deleted_at IS NULL"]
        args: list[Any] = [tenant_id]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if folder is not None:
            where.append(f"folder = {arg(folder)}")
        if sha256 is not None:
            where.append(f"sha256 = {arg(sha256)}")
        if search:
            pattern = arg(_like_contains(simple_fold(search)))
            where.append(f"(filename_folded LIKE {pattern} OR alt_text_folded LIKE {pattern})")
        clause = " AND ".join(where)
        if search or sha256 is not None:
            total = f"SELECT count(*) FROM images WHERE {clause}"
        elif folder is not None:
            total = "SELECT live_images FROM folder_stats WHERE tenant_id = $1 AND folder = $2"
        else:
            total = "SELECT live_images FROM tenant_stats WHERE tenant_id = $1"
        # One statement, so one snapshot (the total agrees with the page) and one round trip:
        # the page's rows, each with the total, or a lone row with the total and no image.
        # The page is found by seq first, then its rows are read: skipping to a deep page
        # then walks the index only (index-only scan), not a heap row per skipped image.
        rows = await self.db.fetch(
            f"WITH page AS (SELECT {_COLUMNS} FROM images WHERE seq IN ("
            f"SELECT seq FROM images WHERE {clause} "
            f"ORDER BY seq DESC LIMIT {arg(page_size)} OFFSET {arg((page - 1) * page_size)})) "
            f"SELECT coalesce(({total}), 0) AS total, page.* "
            "FROM (SELECT) AS one LEFT JOIN page ON true ORDER BY page.seq DESC",
            *args,
        )
        images = [
            ImageRecord(**{k: v for k, v in r.items() if k != "total"})
            for r in rows
            if r["id"] is not None
        ]
        return Page(images, int(rows[0]["total"]))

    async def folders(self, tenant_id: int) -> list[str]:
        rows = await self.db.fetch(
            "SELECT folder FROM folder_stats WHERE tenant_id = $1 AND live_images > 0 "
            'ORDER BY folder COLLATE "C"',
            tenant_id,
        )
        return [str(r["folder"]) for r in rows]

    async def update(
        self, tenant_id: int, image_id: str, changes: dict[str, str | None]
    ) -> ImageRecord | None:
        allowed = {"alt_text", "folder"}
        if not changes.keys() <= allowed:
            raise ValueError(f"cannot update {sorted(changes.keys() - allowed)}")
        if not changes or _unstorable(image_id):
            return await self.get(tenant_id, image_id)
        sets, args = [], [image_id, tenant_id, utcnow()]
        for name in sorted(changes):
            args.append(changes[name])
            sets.append(f"{name} = ${len(args)}")
            if name == "alt_text":
                args.append(simple_fold(changes[name] or ""))
                sets.append(f"alt_text_folded = ${len(args)}")
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                f"UPDATE images SET {', '.join(sets)}, updated_at = $3 "
                f"WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL RETURNING {_COLUMNS}",
                *args,
            )
        return None if row is None else _record(row)

    async def delete(self, tenant_id: int, image_id: str) -> ImageRecord | None:
        """Tombstone the image, and tell every node (an event, committed with it)."""
        if _unstorable(image_id):
            return None
        async with self.db.transaction() as tx:
            row = await tx.fetchrow(
                "UPDATE images SET deleted_at = $3 "
                "WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL "
                f"RETURNING {_COLUMNS}",
                image_id,
                tenant_id,
                utcnow(),
            )
            if row is None:
                return None
            await _record_event(tx, IMAGE_DELETED, image_id)
        return _record(row)

    async def live_images(self) -> list[ImageRecord]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM images WHERE deleted_at IS NULL ORDER BY seq",
            timeout=BULK_TIMEOUT,
        )
        return [_record(r) for r in rows]

    async def export_images(self, after_seq: int, limit: int) -> list[ImageRecord]:
        """Every image, tombstones included, in upload order after `after_seq`."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM images WHERE seq > $1 ORDER BY seq LIMIT $2",
            after_seq,
            limit,
        )
        return [_record(r) for r in rows]

    async def import_images(self, records: list[ImageRecord]) -> None:
        """Copy images in: unknown ids inserted in the order given (so in upload order),
        known ones take the labels and updated_at given, a tombstone once given is kept and
        announced. One statement per batch; a batch naming an id twice goes in runs."""
        async with self.db.transaction() as tx:
            for run in _runs_of_distinct_ids(records):
                tombstoned = await tx.fetch(_IMPORT_IMAGES, *_import_columns(run))
                for row in tombstoned:
                    await _record_event(tx, IMAGE_DELETED, str(row["id"]))

    async def live_digests(self) -> set[str]:
        rows = await self.db.fetch(
            "SELECT DISTINCT sha256 FROM images WHERE deleted_at IS NULL", timeout=BULK_TIMEOUT
        )
        return {str(r["sha256"]) for r in rows}

    async def deleted_since(self, cutoff: str) -> set[str]:
        rows = await self.db.fetch(
            "SELECT DISTINCT sha256 FROM images WHERE deleted_at >= $1",
            cutoff,
            timeout=BULK_TIMEOUT,
        )
        return {str(r["sha256"]) for r in rows}

    async def state(self, name: str) -> str | None:
        value = await self.db.fetchval("SELECT value FROM appliance_state WHERE name = $1", name)
        return None if value is None else str(value)

    async def set_state(self, name: str, value: str) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO appliance_state (name, value) VALUES ($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                name,
                value,
            )

    # -- events: what other nodes must hear about ---------------------------------------

    async def events_since(self, cursor: int | None) -> tuple[list[Event], int]:
        """Events after `cursor`, oldest first, and the cursor to ask with next time; None
        asks for the cursor of now. Event ids have no gaps (see migration 0006), so one
        means pruned events: a RESET event first says "forget everything cached"."""
        if cursor is None:
            return [], int(await self.db.fetchval("SELECT last_id FROM events_head"))
        await self._prune_events()
        rows = await self.db.fetch(
            "SELECT h.last_id, e.id, e.kind, e.subject FROM events_head h LEFT JOIN LATERAL "
            "(SELECT id, kind, subject FROM events WHERE id > $1 ORDER BY id LIMIT 10000) e "
            "ON true ORDER BY e.id",
            cursor,
        )
        events = [
            Event(int(r["id"]), str(r["kind"]), str(r["subject"]))
            for r in rows
            if r["id"] is not None
        ]
        head = int(rows[0]["last_id"])
        after = events[-1].seq if events else max(cursor, head)
        first = events[0].seq if events else head + 1
        if first > cursor + 1 and head > cursor:
            events.insert(0, Event(cursor + 1, RESET, ""))
        return events, after

    async def _prune_events(self) -> None:
        now = time.monotonic()
        if now - self._pruned_at < EVENT_PRUNE_INTERVAL:
            return
        self._pruned_at = now
        async with self.db.transaction() as tx:
            await tx.execute(
                f"DELETE FROM events WHERE created_at < now() - interval '{EVENT_RETENTION}'"
            )

    async def wait_for_events(self, max_seconds: float) -> None:
        """Return when any node announces an event, or after `max_seconds` (at most
        POLL_INTERVAL: the caller's events_since is the fallback for lost notifications)."""
        if self._listener is None:
            self._listener = _Listener(self.db.url)
        await self._listener.wait(min(max_seconds, POLL_INTERVAL))

    # -- fetch statistics and totals (operations; the twin of sqlite.py's) -------------

    async def add_fetches(self, batch: list[FetchCount]) -> None:
        """One statement for a whole batch (its keys are distinct, as ON CONFLICT needs);
        additive, so any number of nodes flushing at once add up."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO image_fetches (image_id, day, client, fetches, last_fetched_at) "
                "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], "
                "$5::text[]) ON CONFLICT (image_id, day, client) DO UPDATE SET "
                "fetches = image_fetches.fetches + excluded.fetches, last_fetched_at = "
                "greatest(image_fetches.last_fetched_at, excluded.last_fetched_at)",
                [c.image_id for c in batch],
                [c.day for c in batch],
                [c.client for c in batch],
                [c.fetches for c in batch],
                [c.last_fetched_at for c in batch],
            )

    async def fetch_totals(self, image_id: str, since_day: str) -> list[ClientTotals]:
        if _unstorable(image_id, since_day):
            return []
        rows = await self.db.fetch(
            "SELECT client, sum(fetches) AS total, "
            "coalesce(sum(fetches) FILTER (WHERE day >= $2), 0) AS recent, "
            "max(last_fetched_at) AS last FROM image_fetches WHERE image_id = $1 "
            "GROUP BY client",
            image_id,
            since_day,
        )
        return [
            ClientTotals(str(r["client"]), int(r["total"]), int(r["recent"]), r["last"])
            for r in rows
        ]

    async def stored_totals(self) -> tuple[int, int]:
        row = await self.db.fetchrow(
            "SELECT count(*) AS images, coalesce(sum(size_bytes), 0) AS bytes "
            "FROM images WHERE deleted_at IS NULL"
        )
        return (int(row["images"]), int(row["bytes"])) if row else (0, 0)

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None


async def _record_event(tx: Session, kind: str, subject: str) -> None:
    """An event in the caller's transaction: its id from the locked head row (so events
    commit in id order), announced by NOTIFY when (and only if) the transaction commits."""
    await tx.execute(
        "WITH head AS (UPDATE events_head SET last_id = last_id + 1 RETURNING last_id) "
        "INSERT INTO events (id, kind, subject) SELECT last_id, $1, $2 FROM head",
        kind,
        subject,
    )
    await tx.execute("SELECT pg_notify($1, $2)", EVENT_CHANNEL, kind)


class _Listener:
    """LISTEN on a connection of its own, reconnecting by itself; `wait` wakes on a NOTIFY."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._signal = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def _notified(self, *_: object) -> None:
        self._signal.set()

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pictor-pg-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._signal.wait(), timeout)
        self._signal.clear()

    async def _run(self) -> None:
        while not self._closing:
            conn: asyncpg.Connection[asyncpg.Record] | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    self._url,
                    timeout=CONNECT_TIMEOUT,
                    command_timeout=STATEMENT_TIMEOUT,
                    server_settings=_SESSION_SETTINGS,
                )
                conn.add_termination_listener(lambda _, lost=lost: lost.set())
                await conn.add_listener(EVENT_CHANNEL, self._notified)
                self._signal.set()  # anything between the loss and now: have it read
                while not lost.is_set():
                    # A connection can also die silently (no FIN): ask it now and then.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), LISTEN_KEEPALIVE)
                    if not lost.is_set():
                        await conn.execute("SELECT 1", timeout=STATEMENT_TIMEOUT)
            except _UNAVAILABLE as exc:
                log.debug("event listener: %s", exc)  # the pool's callers report outages
            except Exception:
                # E.g. a changed password: keep trying (the poll still serves events), loudly.
                log.warning("event listener failed; retrying", exc_info=True)
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            if not self._closing:
                await asyncio.sleep(LISTEN_RETRY)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class PostgresKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._last_touch: dict[str, float] = {}

    async def _ensure_tenant(self, tx: Session, name: str) -> Tenant:
        await tx.execute(
            "INSERT INTO tenants (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            name,
            utcnow(),
        )
        row = await tx.fetchrow("SELECT id, name FROM tenants WHERE name = $1", name)
        assert row is not None
        return Tenant(int(row["id"]), str(row["name"]))

    async def ensure_tenant(self, name: str) -> Tenant:
        async with self.db.transaction() as tx:
            return await self._ensure_tenant(tx, name)

    async def tenant_count(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM tenants"))

    async def _create_key(self, tx: Session, tenant_name: str) -> CreatedKey:
        tenant = await self._ensure_tenant(tx, tenant_name)
        key_id, secret = new_key_parts()
        await tx.execute(
            "INSERT INTO api_keys (id, tenant_id, secret_sha256, created_at) "
            "VALUES ($1, $2, $3, $4)",
            key_id,
            tenant.id,
            hash_secret(secret),
            utcnow(),
        )
        return CreatedKey(key_id=key_id, key=format_key(key_id, secret), tenant=tenant.name)

    async def create_key(self, tenant_name: str) -> CreatedKey:
        async with self.db.transaction() as tx:
            return await self._create_key(tx, tenant_name)

    async def create_first_key(self, tenant_name: str) -> CreatedKey | None:
        """A key for a library without any tenant, made once however many nodes start at the
        same moment: they take turns on an advisory lock, and only the first finds none."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                _LOCK_SPACE,
                _FIRST_KEY_LOCK,
                timeout=LOCK_TIMEOUT,
            )
            if await tx.fetchval("SELECT EXISTS (SELECT 1 FROM tenants)"):
                return None
            return await self._create_key(tx, tenant_name)

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self.db.fetch(
            "SELECT k.id, t.name, k.created_at, k.last_used_at, k.revoked_at "
            "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
            'ORDER BY k.created_at, k.id COLLATE "C"'
        )
        return [KeyRecord(*r.values()) for r in rows]

    async def list_tenants(self) -> list[Tenant]:
        rows = await self.db.fetch("SELECT id, name FROM tenants ORDER BY id")
        return [Tenant(int(r["id"]), str(r["name"])) for r in rows]

    async def export_keys(self) -> list[KeyRow]:
        rows = await self.db.fetch(
            "SELECT k.id, t.name, k.secret_sha256, k.created_at, k.last_used_at, k.revoked_at "
            "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id "
            'ORDER BY k.created_at, k.id COLLATE "C"'
        )
        return [
            KeyRow(r["id"], r["name"], bytes(r["secret_sha256"]), *list(r.values())[3:])
            for r in rows
        ]

    async def import_keys(self, rows: list[KeyRow]) -> None:
        """Copy keys in by id (tenants by name); a revocation once given is kept."""
        async with self.db.transaction() as tx:
            for row in rows:
                tenant = await self._ensure_tenant(tx, row.tenant)
                await tx.execute(
                    "INSERT INTO api_keys (id, tenant_id, secret_sha256, created_at, "
                    "last_used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6) "
                    "ON CONFLICT (id) DO UPDATE SET "
                    "last_used_at = coalesce(excluded.last_used_at, api_keys.last_used_at), "
                    "revoked_at = coalesce(api_keys.revoked_at, excluded.revoked_at)",
                    row.id,
                    tenant.id,
                    row.secret_sha256,
                    row.created_at,
                    row.last_used_at,
                    row.revoked_at,
                )

    async def revoke(self, key_id: str) -> bool:
        if _unstorable(key_id):
            return False
        async with self.db.transaction() as tx:
            changed = await tx.fetchval(
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL "
                "RETURNING true",
                key_id,
                utcnow(),
            )
            if changed:
                await _record_event(tx, KEY_REVOKED, key_id)
        return bool(changed)

    async def authenticate(self, key: str) -> Tenant | None:
        """The tenant of a valid, unrevoked key. Read on every request, so a revocation made
        on any node takes effect at once."""
        parts = split_key(key)
        if parts is None:
            return None
        key_id, secret = parts
        row = await self.db.fetchrow(
            "SELECT k.secret_sha256, k.revoked_at, t.id, t.name "
            "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.id = $1",
            key_id,
        )
        expected = row["secret_sha256"] if row is not None else b"\0" * 32
        # Compare in constant time, and do the same work whether or not the id exists.
        if not hmac.compare_digest(hash_secret(secret), bytes(expected)):
            return None
        if row is None or row["revoked_at"] is not None:
            return None
        await self._touch(key_id)
        return Tenant(int(row["id"]), str(row["name"]))

    async def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        if now - self._last_touch.get(key_id, -LAST_USED_RESOLUTION) < LAST_USED_RESOLUTION:
            return
        self._last_touch[key_id] = now
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1", key_id, utcnow()
            )


class PostgresMetadata:
    """The PostgreSQL backend: `PostgresMetadata.open("postgresql://...")`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.images = PostgresImageStore(db)
        self.keys = PostgresKeyStore(db)

    async def ping(self) -> None:
        """Readiness: the database answers a trivial query within PING_TIMEOUT."""
        await self.db.fetchval("SELECT 1", timeout=PING_TIMEOUT)

    async def check(self) -> str:
        """ "ok", or what is inconsistent: the live counters against the rows."""
        wrong = await self.db.fetchval(
            "SELECT count(*) FROM ("
            " SELECT tenant_id, count(*) AS n FROM images WHERE deleted_at IS NULL"
            " GROUP BY tenant_id"
            ") live FULL JOIN (SELECT * FROM tenant_stats WHERE live_images <> 0) s"
            " USING (tenant_id)"
            " WHERE live.n IS DISTINCT FROM s.live_images",
            timeout=BULK_TIMEOUT,
        )
        wrong_folders = await self.db.fetchval(
            "SELECT count(*) FROM ("
            " SELECT tenant_id, folder, count(*) AS n FROM images"
            " WHERE deleted_at IS NULL AND folder IS NOT NULL GROUP BY tenant_id, folder"
            ") live FULL JOIN folder_stats s USING (tenant_id, folder)"
            " WHERE live.n IS DISTINCT FROM s.live_images",
            timeout=BULK_TIMEOUT,
        )
        if wrong or wrong_folders:
            return (
                f"live counts disagree with the images: {wrong} tenant(s), "
                f"{wrong_folders} folder(s)"
            )
        return "ok"

    async def close(self) -> None:
        await self.images.close()
        await self.db.close()


async def open_postgres(url: str) -> PostgresMetadata:
    """Connect to `postgresql://...` and migrate; StorageUnavailable if it does not answer."""
    return PostgresMetadata(await Database.open(url))


if TYPE_CHECKING:

    def _implements(metadata: PostgresMetadata) -> Metadata:
        return metadata  # mypy checks here that the backend has the interface's shape
