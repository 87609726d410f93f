"""The start-up check of SQLite's features (appliance/preflight.py), on the real sqlite3 module.

An old SQLite is stood in for by SQLite's own authorizer, which makes the library refuse the
statements a feature needs, as an SQLite without it does. (The real thing, bullseye's SQLite
3.34, is run by `make test-binary`.)"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.preflight import FEATURES, SQLiteUnavailable, check_sqlite
from tests.api_helpers import ROOT, clean_env


def test_the_running_sqlite_has_every_feature() -> None:
    check_sqlite()


def test_features_needed_are_the_stores() -> None:
    names = " ".join(f.name for f in FEATURES)
    assert "RETURNING" in names and "trigram" in names and "ON CONFLICT" in names
    assert max(f.since for f in FEATURES) == (3, 35, 0)


def _denying(action: int) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.set_authorizer(
        lambda code, *_: sqlite3.SQLITE_DENY if code == action else sqlite3.SQLITE_OK
    )
    return conn


@pytest.mark.parametrize(
    ("action", "feature"),
    [
        (sqlite3.SQLITE_CREATE_VTABLE, "FTS5 with the trigram tokenizer"),
        (sqlite3.SQLITE_UPDATE, "upsert (INSERT ... ON CONFLICT DO UPDATE)"),
    ],
)
def test_a_missing_feature_is_named_with_both_versions(action: int, feature: str) -> None:
    with pytest.raises(SQLiteUnavailable) as caught:
        check_sqlite(connect=lambda: _denying(action))
    message = str(caught.value)
    assert message.startswith(f"SQLite {sqlite3.sqlite_version} ")
    assert f"lacks {feature}, new in SQLite " in message
    assert "not authorized" in message  # SQLite's own error is passed on
    assert "needs SQLite 3.35.0 or newer" in message


def test_a_wrong_result_is_a_missing_feature() -> None:
    wrong = FEATURES[0]._replace(expect=[(3,)])
    with pytest.raises(SQLiteUnavailable, match=r"wrong result \[\(2,\)\], expected \[\(3,\)\]"):
        check_sqlite(features=[wrong])


# Every sqlite3 connection in the process refuses virtual tables, so FTS5 is missing.
NO_VTABLES = """
import sqlite3, sys
_connect = sqlite3.connect
def connect(*args, **kwargs):
    conn = _connect(*args, **kwargs)
    conn.set_authorizer(
        lambda code, *_: sqlite3.SQLITE_DENY if code == sqlite3.SQLITE_CREATE_VTABLE else 0
    )
    return conn
sqlite3.connect = connect
from appliance.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "args", [["serve", "--port", "0"], ["keys", "create", "--tenant", "t"], ["keys", "list"]]
)
def test_every_command_refuses_to_start_before_opening_the_database(
    tmp_path: Path, args: list[str]
) -> None:
    data = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-c", NO_VTABLES, *args, "--data-dir", str(data)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stdout == ""
    line = done.stderr.strip()
    assert line.startswith(f"pictor: refusing to start: SQLite {sqlite3.sqlite_version} "), line
    assert "lacks FTS5 with the trigram tokenizer" in line
    assert "needs SQLite 3.35.0 or newer" in line
    assert "\n" not in line and "Traceback" not in done.stderr
    assert not data.exists()  # nothing was created or opened
