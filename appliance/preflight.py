"""Checks made before any command opens the database, so that Pictor refuses to start with a
message a person can act on instead of failing later, request by request. (On an SQLite without
`RETURNING`, every upload answered 500.)

Each feature the store's SQL relies on is probed by running it on an in-memory database, not
read off the version number: FTS5 is a compile-time option, so a new enough SQLite can still
lack it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from typing import NamedTuple


class SQLiteUnavailable(Exception):
    """The SQLite that Python's sqlite3 module loaded lacks a feature the store needs."""


class Feature(NamedTuple):
    name: str
    since: tuple[int, int, int]  # the first SQLite release that has it
    setup: tuple[str, ...]  # statements run first
    query: str  # then this one, which must give `expect`
    expect: list[tuple[object, ...]]


FEATURES: tuple[Feature, ...] = (
    Feature(
        "upsert (INSERT ... ON CONFLICT DO UPDATE)",
        (3, 24, 0),
        (
            "CREATE TABLE counts (k TEXT PRIMARY KEY, n INTEGER NOT NULL)",
            "INSERT INTO counts VALUES ('a', 1) ON CONFLICT (k) DO UPDATE SET n = n + 1",
            "INSERT INTO counts VALUES ('a', 1) ON CONFLICT (k) DO UPDATE SET n = n + 1",
        ),
        "SELECT n FROM counts",
        [(2,)],
    ),
    Feature(
        "FTS5 with the trigram tokenizer",
        (3, 34, 0),
        (
            "CREATE VIRTUAL TABLE labels USING fts5(label, tokenize='trigram')",
            "INSERT INTO labels (rowid, label) VALUES (7, 'Spring SALE banner')",
        ),
        "SELECT rowid FROM labels WHERE labels MATCH '\"sale b\"'",
        [(7,)],
    ),
    Feature(
        "INSERT ... RETURNING",
        (3, 35, 0),
        ("CREATE TABLE rows (id INTEGER PRIMARY KEY, v TEXT)",),
        "INSERT INTO rows (v) VALUES ('x') RETURNING id, v",
        [(1, "x")],
    ),
)

REQUIRED = max(f.since for f in FEATURES)


def _memory() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", isolation_level=None)


def _version(v: tuple[int, int, int]) -> str:
    return ".".join(map(str, v))


def check_sqlite(
    connect: Callable[[], sqlite3.Connection] = _memory,
    features: Sequence[Feature] = FEATURES,
) -> None:
    """Raise SQLiteUnavailable, naming the SQLite found, the feature that failed and the
    version needed, unless every feature works on a connection from `connect`."""
    with closing(connect()) as conn:
        found = str(conn.execute("SELECT sqlite_version()").fetchone()[0])
        for feature in features:
            try:
                for statement in feature.setup:
                    conn.execute(statement)
                got = [tuple(row) for row in conn.execute(feature.query).fetchall()]
            except sqlite3.Error as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if got == feature.expect:
                    continue
                problem = f"wrong result {got!r}, expected {feature.expect!r}"
            raise SQLiteUnavailable(
                f"SQLite {found} (the library Python's sqlite3 module loaded) lacks "
                f"{feature.name}, new in SQLite {_version(feature.since)} ({problem}). "
                f"Pictor needs SQLite {_version(REQUIRED)} or newer, built with FTS5: run it "
                "on a Python linked against a newer SQLite, or use the released executable, "
                "which brings its own."
            )
