"""The admins' data tools: `pictor verify` re-hashes every stored image against its record,
`pictor backup DEST` writes a consistent copy of a library that keeps serving meanwhile."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

from tests import images
from tests.api_helpers import list_images, pictor, uploaded
from tests.conftest import Server

VERIFY_OK = "checked {images} image(s) over {blobs} blob(s): 0 missing, 0 corrupt; "
VERIFY_OK += "database integrity: ok"


def verify(data_dir: Path) -> tuple[int, list[str]]:
    done = pictor("verify", "--data-dir", str(data_dir))
    assert done.stderr == "", done.stderr
    return done.returncode, done.stdout.splitlines()


def blob_of(data_dir: Path, sha256: str) -> Path:
    return data_dir / "blobs" / sha256[:2] / sha256


def seed(srv: Server) -> dict[str, Any]:
    """Four formats, a duplicate (two images over one blob) and a deleted image."""
    made = {
        "png": uploaded(srv, images.png(60, 40), "a.png", alt_text="Été", folder="news"),
        "jpg": uploaded(srv, images.jpeg(50, 40), "b.jpg", folder="branding"),
        "gif": uploaded(srv, images.gif(30, 20, frames=3), "c.gif"),
        "webp": uploaded(srv, images.webp(40, 40), "d.webp"),
        "copy": uploaded(srv, images.png(60, 40), "a-copy.png"),
    }
    doomed = uploaded(srv, images.png(9, 9), "doomed.png")
    assert srv.request("DELETE", f"/v3/images/{doomed['id']}").status == 204
    made["deleted"] = doomed
    return made


# -- verify -------------------------------------------------------------------------------


def test_verify_passes_on_a_good_library_and_reports_counts(server: Server) -> None:
    seed(server)
    code, lines = verify(server.data_dir)  # while the server is serving it
    assert (code, lines) == (0, [VERIFY_OK.format(images=5, blobs=4)])


def test_verify_passes_on_an_empty_library(server: Server) -> None:
    assert verify(server.data_dir) == (0, [VERIFY_OK.format(images=0, blobs=0)])


def test_verify_names_every_image_of_a_missing_blob(server: Server) -> None:
    made = seed(server)
    sha = made["png"]["sha256"]
    blob_of(server.data_dir, sha).unlink()
    code, lines = verify(server.data_dir)
    assert code == 1
    assert sorted(lines[:-1]) == sorted(
        f"MISSING  {made[k]['id']} ({sha})" for k in ("png", "copy")
    )
    assert lines[-1] == (
        "checked 5 image(s) over 4 blob(s): 2 missing, 0 corrupt; database integrity: ok"
    )


def test_verify_names_the_image_of_a_corrupted_blob(server: Server) -> None:
    made = seed(server)
    sha = made["jpg"]["sha256"]
    with open(blob_of(server.data_dir, sha), "ab") as f:
        f.write(b"\0")  # one byte appended: same image to a decoder, different bytes
    code, lines = verify(server.data_dir)
    assert code == 1
    assert lines == [
        f"CORRUPT  {made['jpg']['id']} ({sha})",
        "checked 5 image(s) over 4 blob(s): 0 missing, 1 corrupt; database integrity: ok",
    ]


def test_verify_without_a_database_fails_and_creates_nothing(tmp_path: Path) -> None:
    done = pictor("verify", "--data-dir", str(tmp_path / "nothing"))
    assert done.returncode == 1
    assert "no database" in done.stderr
    assert not (tmp_path / "nothing").exists()


# -- backup -------------------------------------------------------------------------------


def test_backup_of_a_serving_library_restores_the_same_library(
    server: Server, server_factory: Any, tmp_path: Path
) -> None:
    made = seed(server)
    sent = {
        m["id"]: server.request("GET", f"/i/{m['id']}").body
        for k, m in made.items()
        if k != "deleted"
    }
    # Uploads and deletes keep going while the backup runs.
    stop = threading.Event()
    during: dict[str, bytes] = {}
    written: set[str] = set()
    errors: list[str] = []

    def keep_writing() -> None:
        n = 0
        while not stop.is_set():
            data = images.png(20 + n % 50, 20)
            resp = server.upload(data, f"during-{n}.png")
            if resp.status != 201:
                errors.append(f"{resp.status} {resp.body[:200]!r}")
                return
            image_id = resp.json()["id"]
            written.add(image_id)
            if n % 3 == 2:  # some are deleted at once: they may or may not be in the copy
                if server.request("DELETE", f"/v3/images/{image_id}").status != 204:
                    errors.append(f"delete {image_id}")
            else:
                during[image_id] = data
            n += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        dest = tmp_path / "backup"
        done = pictor("backup", str(dest), "--data-dir", str(server.data_dir))
    finally:
        stop.set()
        writer.join(timeout=60)
    assert errors == []
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("backed up "), done.stdout
    assert done.stdout.rstrip().split(" to ")[1].split(";")[0] == str(dest)
    assert len(during) > 0, "no upload ran during the backup"

    # The source's view now (the copy may be missing what was written after its snapshot).
    source = {i["id"]: i for i in list_images(server, "page_size=100")["images"]}
    restored = server_factory(data_dir=dest)
    restored.api_key = server.api_key  # the keys are part of the library
    copy = list_images(restored, "page_size=100")
    copied = {i["id"]: i for i in copy["images"]}
    assert copy["total"] == len(copied)
    # Everything the source had before the backup started is in the copy, unchanged.
    for image_id, data in sent.items():
        assert copied[image_id] == {
            **source[image_id],
            "url": copied[image_id]["url"],
            "thumbnail_url": copied[image_id]["thumbnail_url"],
        }
        served = restored.request("GET", f"/i/{image_id}")
        assert (served.status, served.body) == (200, data)
    # Whatever else the copy holds came from the uploads during the backup, byte-exact.
    for image_id, image in copied.items():
        if image_id in sent:
            continue
        assert image_id in written, image_id
        served = restored.request("GET", f"/i/{image_id}")
        assert served.status == 200
        assert hashlib.sha256(served.body).hexdigest() == image["sha256"]
    # Tombstones came along: the deleted image is 410 for ever, also in the copy.
    assert restored.request("GET", f"/i/{made['deleted']['id']}").status == 410
    assert restored.request("GET", f"/v3/images/{made['deleted']['id']}").status == 404
    # Metadata that is not in the list: folders and search work on the copy.
    assert restored.request("GET", "/v3/images/folders").json() == {"folders": ["branding", "news"]}
    assert [i["id"] for i in list_images(restored, "search=%C3%A9t%C3%A9")["images"]] == [
        made["png"]["id"]
    ]
    # The copy is a sound library of its own: blobs only for its live images.
    blobs = {p.name for p in (dest / "blobs").glob("*/*")}
    assert blobs == {i["sha256"] for i in copied.values()}
    restored.stop()
    assert verify(dest)[0] == 0
    conn = sqlite3.connect(dest / "pictor.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_backup_into_a_non_empty_directory_fails_and_touches_nothing(
    server: Server, tmp_path: Path
) -> None:
    seed(server)
    dest = tmp_path / "occupied"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    done = pictor("backup", str(dest), "--data-dir", str(server.data_dir))
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.strip() == (f"pictor: {dest} is not empty; back up into a new directory"), (
        done.stderr
    )
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]
    assert (dest / "notes.txt").read_text() == "mine"


def test_backup_into_an_empty_existing_directory_works(server: Server, tmp_path: Path) -> None:
    made = seed(server)
    dest = tmp_path / "empty"
    dest.mkdir()
    done = pictor("backup", str(dest), "--data-dir", str(server.data_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"backed up 5 image(s) in 4 blob(s) to {dest}\n"
    assert verify(dest) == (0, [VERIFY_OK.format(images=5, blobs=4)])
    assert (
        blob_of(dest, made["gif"]["sha256"]).read_bytes()
        == blob_of(server.data_dir, made["gif"]["sha256"]).read_bytes()
    )


def test_backup_without_a_database_fails(tmp_path: Path) -> None:
    done = pictor("backup", str(tmp_path / "dest"), "--data-dir", str(tmp_path / "nothing"))
    assert done.returncode == 1
    assert "no database" in done.stderr
    assert not (tmp_path / "dest").exists()


# -- sweep --------------------------------------------------------------------------------


def test_sweep_removes_only_unused_objects_past_the_grace_period(server: Server) -> None:
    made = seed(server)
    live = {image["sha256"] for name, image in made.items() if name != "deleted"}
    orphan = hashlib.sha256(b"left by a crashed node").hexdigest()
    path = blob_of(server.data_dir, orphan)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"left by a crashed node")
    in_flight = server.data_dir / "tmp" / "up-0123456789abcdef01234567.part"
    in_flight.write_bytes(b"an upload the serving node is receiving")
    args = ("sweep", "--data-dir", str(server.data_dir))
    young = pictor(*args)  # while serving; the orphan is younger than the default hour
    assert (young.returncode, young.stdout, young.stderr) == (
        0,
        "swept 0 unused blob(s)\n",
        "",
    )
    assert path.exists()
    done = pictor(*args, "--grace-seconds", "0")
    assert (done.returncode, done.stdout) == (0, "swept 1 unused blob(s)\n")
    assert not path.exists()
    assert in_flight.exists()  # the serving node's scratch file is its own
    assert set(server.originals()) == live
    for name, image in made.items():
        status = server.request("GET", f"/i/{image['id']}").status
        assert status == (410 if name == "deleted" else 200), name
