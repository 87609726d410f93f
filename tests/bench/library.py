"""Library: list and search latency over HTTP at 10,000, 100,000 and 1,000,000 images in one
tenant, beside the very SQL the store runs for the same request, executed directly with
sqlite3 on the same database (the floor: no HTTP, no auth, no JSON, no executor hop).

The rows are seeded straight into the appliance's database (one transaction, executemany,
synchronous=OFF on the seeding connection only) after the appliance created the schema; the
FTS triggers index them as they would index uploads. All rows point at one real blob, so the
start-up sweep finds every blob in place. The server is stopped while seeding and started
again for each size, which also times its start-up with that many images.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiosqlite

from appliance.store.sqlite import SQLiteImageStore as ImageStore
from appliance.store.sqlite_db import Database, register_functions
from tests.bench.common import Client, Context, Row, fmt_ms, percentile, ratio
from tests.bench.media import Media
from tests.bench.servers import Appliance

SIZES = (10_000, 100_000, 1_000_000)
SEARCH_TARGET = 0.010  # seconds, p50 of an indexed search at 1,000,000 images
MAX_SAMPLES = 200
MIN_SAMPLES = 5
BUDGET = 4.0  # seconds per query and side, once MIN_SAMPLES are in
SLOW_BUDGET = 12.0  # ... or once one sample is in
QUERY_TIMEOUT = 20.0  # one request longer than this is reported as timed out

_WORD_TEXT = (
    "spring summer autumn winter launch banner hero promo product team office event webinar "
    "newsletter header footer logo icon portrait landscape city beach mountain forest coffee "
    "desk laptop phone meeting conference award holiday gift discount offer friday monday "
    "welcome onboarding survey thanks invite garden kitchen studio street night morning "
    "harbor river bridge market festival concert runner bicycle window lantern meadow orchard "
    "canyon glacier island"
)
WORDS = tuple(_WORD_TEXT.split())
FOLDERS = ("newsletters", "branding", "social", "events", "products", "blog", "archive")
COMMON = "sale"  # in the alt text of every 4th image
RARE = "marzipan"  # in the alt text of one image in 10,000


@dataclass(frozen=True)
class Query:
    key: str
    label: str
    indexed_search: bool = False

    def params(self, size: int) -> dict[str, str]:
        return {
            "list_p1": {},
            "list_deep": {"page": str(max(1, size // 25 // 2))},
            "folder": {"folder": "newsletters"},
            "search_few": {"search": RARE},
            "search_many": {"search": COMMON},
            "search_2char": {"search": "ea"},
        }[self.key]


QUERIES = (
    Query("list_p1", "list, page 1"),
    Query("list_deep", "list, page in the middle"),
    Query("folder", "list, folder= filter"),
    Query("search_few", f"search '{RARE}' (few matches)", indexed_search=True),
    Query("search_many", f"search '{COMMON}' (1 in 4 matches)", indexed_search=True),
    Query("search_2char", "search 'ea' (2 chars: a scan)"),
)


def _rows(tenant_id: int, sha256: str, start: int, stop: int) -> Iterator[tuple[Any, ...]]:
    rnd = random.Random(start)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    base = 1_767_225_600  # 2026-01-01T00:00:00Z
    for n in range(start, stop):
        words = rnd.choices(WORDS, k=rnd.randint(3, 8))
        if n % 4 == 0:
            words.insert(rnd.randint(0, len(words)), COMMON)
        if n % 10_000 == 1234:
            words.append(RARE)
        alt = " ".join(words).capitalize()
        folder = FOLDERS[n % 9] if n % 9 < len(FOLDERS) else None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + n * 7))
        yield (
            "img_" + "".join(rnd.choices(alphabet, k=22)),
            tenant_id,
            f"campaign-2026-{n}-{rnd.choice(WORDS)}.jpg",
            alt,
            folder,
            "image/jpeg",
            200_000,
            1200,
            800,
            sha256,
            stamp,
            stamp,
        )


def seed(db_path: Path, sha256: str, start: int, stop: int) -> float:
    """Insert images start..stop-1 of the synthetic library; returns the seconds it took."""
    started = time.perf_counter()
    conn = sqlite3.connect(db_path, isolation_level=None)
    register_functions(conn)  # the search index's triggers fold with pictor_fold
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -1000000")
        (tenant_id,) = conn.execute("SELECT id FROM tenants WHERE name = 'default'").fetchone()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO images (id, tenant_id, filename, alt_text, folder, mime_type, "
            "size_bytes, width, height, sha256, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _rows(tenant_id, sha256, start, stop),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - started


class _Recorder:
    """Stands in for the Database to capture the statements ImageStore.list_page runs."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []

    async def fetchone(self, sql: str, params: Any = ()) -> tuple[int]:
        # The only yes/no question list_page asks is whether the tenant owns every live
        # image; in the seeded library it does (one tenant), so answer as the database would.
        self.calls.append((sql, list(params)))
        return (1,)

    async def fetchall(self, sql: str, params: Any = ()) -> list[Any]:
        self.calls.append((sql, list(params)))
        return []


def store_sql(tenant_id: int, params: dict[str, str]) -> list[tuple[str, list[Any]]]:
    recorder = _Recorder()
    store = ImageStore(recorder)  # type: ignore[arg-type]
    asyncio.run(
        store.list_page(
            tenant_id,
            folder=params.get("folder"),
            search=params.get("search"),
            page=int(params.get("page", "1")),
            page_size=25,
        )
    )
    return recorder.calls


class TimedOut(Exception):
    """One request took longer than QUERY_TIMEOUT."""


def _sample(fn: Callable[[], int]) -> tuple[list[float], int | None]:
    """Latencies of repeated calls and the `total` they report. A first call under a second
    only warms up; slow queries get fewer samples (at least one); a call over the timeout
    ends the series with an empty list."""
    started = time.perf_counter()
    try:
        total = fn()
    except TimedOut:
        return [], None
    first = time.perf_counter() - started
    samples = [first] if first >= 1.0 else []
    while len(samples) < MAX_SAMPLES:
        elapsed = time.perf_counter() - started
        if (elapsed >= BUDGET and len(samples) >= MIN_SAMPLES) or (
            elapsed >= SLOW_BUDGET and samples
        ):
            break
        t = time.perf_counter()
        try:
            fn()
        except TimedOut:
            return [], total
        samples.append(time.perf_counter() - t)
    return samples, total


class _Live:
    """The appliance under measurement; restarted when a request overstayed (its reader
    connection would be busy with the abandoned query for a long time)."""

    def __init__(self, ctx: Context, data_dir: Path, key: str) -> None:
        self.ctx, self.data_dir, self.key = ctx, data_dir, key
        self.app = Appliance.start(ctx, data_dir, key=key)
        self.started_in = self.app.started_in
        self.client = Client(self.app.port, timeout=QUERY_TIMEOUT)

    def get_total(self, path: str) -> int:
        try:
            answer = self.client.request("GET", path, headers=self.app.auth())
        except TimeoutError:
            self.ctx.note(f"GET {path} took over {QUERY_TIMEOUT:.0f} s: restarting the server")
            self.client.close()
            # Its reader is stuck in the query; a graceful stop would wait for it.
            self.ctx.procs.stop(self.app.proc, signal.SIGKILL)
            self.app = Appliance.start(self.ctx, self.data_dir, key=self.key)
            self.client = Client(self.app.port, timeout=QUERY_TIMEOUT)
            raise TimedOut from None
        if answer.status != 200:
            raise RuntimeError(f"GET {path}: {answer.status} {answer.body[:200]!r}")
        return int(json.loads(answer.body)["total"])

    def stop(self) -> None:
        self.client.close()
        self.app.stop()


def _direct(sql: sqlite3.Connection, statements: list[tuple[str, list[Any]]]) -> int:
    """The store's statements run straight on sqlite3; interrupted after QUERY_TIMEOUT."""
    deadline = time.perf_counter() + QUERY_TIMEOUT
    sql.set_progress_handler(lambda: int(time.perf_counter() > deadline), 10_000)
    try:
        results = [sql.execute(statement, args).fetchall() for statement, args in statements]
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise TimedOut from None
        raise
    finally:
        sql.set_progress_handler(None, 0)
    return int(results[-2][0][0])  # the total: the statement just before the page


def _cell(samples: list[float], prefix: str = "") -> str:
    if not samples:
        return f"{prefix}> {QUERY_TIMEOUT:.0f} s (timed out)"
    return (
        f"{prefix}p50 {fmt_ms(percentile(samples, 50))} "
        f"p99 {fmt_ms(percentile(samples, 99))} ms"
        + (f" (n={len(samples)})" if len(samples) < MIN_SAMPLES else "")
    )


SqlFunctions = dict[str, tuple[int, Callable[..., Any], bool]]


def appliance_sql_functions(db_path: Path) -> SqlFunctions:
    """The SQL functions the appliance registers on its connections (e.g. its case fold),
    captured by opening the database as the appliance does. Only while no server runs."""
    captured: SqlFunctions = {}
    original = aiosqlite.Connection.create_function

    async def spy(
        self: aiosqlite.Connection,
        name: str,
        num_params: int,
        func: Callable[..., Any],
        deterministic: bool = False,
    ) -> None:
        captured[name] = (num_params, func, deterministic)
        await original(self, name, num_params, func, deterministic=deterministic)

    async def open_and_close() -> None:
        db = await Database.open(db_path)
        await db.close()

    aiosqlite.Connection.create_function = spy  # type: ignore[method-assign]
    try:
        asyncio.run(open_and_close())
    finally:
        aiosqlite.Connection.create_function = original  # type: ignore[method-assign]
    return captured


def _measure_size(
    ctx: Context, live: _Live, db_path: Path, size: int, functions: SqlFunctions
) -> tuple[list[Row], dict[str, Any]]:
    sql = sqlite3.connect(db_path, isolation_level=None)
    for name, (num_params, func, deterministic) in functions.items():
        sql.create_function(name, num_params, func, deterministic=deterministic)
    (tenant_id,) = sql.execute("SELECT id FROM tenants WHERE name = 'default'").fetchone()
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    try:
        for query in QUERIES:
            params = query.params(size)
            path = "/v3/images" + ("?" + urlencode(params) if params else "")
            statements = store_sql(tenant_id, params)
            http_s, http_total = _sample(functools.partial(live.get_total, path))
            sql_s, sql_total = _sample(functools.partial(_direct, sql, statements))
            if None not in (http_total, sql_total) and http_total != sql_total:
                raise RuntimeError(f"{query.key}: HTTP total {http_total} != SQL {sql_total}")
            total = http_total if http_total is not None else sql_total
            p50 = percentile(http_s, 50) if http_s else None
            r50 = percentile(sql_s, 50) if sql_s else None
            is_target = query.indexed_search and size == 1_000_000
            found = f" ({total:,} found)" if total is not None else ""
            rows.append(
                Row(
                    section="library",
                    figure=f"library {size:,}: {query.label} (p50)",
                    appliance=_cell(http_s) + found,
                    reference=_cell(sql_s, "SQL "),
                    ratio=ratio(p50, r50),
                    target=f"<= {SEARCH_TARGET * 1000:.0f} ms" if is_target else "",
                    passed=(p50 is not None and p50 <= SEARCH_TARGET) if is_target else None,
                    data={
                        "http": http_s,
                        "sql": sql_s,
                        "total": total,
                        "params": params,
                        "statements": statements,
                    },
                )
            )
            raw[query.key] = rows[-1].data
            ctx.note(f"{rows[-1].figure}: {rows[-1].appliance}; {rows[-1].reference}")
    finally:
        sql.close()
    return rows, raw


def run(
    ctx: Context, media: Media, sizes: tuple[int, ...] = SIZES
) -> tuple[list[Row], dict[str, Any]]:
    data_dir = ctx.subdir("library") / "data"
    app = Appliance.start(ctx, data_dir)
    first_start = app.started_in
    try:
        blob = app.upload(media.jpeg_200k.read_bytes(), "campaign-2026-0-hero.jpg")
    finally:
        app.stop()
    key = app.key
    db_path = data_dir / "pictor.db"
    functions = appliance_sql_functions(db_path)
    rows: list[Row] = []
    raw: dict[str, Any] = {"first_start_s": first_start, "sizes": {}}
    seeded = 1
    for size in sizes:
        seconds = seed(db_path, blob["sha256"], seeded, size)
        ctx.note(f"seeded {size - seeded:,} images in {seconds:.1f} s")
        seeded = size
        live = _Live(ctx, data_dir, key)
        try:
            ctx.note(f"start-up with {size:,} images: {live.started_in:.2f} s")
            size_rows, size_raw = _measure_size(ctx, live, db_path, size, functions)
        finally:
            live.stop()
        rows += size_rows
        raw["sizes"][size] = {
            "seed_seconds": seconds,
            "start_s": live.started_in,
            "db_bytes": db_path.stat().st_size,
            "queries": size_raw,
        }
        if size == sizes[-1]:
            rows.append(
                Row(
                    section="library",
                    figure=f"library {size:,}: start-up from source (s)",
                    appliance=f"{live.started_in:.2f} s",
                    reference=f"1 image {first_start:.2f} s",
                    ratio=ratio(live.started_in, first_start),
                )
            )
    return rows, raw
