"""SQLite through aiosqlite: WAL, one writer behind a lock, reads on their own connections.

The write lock is SQLite's own (`BEGIN IMMEDIATE`), so writes are serialised across every
process that opens the same file, not only within this one."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from appliance.store.interface import simple_fold, utcnow
from appliance.store.sqlite_migrations import MIGRATIONS

Row = sqlite3.Row


def register_functions(conn: sqlite3.Connection) -> None:
    """The functions the schema's triggers call, for a plain sqlite3 connection (tools)."""
    conn.create_function("pictor_fold", 1, _sql_fold, deterministic=True)


def _sql_fold(value: str | None) -> str | None:
    return None if value is None else simple_fold(value)


async def _open(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA busy_timeout = 10000")
    await conn.execute("PRAGMA foreign_keys = ON")
    # FULL: a commit is on disk before we answer 201; the contract promises no loss on a crash.
    await conn.execute("PRAGMA synchronous = FULL")
    await conn.create_function("pictor_fold", 1, _sql_fold, deterministic=True)
    return conn


READERS = 3  # one slow scan (a short search in a huge library) must not stall every read


class Database:
    """One connection that writes (serialised by a lock) and a few that read, each in its
    own thread (WAL: readers see committed snapshots and never block the writer)."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        readers: list[aiosqlite.Connection],
        path: Path | None = None,
    ) -> None:
        self.path = path
        self._writer = writer
        self._write_lock = asyncio.Lock()
        self._all_readers = readers
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        for reader in readers:
            self._readers.put_nowait(reader)

    @classmethod
    async def open(cls, path: Path) -> Database:
        writer = await _open(path)
        mode = await (await writer.execute("PRAGMA journal_mode = WAL")).fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise RuntimeError(f"could not put {path} in WAL mode")
        db = cls(writer, [await _open(path) for _ in range(READERS)], path)
        await db._migrate()
        return db

    async def close(self) -> None:
        for reader in self._all_readers:
            await reader.close()
        async with self._write_lock:
            await self._writer.execute("PRAGMA optimize")
            await self._writer.close()

    async def _migrate(self) -> None:
        async with self.transaction() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS migrations "
                "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            done = {r[0] for r in await conn.execute_fetchall("SELECT name FROM migrations")}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                for statement in _split_sql(sql):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, utcnow())
                )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT on the writer; rolls back on any exception."""
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        reader = await self._readers.get()
        try:
            return list(await reader.execute_fetchall(sql, tuple(params)))
        finally:
            self._readers.put_nowait(reader)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def integrity_check(self) -> str:
        row = await self.fetchone("PRAGMA integrity_check")
        return "" if row is None else str(row[0])


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN ... END;) whole."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
