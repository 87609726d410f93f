"""Library on PostgreSQL beside SQLite: the store's list and search calls at 1,000,000 images.

Both backends hold the same synthetic library (the rows of `tests.bench.library`, in the same
order), and both answer through their store's own `list_page`, in this process, one call at
a time: the figure is the metadata backend's, without HTTP. Totals must agree between the
two, or the run fails (search parity at scale).

PostgreSQL is the tests' own throw-away server (tests/pg_server.py: fsync on, defaults
otherwise), pinned to the server core; the SQLite store runs in this process, on the client
core (its work runs in aiosqlite's threads). Seeding: SQLite by executemany into the
appliance's schema (its triggers index as they would index uploads); PostgreSQL by COPY with
the images' indexes dropped first and rebuilt after from their own definitions, and the
live counts computed once (triggers off while copying).

    python -m tests.bench.pg_library [SIZE]      (or BENCH_SECTIONS=pg_library make bench)

The latest figures, with the machine and the date, are in the README (Performance).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from appliance.store.interface import Metadata, NewImage, simple_fold
from appliance.store.postgres import PostgresMetadata, open_postgres
from appliance.store.sqlite import open_sqlite
from tests.bench.common import (
    SERVER_CORE,
    Context,
    Processes,
    Row,
    fmt_ms,
    make_tmp,
    percentile,
    ratio,
    remove_tmp,
)
from tests.bench.library import QUERIES, SEARCH_TARGET, Query, _rows, _sample, seed
from tests.bench.media import Media
from tests.pg_server import running_postgres

T = TypeVar("T")
SIZE = 1_000_000
SHA = "0" * 64  # the rows' digest: no blob is read here
_COLUMNS = (
    "id", "tenant_id", "filename", "alt_text", "folder", "mime_type", "size_bytes", "width",
    "height", "sha256", "created_at", "updated_at", "filename_folded", "alt_text_folded",
)  # fmt: skip


def _pg_records(tenant_id: int, start: int, stop: int) -> Any:
    for row in _rows(tenant_id, SHA, start, stop):
        yield (*row, simple_fold(row[2]), simple_fold(row[3]))


async def seed_postgres(metadata: PostgresMetadata, tenant_id: int, size: int) -> float:
    started = time.perf_counter()
    async with metadata.db.session() as session:
        conn = session.conn
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'images' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        )
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute("SET session_replication_role = replica")  # no triggers
        for index in indexes:
            await conn.execute(f'DROP INDEX "{index["indexname"]}"')
        await conn.copy_records_to_table(
            "images", records=_pg_records(tenant_id, 0, size), columns=_COLUMNS, timeout=3600
        )
        for index in indexes:
            await conn.execute(index["indexdef"], timeout=3600)
        await conn.execute("SET session_replication_role = DEFAULT")
        await conn.execute(
            "INSERT INTO tenant_stats (tenant_id, live_images) "
            "SELECT tenant_id, count(*) FROM images WHERE deleted_at IS NULL GROUP BY tenant_id"
        )
        await conn.execute(
            "INSERT INTO folder_stats (tenant_id, folder, live_images) "
            "SELECT tenant_id, folder, count(*) FROM images "
            "WHERE deleted_at IS NULL AND folder IS NOT NULL GROUP BY tenant_id, folder"
        )
        await conn.execute("VACUUM (ANALYZE) images", timeout=3600)
        await conn.execute("CHECKPOINT", timeout=3600)
    return time.perf_counter() - started


async def seed_sqlite(db_path: Path, size: int) -> tuple[Metadata, int, float]:
    metadata = await open_sqlite(db_path)  # creates the schema
    tenant = await metadata.keys.ensure_tenant("default")
    await metadata.close()
    seconds = await asyncio.to_thread(seed, db_path, SHA, 0, size)
    return await open_sqlite(db_path), tenant.id, seconds


def _cell(samples: list[float]) -> str:
    if not samples:
        return "timed out"
    return f"p50 {fmt_ms(percentile(samples, 50))} p99 {fmt_ms(percentile(samples, 99))} ms"


def _params(query: Query, size: int) -> dict[str, Any]:
    p = query.params(size)
    return {
        "folder": p.get("folder"),
        "search": p.get("search"),
        "page": int(p.get("page", "1")),
        "page_size": 25,
    }


async def event_delivery(url: str, count: int = 40) -> list[float]:
    """Seconds from a delete's start on one instance to another instance's wait_for_events
    returning (a NOTIFY; the poll behind it would take up to 0.5 s)."""
    first, second = await open_postgres(url), await open_postgres(url)
    try:
        tenant = await first.keys.ensure_tenant("events")
        images = []
        for n in range(count):
            digest = f"{n:064x}"
            async with first.images.locked(digest) as tx:
                images.append(
                    await tx.insert(
                        NewImage(tenant.id, f"{n}.png", "", None, "image/png", 1, 1, 1, digest)
                    )
                )
        await second.images.wait_for_events(0.2)  # its listener is up
        await second.images.wait_for_events(0.2)
        samples = []
        for image in images:
            waiter = asyncio.create_task(second.images.wait_for_events(5.0))
            await asyncio.sleep(0.02)  # it is waiting
            started = time.perf_counter()
            await first.images.delete(tenant.id, image.id)
            await waiter
            samples.append(time.perf_counter() - started)
        return samples
    finally:
        await first.close()
        await second.close()


def measure(ctx: Context, size: int = SIZE) -> tuple[list[Row], dict[str, Any]]:
    loop = asyncio.new_event_loop()

    def call(coro: Coroutine[Any, Any, T]) -> T:
        return loop.run_until_complete(coro)

    rows: list[Row] = []
    raw: dict[str, Any] = {"size": size, "queries": {}}
    with running_postgres() as server:
        assert server.process is not None
        os.sched_setaffinity(server.process.pid, {SERVER_CORE})  # backends inherit it
        raw["postgres_init_s"], raw["postgres_start_s"] = server.init_seconds, server.start_seconds
        ctx.note(
            f"PostgreSQL: initdb {server.init_seconds:.2f} s, start {server.start_seconds:.2f} s"
        )
        pg = call(open_postgres(server.create_database("library")))
        sqlite, sqlite_tenant, sqlite_seed = call(
            seed_sqlite(ctx.subdir("pg_library") / "pictor.db", size)
        )
        try:
            tenant = call(pg.keys.ensure_tenant("default"))
            assert tenant.id == sqlite_tenant
            raw["sqlite_seed_s"] = sqlite_seed
            ctx.note(f"SQLite: seeded {size:,} images in {sqlite_seed:.1f} s")
            raw["postgres_seed_s"] = call(seed_postgres(pg, tenant.id, size))
            ctx.note(f"PostgreSQL: seeded {size:,} images in {raw['postgres_seed_s']:.1f} s")

            def total(metadata: Metadata, params: dict[str, Any]) -> int:
                return call(metadata.images.list_page(tenant.id, **params)).total

            for query in QUERIES:
                params = _params(query, size)
                pg_s, pg_total = _sample(functools.partial(total, pg, params))
                sq_s, sq_total = _sample(functools.partial(total, sqlite, params))
                if pg_total != sq_total:
                    raise RuntimeError(
                        f"{query.key}: PostgreSQL total {pg_total} != SQLite {sq_total}"
                    )
                pg50 = percentile(pg_s, 50) if pg_s else None
                sq50 = percentile(sq_s, 50) if sq_s else None
                target = query.indexed_search and size == 1_000_000
                rows.append(
                    Row(
                        section="pg_library",
                        figure=f"store {size:,}: {query.label} (p50), PostgreSQL vs SQLite",
                        appliance=f"PG {_cell(pg_s)} ({pg_total:,} found)",
                        reference=f"SQLite {_cell(sq_s)}",
                        ratio=ratio(pg50, sq50),
                        target=f"<= {SEARCH_TARGET * 1000:.0f} ms" if target else "",
                        passed=(pg50 is not None and pg50 <= SEARCH_TARGET) if target else None,
                        data={
                            "postgres": pg_s,
                            "sqlite": sq_s,
                            "total": pg_total,
                            "params": params,
                        },
                    )
                )
                raw["queries"][query.key] = rows[-1].data
                ctx.note(f"{rows[-1].figure}: {rows[-1].appliance}; {rows[-1].reference}")
            events = call(event_delivery(server.create_database("events")))
            raw["event_delivery_s"] = events
            rows.append(
                Row(
                    section="pg_library",
                    figure="PostgreSQL: a delete seen by another instance (NOTIFY), p50",
                    appliance=f"{fmt_ms(percentile(events, 50))} ms "
                    f"(p99 {fmt_ms(percentile(events, 99))} ms, delete included)",
                    reference="poll fallback: <= 500 ms",
                    ratio=None,
                    data={"seconds": events},
                )
            )
            ctx.note(f"{rows[-1].figure}: {rows[-1].appliance}")
        finally:
            call(pg.close())
            call(sqlite.close())
            loop.close()
    return rows, raw


def run(ctx: Context, media: Media) -> tuple[list[Row], dict[str, Any]]:
    return measure(ctx, int(os.environ.get("BENCH_PG_LIBRARY_SIZE", SIZE)))


def main(argv: list[str]) -> int:
    size = int(argv[1]) if len(argv) > 1 else SIZE
    ctx = Context(procs=Processes(), tmp=make_tmp(), duration=0, connections=0)
    try:
        rows, _ = measure(ctx, size)
    finally:
        remove_tmp(ctx.tmp)
    for row in rows:
        print(f"{row.figure}: {row.appliance}; {row.reference}; ratio {row.ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
