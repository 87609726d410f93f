"""kill -9 at random moments while uploads, patches and deletes are in flight, several rounds
on one data directory (CONTRACT.md: Storage). After every restart: nothing answered is lost,
nothing listed is unservable, the start-up sweep leaves no temp file and no unused blob, the
database is sound and `verify` passes."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tests import images
from tests.soak import CONNECTION_ERRORS, ROOT, ServerProcess, create_key, multipart

ROUNDS = 8
KILL_WINDOW = 0.3  # seconds: the kill lands 0-300 ms after uploads are known to be in flight


def big_png(rng: random.Random) -> bytes:
    """A unique valid PNG of 1-3 MB: a real image and an ancillary chunk of random bytes."""
    base = images.png(48, 32)
    pad = rng.randbytes(rng.randint(1_000_000, 3_000_000))
    chunk = struct.pack(">I", len(pad)) + b"zzPd" + pad
    chunk += struct.pack(">I", zlib.crc32(b"zzPd" + pad) & 0xFFFFFFFF)
    return base[:-12] + chunk + base[-12:]


def noisy_jpeg(rng: random.Random) -> bytes:
    """A real 1-2 MB photo-like JPEG (random noise), made unique by a comment segment."""
    from PIL import Image

    side = rng.randint(700, 900)
    img = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    data = images._save(img, "JPEG", quality=92)
    comment = rng.randbytes(32).hex().encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


@dataclass
class Ledger:
    """What the clients were told, and what may or may not have happened when the server
    died mid-request."""

    uploads: dict[str, str] = field(default_factory=dict)  # id -> sha256, answered 201
    deleted: set[str] = field(default_factory=set)  # answered 204
    maybe_deleted: set[str] = field(default_factory=set)  # DELETE sent, no answer
    alt_text: dict[str, str] = field(default_factory=dict)  # last acknowledged
    maybe_alt_text: dict[str, set[str]] = field(default_factory=dict)  # sent since, no answer
    busy: set[str] = field(default_factory=set)  # one PATCH or DELETE per image at a time
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def live(self) -> list[str]:
        return [i for i in self.uploads if i not in self.deleted and i not in self.maybe_deleted]

    def take(self, rng: random.Random) -> str | None:
        with self.lock:
            free = [i for i in self.live() if i not in self.busy]
            if not free:
                return None
            image_id = rng.choice(free)
            self.busy.add(image_id)
            return image_id


def request(
    port: int, method: str, path: str, key: str, body: bytes | None = None, ctype: str = ""
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {key}"}
    if ctype:
        headers["Content-Type"] = ctype
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Load:
    """Two uploaders, a patcher and a deleter, until the server dies under them."""

    def __init__(self, port: int, key: str, ledger: Ledger, pool: list[bytes], seed: int) -> None:
        self.port = port
        self.key = key
        self.ledger = ledger
        self.pool = pool
        self.rng = random.Random(seed)
        self.acked = 0
        self.dead = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(f,), daemon=True)
            for f in (self._upload, self._upload, self._patch, self._delete)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=60)
            assert not t.is_alive(), "a client thread hung after the kill"

    def _run(self, step: Callable[[random.Random], None]) -> None:
        rng = random.Random(self.rng.randrange(2**32))
        while not self.dead.is_set():
            try:
                step(rng)
            except CONNECTION_ERRORS:
                self.dead.set()  # the server is gone; the request's outcome is unknown
            time.sleep(0.005)

    def _fail(self, text: str) -> None:
        with self.ledger.lock:
            self.ledger.failures.append(text)

    def _upload(self, rng: random.Random) -> None:
        data = rng.choice(self.pool)
        if rng.random() < 0.7:  # mostly unique bytes; some repeats share a blob
            data = big_png(rng)
        body, ctype = multipart([("file", data, "crash.png"), ("alt_text", "new", None)])
        status, answer = request(self.port, "POST", "/v3/images", self.key, body, ctype)
        if status != 201:
            self._fail(f"upload answered {status}: {answer[:200]!r}")
            return
        image = json.loads(answer)
        sha = hashlib.sha256(data).hexdigest()
        if image["sha256"] != sha:
            self._fail(f"upload recorded {image['sha256']} for {sha}")
        with self.ledger.lock:
            self.ledger.uploads[image["id"]] = sha
            self.ledger.alt_text[image["id"]] = "new"
            self.acked += 1

    def _patch(self, rng: random.Random) -> None:
        image_id = self.ledger.take(rng)
        if image_id is None:
            return
        value = f"alt {rng.randrange(10**9)}"
        with self.ledger.lock:
            self.ledger.maybe_alt_text.setdefault(image_id, set()).add(value)
        try:
            status, answer = request(
                self.port,
                "PATCH",
                f"/v3/images/{image_id}",
                self.key,
                json.dumps({"alt_text": value}).encode(),
                "application/json",
            )
            if status != 200:
                self._fail(f"patch {image_id} answered {status}: {answer[:200]!r}")
                return
            with self.ledger.lock:
                self.ledger.alt_text[image_id] = value
                self.ledger.maybe_alt_text.pop(image_id, None)
        finally:
            with self.ledger.lock:
                self.ledger.busy.discard(image_id)

    def _delete(self, rng: random.Random) -> None:
        if rng.random() < 0.6:
            return
        image_id = self.ledger.take(rng)
        if image_id is None:
            return
        with self.ledger.lock:
            self.ledger.maybe_deleted.add(image_id)
        try:
            status, answer = request(self.port, "DELETE", f"/v3/images/{image_id}", self.key)
            if status != 204:
                self._fail(f"delete {image_id} answered {status}: {answer[:200]!r}")
                return
            with self.ledger.lock:
                self.ledger.deleted.add(image_id)
                self.ledger.maybe_deleted.discard(image_id)
        finally:
            with self.ledger.lock:
                self.ledger.busy.discard(image_id)


def list_everything(port: int, key: str) -> list[dict[str, object]]:
    everything: list[dict[str, object]] = []
    page = 1
    while True:
        status, body = request(port, "GET", f"/v3/images?page_size=100&page={page}", key)
        assert status == 200, body
        listed = json.loads(body)
        everything += listed["images"]
        if page * 100 >= listed["total"]:
            assert len(everything) == listed["total"]
            return everything
        page += 1


class Storage(Protocol):
    """What a library's backends hold, as the crash checks look at it."""

    def originals(self) -> set[str]: ...

    def derived(self) -> set[str]:
        """The digests that derived files exist for."""
        ...

    def check(self) -> None:
        """The database's own soundness, and whatever the layout promises."""
        ...


@dataclass
class LocalFiles:
    """The embedded library: the data directory's files."""

    data_dir: Path

    def originals(self) -> set[str]:
        return {p.name for p in (self.data_dir / "blobs").glob("*/*")}

    def derived(self) -> set[str]:
        return {p.name.split(".")[0] for p in (self.data_dir / "derived").glob("*/*")}

    def check(self) -> None:
        for blob in (self.data_dir / "blobs").glob("*/*"):
            assert blob.parent.name == blob.name[:2]
        db = f"file:{self.data_dir / 'pictor.db'}?mode=ro"
        conn = sqlite3.connect(db, uri=True, timeout=10)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()


def check_library(
    server: ServerProcess, data_dir: Path, key: str, ledger: Ledger, storage: Storage | None = None
) -> int:
    """The contract's promises after a restart; then settles what the crash left open.
    Returns the number of live images. `data_dir` is the node's: its scratch files are
    swept at start; `storage` holds the library (by default, that data directory)."""
    everything = list_everything(server.port, key)
    listed = {str(i["id"]): i for i in everything}

    # Nothing listed that cannot be served: every listed image is 200 and byte-exact.
    for image_id, image in listed.items():
        conn = server.connection()
        conn.request("GET", f"/i/{image_id}")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.status == 200, (image_id, resp.status, body[:200])
        assert hashlib.sha256(body).hexdigest() == image["sha256"], image_id

    # Every upload answered 201 is listed with its bytes, unless a DELETE was sent for it.
    for image_id, sha in ledger.uploads.items():
        if image_id in ledger.deleted or image_id in ledger.maybe_deleted:
            continue
        assert image_id in listed, f"answered 201, lost after kill -9: {image_id}"
        assert listed[image_id]["sha256"] == sha

    # Deletes answered 204 are gone for ever; unanswered ones went one way or the other.
    for image_id in ledger.deleted | ledger.maybe_deleted:
        conn = server.connection()
        conn.request("GET", f"/i/{image_id}")
        status = conn.getresponse().status
        conn.close()
        if image_id in ledger.deleted:
            assert status == 410, (image_id, status)
            assert image_id not in listed
        else:
            assert status in (200, 410), (image_id, status)
            assert (status == 200) == (image_id in listed)
            if status == 410:
                ledger.deleted.add(image_id)
            ledger.maybe_deleted.discard(image_id)

    # PATCH: the last acknowledged value, or one sent after it and never answered.
    for image_id, image in listed.items():
        if image_id not in ledger.uploads:
            continue  # an upload the kill cut off before its answer; its bytes are checked
        allowed = {ledger.alt_text[image_id], *ledger.maybe_alt_text.get(image_id, ())}
        assert image["alt_text"] in allowed, (image_id, image["alt_text"], allowed)
        ledger.alt_text[image_id] = str(image["alt_text"])
        ledger.maybe_alt_text.pop(image_id, None)

    # The start-up sweep: no temp files, no blob (or thumbnail) that no live image uses.
    storage = storage or LocalFiles(data_dir)
    assert sorted(p.name for p in (data_dir / "tmp").iterdir()) == []
    live = {str(i["sha256"]) for i in everything}
    blobs = storage.originals()
    assert blobs == live, {"unreferenced": blobs - live, "missing": live - blobs}
    derived = storage.derived()
    assert derived <= live, derived - live
    storage.check()
    return len(everything)


def verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "main.py", "verify", "--data-dir", str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_kill_9_at_random_moments_loses_nothing_answered(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(2**32)))
    print(f"CRASH_SEED={seed}")
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    key = create_key(data_dir, "t")
    pool = [noisy_jpeg(rng) for _ in range(3)]
    ledger = Ledger()
    for round_ in range(ROUNDS):
        server = ServerProcess.start(data_dir, tmp_path / "server.log")
        try:
            check_library(server, data_dir, key, ledger)
            load = Load(server.port, key, ledger, pool, rng.randrange(2**32))
            acked_before = len(ledger.uploads)
            load.start()
            # Uploads are in flight from the start; let a couple be answered first (so each
            # round has something to lose), then kill at a random moment.
            deadline = time.monotonic() + 20
            while load.acked < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0, KILL_WINDOW))
        finally:
            server.kill()
        load.dead.set()
        load.join()
        assert ledger.failures == [], ledger.failures
        print(
            f"round {round_}: {len(ledger.uploads) - acked_before} uploads answered; "
            f"in doubt: {len(ledger.maybe_deleted)} deletes, {len(ledger.maybe_alt_text)} patches"
        )
        assert len(ledger.uploads) > acked_before, f"round {round_}: no upload was answered"

    server = ServerProcess.start(data_dir, tmp_path / "server.log")
    try:
        live = check_library(server, data_dir, key, ledger)
        done = verify(data_dir)  # while serving: the admin tool works on a live library
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        assert server.stop() == 0
    assert len(ledger.uploads) >= 2 * ROUNDS
    assert ledger.deleted, "no delete was answered in any round"
    done = verify(data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"checked {live} image(s)" in done.stdout, done.stdout


def test_start_up_sweeps_unused_blobs_and_thumbnails_left_without_a_blob(tmp_path: Path) -> None:
    """What a crash between the steps of a delete (or a thumbnail rendered while its image
    was deleted) leaves behind is removed at the next start; live files are kept."""
    data_dir = tmp_path / "data"
    key = create_key(data_dir, "t")
    server = ServerProcess.start(data_dir, tmp_path / "server.log")
    try:
        body, ctype = multipart([("file", images.png(40, 30), "keep.png")])
        status, answer = request(server.port, "POST", "/v3/images", key, body, ctype)
        assert status == 201, answer
        kept = json.loads(answer)["sha256"]
    finally:
        assert server.stop() == 0
    unused_blob = hashlib.sha256(b"unused blob").hexdigest()
    lone_thumb = hashlib.sha256(b"thumbnail without a blob").hexdigest()
    planted = [
        data_dir / "blobs" / unused_blob[:2] / unused_blob,
        data_dir / "derived" / unused_blob[:2] / f"{unused_blob}.thumbnail",
        data_dir / "derived" / lone_thumb[:2] / f"{lone_thumb}.thumbnail",
        data_dir / "tmp" / "up-0123456789abcdef01234567.part",
    ]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left over")
    server = ServerProcess.start(data_dir, tmp_path / "server.log")
    try:
        assert [p for p in planted if p.exists()] == []
        assert {p.name for p in (data_dir / "blobs").glob("*/*")} == {kept}
        assert {p.name for p in (data_dir / "derived").glob("*/*")} == {f"{kept}.thumbnail"}
    finally:
        assert server.stop() == 0
    assert "swept 1 temp file(s) and 1 unused blob(s)" in (tmp_path / "server.log").read_text()
