"""The data directory across restarts and crashes: SQLite in WAL mode with named migrations,
blob files swept of a crash's leftovers, nothing answered 201 ever lost (CONTRACT.md:
Storage)."""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.store.sqlite_migrations import MIGRATIONS
from tests import images
from tests.api_helpers import (
    TIMESTAMP_RE,
    blob_files,
    db_query,
    list_images,
    printed_keys,
    running,
    serving,
    tmp_files,
    uploaded,
    wait_until,
)
from tests.conftest import Server

PUBLIC = "https://img.example.com"


def seed(srv: Server) -> tuple[list[dict[str, Any]], dict[str, bytes], str]:
    """A small library: four formats, folders, alt text, a duplicate and a deleted image."""
    data = {
        "a.png": images.png(120, 80),
        "b.jpg": images.jpeg(90, 60, orientation=6),
        "c.gif": images.gif(40, 30, frames=3),
        "d.webp": images.webp(50, 50),
    }
    made = [
        uploaded(srv, data["a.png"], "a.png", alt_text="Été", folder="news"),
        uploaded(srv, data["b.jpg"], "b.jpg", folder="branding"),
        uploaded(srv, data["c.gif"], "c.gif", alt_text="spinner"),
        uploaded(srv, data["d.webp"], "d.webp", folder="news"),
        uploaded(srv, data["a.png"], "a-copy.png"),
    ]
    doomed = uploaded(srv, images.png(7, 7), "doomed.png", folder="gone")
    assert srv.request("DELETE", f"/v3/images/{doomed['id']}").status == 204
    return made, data, doomed["id"]


def snapshot(srv: Server) -> dict[str, Any]:
    return {
        "list": list_images(srv, "page_size=100"),
        "folders": srv.request("GET", "/v3/images/folders").json(),
        "search": list_images(srv, "search=%C3%A9t%C3%A9"),
        "short": list_images(srv, "search=sp"),
    }


def test_everything_survives_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running(data_dir, public_url=PUBLIC) as first:
        key = first.api_key
        made, data, doomed = seed(first)
        before = snapshot(first)
        thumbs = {
            i["id"]: first.request("GET", f"/i/{i['id']}?variant=thumbnail").body for i in made
        }
    assert before["list"]["total"] == 5
    assert before["folders"] == {"folders": ["branding", "news"]}

    with running(data_dir, api_key=key, public_url=PUBLIC) as second:
        # The old key still works, and the library reads exactly as before.
        assert snapshot(second) == before
        for image in made:
            assert second.request("GET", f"/v3/images/{image['id']}").json() == image
            served = second.request("GET", f"/i/{image['id']}")
            assert served.status == 200
            assert served.body == data[image["filename"].replace("-copy", "")]
            thumb = second.request("GET", f"/i/{image['id']}?variant=thumbnail")
            assert thumb.status == 200
            assert thumb.body == thumbs[image["id"]]
        # A deleted image stays gone, for ever.
        assert second.request("GET", f"/i/{doomed}").status == 410
        assert second.request("GET", f"/v3/images/{doomed}").status == 404
        # New uploads continue the order: newest first.
        newer = uploaded(second, images.png(5, 5), "newer.png")
        assert list_images(second)["images"][0] == newer
        assert list_images(second)["total"] == 6


def test_start_sweeps_temp_files_and_unused_blobs(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running(data_dir) as first:
        key = first.api_key
        kept = uploaded(first, images.png(60, 40), "kept.png")
        assert first.request("GET", f"/i/{kept['id']}?variant=thumbnail").status == 200
    kept_blob = data_dir / "blobs" / kept["sha256"][:2] / kept["sha256"]
    kept_thumbs = sorted((data_dir / "derived").rglob(f"{kept['sha256']}.*"))
    assert kept_blob.is_file() and kept_thumbs

    # A crash's leftovers: half-received uploads, a blob and a thumbnail no row points at.
    (data_dir / "tmp" / "up-0123456789abcdef01234567.part").write_bytes(b"half an upload")
    (data_dir / "tmp" / "derived-0123456789abcdef.part").write_bytes(b"half a thumbnail")
    orphan_sha = hashlib.sha256(b"orphan").hexdigest()
    orphan = data_dir / "blobs" / orphan_sha[:2] / orphan_sha
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"orphan")
    orphan_thumb = data_dir / "derived" / orphan_sha[:2] / f"{orphan_sha}.thumbnail"
    orphan_thumb.parent.mkdir(parents=True, exist_ok=True)
    orphan_thumb.write_bytes(b"orphan thumbnail")
    # Another orphan in the referenced blob's own directory.
    neighbour = kept_blob.parent / (kept["sha256"][:2] + secrets.token_hex(31))
    neighbour.write_bytes(b"neighbour")

    with running(data_dir, api_key=key) as second:
        assert tmp_files(data_dir) == []
        assert not orphan.exists()
        assert not orphan_thumb.exists()
        assert not neighbour.exists()
        assert blob_files(data_dir) == [kept_blob]
        assert sorted((data_dir / "derived").rglob(f"{kept['sha256']}.*")) == kept_thumbs
        assert second.request("GET", f"/i/{kept['id']}").body == kept_blob.read_bytes()
        assert list_images(second)["images"] == [
            {**kept, "url": kept["url"].replace(str(first.port), str(second.port))}
            | {"thumbnail_url": kept["thumbnail_url"].replace(str(first.port), str(second.port))}
        ]


@pytest.mark.embedded_only
def test_database_is_wal_with_named_migrations(server: Server) -> None:
    uploaded(server, images.png())
    assert db_query(server.data_dir, "PRAGMA journal_mode") == [("wal",)]
    rows = db_query(server.data_dir, "SELECT name, applied_at FROM migrations ORDER BY rowid")
    names = [r[0] for r in rows]
    assert names == [name for name, _ in MIGRATIONS]
    assert names[:3] == ["0001_tenants_and_keys", "0002_images", "0003_search_index"]
    assert all(TIMESTAMP_RE.match(r[1]) for r in rows)
    tables = {r[0] for r in db_query(server.data_dir, "SELECT name FROM sqlite_master")}
    assert {"tenants", "api_keys", "images", "migrations"} <= tables
    # Everything lives under the data directory.
    assert sorted(p.name for p in server.data_dir.iterdir()) == sorted(
        ["blobs", "derived", "tmp", "pictor.db", "pictor.db-wal", "pictor.db-shm"]
    )


def test_migrations_run_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running(data_dir):
        pass
    first = db_query(data_dir, "SELECT name, applied_at FROM migrations ORDER BY rowid")
    db_query(data_dir, "UPDATE migrations SET applied_at = '2000-01-01T00:00:00Z'")
    with running(data_dir) as srv:
        assert srv.request("GET", "/v3/images").status == 200
    again = db_query(data_dir, "SELECT name, applied_at FROM migrations ORDER BY rowid")
    assert [r[0] for r in again] == [r[0] for r in first]
    assert {r[1] for r in again} == {"2000-01-01T00:00:00Z"}
    assert db_query(data_dir, "PRAGMA journal_mode") == [("wal",)]
    assert db_query(data_dir, "PRAGMA integrity_check") == [("ok",)]


def test_kill_9_loses_no_answered_upload(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    args = ("--port", "0", "--data-dir", str(data_dir))
    sent: dict[str, bytes] = {}
    with serving(*args, expected_exit=-signal.SIGKILL) as served:
        [key] = printed_keys(served.lines)
        for n in range(8):
            data = images.png(20 + n, 20)
            resp = served.upload(key, data, f"n{n}.png")
            assert resp.status == 201
            sent[resp.json()["id"]] = data
        deleted = next(iter(sent))
        assert served.request("DELETE", f"/v3/images/{deleted}", key=key).status == 204
        os.kill(served.proc.pid, signal.SIGKILL)
        served.proc.wait(timeout=30)
    with running(data_dir, api_key=key) as srv:
        listed = list_images(srv, "page_size=100")
        assert [i["id"] for i in listed["images"]] == [i for i in list(sent)[::-1] if i != deleted]
        for image_id, data in sent.items():
            if image_id == deleted:
                assert srv.request("GET", f"/i/{image_id}").status == 410
            else:
                assert srv.request("GET", f"/i/{image_id}").body == data
        assert db_query(data_dir, "PRAGMA integrity_check") == [("ok",)]


def test_kill_9_during_uploads_never_lists_an_unservable_image(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    args = ("--port", "0", "--data-dir", str(data_dir))
    acknowledged: dict[str, str] = {}
    stop = threading.Event()

    with serving(*args, expected_exit=-signal.SIGKILL) as served:
        [key] = printed_keys(served.lines)

        def upload_forever(worker: int) -> None:
            n = 0
            while not stop.is_set():
                data = images.png(16 + worker, 16 + n % 200)
                try:
                    resp = served.upload(key, data, f"w{worker}-{n}.png")
                except (OSError, http.client.HTTPException):
                    return  # the server died under us: this one was never answered
                if resp.status == 201:
                    acknowledged[resp.json()["id"]] = hashlib.sha256(data).hexdigest()
                n += 1

        workers = [threading.Thread(target=upload_forever, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(served.proc.pid, signal.SIGKILL)
        served.proc.wait(timeout=30)
        stop.set()
        for w in workers:
            w.join(timeout=30)
    assert len(acknowledged) >= 12

    with running(data_dir, api_key=key) as srv:
        listed = list_images(srv, "page_size=100")
        pages = [listed]
        for page in range(2, (listed["total"] + 99) // 100 + 1):
            pages.append(list_images(srv, f"page_size=100&page={page}"))
        everything = [i for p in pages for i in p["images"]]
        ids = {i["id"] for i in everything}
        # Every upload answered 201 is there ...
        assert set(acknowledged) <= ids
        # ... and every listed image can be served, with its recorded bytes.
        for image in everything:
            served_image = srv.request("GET", f"/i/{image['id']}")
            assert served_image.status == 200, image
            assert hashlib.sha256(served_image.body).hexdigest() == image["sha256"]
            if image["id"] in acknowledged:
                assert image["sha256"] == acknowledged[image["id"]]
        assert tmp_files(data_dir) == []
        assert {p.name for p in blob_files(data_dir)} == {i["sha256"] for i in everything}


def test_two_servers_on_one_library_keep_each_others_promises(
    server_factory: Any, tmp_path: Path
) -> None:
    """Two appliances over one data directory share nothing in memory: an upload on one is
    served by the other, a delete on one is 410 on the other within a second (even for an
    image the other held in its caches), a revoked key fails on the other at once, and the
    first key was created once."""
    library = tmp_path / "library"
    a = server_factory(library)
    b = server_factory(library)
    data = images.png(30, 20)
    image = uploaded(a, data, "shared.png")
    path = f"/i/{image['id']}"
    for _ in range(3):  # the second answer comes from b's memory (its fast lane)
        resp = b.request("GET", path)
        assert (resp.status, resp.body) == (200, data)
    assert a.request("DELETE", f"/v3/images/{image['id']}").status == 204
    assert wait_until(lambda: b.request("GET", path).status == 410, timeout=1.0)
    assert b.request("GET", path + "?variant=thumbnail").status == 410
    # Dedup across the two: the same bytes uploaded through b after the delete on a serve.
    again = uploaded(b, data, "again.png")
    assert a.request("GET", f"/i/{again['id']}").body == data

    key = a.new_key("team")
    assert b.request("GET", "/v3/images", key=key).status == 200
    key_id = key.split("_")[1]
    assert a.call(a.app.keys.revoke(key_id)) is True
    assert b.request("GET", "/v3/images", key=key).status == 401
    tenants = b.call(b.app.keys.list_tenants())
    assert [t.name for t in tenants] == ["default", "team"]
