"""Many nodes over one PostgreSQL database and one S3 bucket (CONTRACT.md: Running on more
than one machine): two nodes racing uploads and deletes of the same bytes, the first key made
once by nodes starting together, kill -9 of a node mid-upload, and the database or the object
store stopped and restarted under a serving node."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.api_helpers import assert_error, uploaded, wait_until
from tests.conftest import Response, ScaledOut, Server, servers_on
from tests.pg_server import PostgresServer, running_postgres
from tests.s3_server import S3Target, SeaweedFS
from tests.soak import ROOT, ServerProcess, create_key
from tests.test_crash import ROUNDS, Ledger, Load, check_library, noisy_jpeg


def storage_unavailable(resp: Response) -> None:
    error = assert_error(resp, 503, "storage_unavailable")
    assert resp.headers["Retry-After"].isdigit(), resp.headers
    assert error["message"]


# -- two nodes racing -------------------------------------------------------------------------


@dataclass
class RaceLedger:
    live: dict[str, str] = field(default_factory=dict)  # id -> sha256, answered 201
    deleted: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def test_two_nodes_racing_uploads_and_deletes_of_the_same_bytes(
    server_factory: Any, tmp_path: Path
) -> None:
    library = tmp_path / "library"
    nodes = [server_factory(library), server_factory(library)]
    payloads = [images.png(24 + n, 16) for n in range(3)]
    digests = {hashlib.sha256(p).hexdigest(): p for p in payloads}
    ledger = RaceLedger()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(25):
            node = rng.choice(nodes)
            data = rng.choice(payloads)
            resp = node.upload(data, "race.png")
            if resp.status != 201:
                with ledger.lock:
                    ledger.failures.append(f"upload {resp.status} {resp.body[:200]!r}")
                continue
            with ledger.lock:
                ledger.live[resp.json()["id"]] = resp.json()["sha256"]
                victim = rng.choice(sorted(ledger.live)) if rng.random() < 0.6 else None
                if victim is not None:
                    ledger.live.pop(victim)
            if victim is not None:
                gone = rng.choice(nodes).request("DELETE", f"/v3/images/{victim}")
                with ledger.lock:
                    if gone.status == 204:
                        ledger.deleted.add(victim)
                    else:
                        ledger.failures.append(f"delete {gone.status} {gone.body[:200]!r}")

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(worker, range(6)))
    assert ledger.failures == []
    assert ledger.live and ledger.deleted

    # Zero acknowledged uploads lost, on either node; deletes are 410 on both.
    for node in nodes:
        for image_id, sha in ledger.live.items():
            resp = node.request("GET", f"/i/{image_id}")
            assert (resp.status, resp.body) == (200, digests[sha]), image_id
        for image_id in ledger.deleted:
            assert node.request("GET", f"/i/{image_id}").status == 410, image_id
        listed = node.request("GET", "/v3/images?page_size=100").json()
        assert listed["total"] == len(ledger.live)
    # Zero live images whose blob is missing, and (once the removals deferred for streams in
    # flight are done, and after a sweep) zero orphans.
    live_digests = sorted(set(ledger.live.values()))
    assert set(live_digests) <= set(nodes[0].originals())
    for node in nodes:
        node.settle()
    assert nodes[0].originals() == live_digests
    nodes[0].call(nodes[0].app.library.sweep(0.0, scratch=False))
    assert nodes[1].originals() == live_digests
    assert {sha for sha, _ in nodes[1].derived()} <= set(live_digests)


def test_nodes_starting_together_create_the_first_key_once(
    server_factory: Any, tmp_path: Path
) -> None:
    library = tmp_path / "library"
    with ThreadPoolExecutor(max_workers=4) as pool:
        nodes = list(pool.map(lambda _: server_factory(library), range(4)))
    keys = nodes[0].call(nodes[0].app.keys.list_keys())
    # One first key, plus the one key each test server is given after it started.
    assert [k.tenant for k in keys] == ["default"] * 5
    for node in nodes:
        assert node.request("GET", "/v3/images").status == 200


# -- the services going away ------------------------------------------------------------------


def warm(node: Server, image: dict[str, Any], data: bytes) -> None:
    for _ in range(2):  # the second answer is the node's memory (its fast lane)
        resp = node.request("GET", f"/i/{image['id']}")
        assert (resp.status, resp.body) == (200, data)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Isolated]:
    """A PostgreSQL and a SeaweedFS of this test's own, to stop and start: the session's
    servers (and every other test) never see the outage."""
    with running_postgres() as postgres, SeaweedFS() as seaweedfs:
        backends = ScaledOut(postgres, seaweedfs)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
        with servers_on(backends, tmp_path) as start:
            yield Isolated(postgres, seaweedfs, start(tmp_path / "library"))


@dataclass
class Isolated:
    postgres: PostgresServer
    seaweedfs: SeaweedFS
    node: Server


def test_database_stopped_then_restarted_under_a_serving_node(isolated: Isolated) -> None:
    node, postgres_server = isolated.node, isolated.postgres
    hot_data, cold_data = images.png(30, 20), images.png(31, 20)
    hot = uploaded(node, hot_data, "hot.png")
    cold = uploaded(node, cold_data, "cold.png")
    warm(node, hot, hot_data)
    postgres_server.stop("immediate")  # gone at once, as when its machine dies
    try:
        # Hot images keep serving from memory; whatever needs the database is a quick 503.
        resp = node.request("GET", f"/i/{hot['id']}")
        assert (resp.status, resp.body) == (200, hot_data)
        storage_unavailable(node.request("GET", f"/i/{cold['id']}"))
        storage_unavailable(node.request("GET", "/v3/images"))
        storage_unavailable(node.upload(images.png(32, 20), "while-down.png"))
        storage_unavailable(node.request("DELETE", f"/v3/images/{hot['id']}"))
    finally:
        postgres_server.start()
    # The node recovers by itself.
    assert wait_until(lambda: node.request("GET", "/v3/images").status == 200, timeout=20)
    resp = node.request("GET", f"/i/{cold['id']}")
    assert (resp.status, resp.body) == (200, cold_data)
    assert node.request("GET", "/v3/images").json()["total"] == 2
    assert node.upload(images.png(33, 20), "after.png").status == 201


def test_object_store_stopped_then_restarted_under_a_serving_node(isolated: Isolated) -> None:
    node, seaweedfs = isolated.node, isolated.seaweedfs
    hot_data, cold_data = images.png(30, 20), images.png(31, 20)
    hot = uploaded(node, hot_data, "hot.png")
    cold = uploaded(node, cold_data, "cold.png")
    warm(node, hot, hot_data)
    seaweedfs.stop()
    try:
        resp = node.request("GET", f"/i/{hot['id']}")
        assert (resp.status, resp.body) == (200, hot_data)
        storage_unavailable(node.request("GET", f"/i/{cold['id']}"))
        storage_unavailable(node.upload(images.png(32, 20), "while-down.png"))
        # Metadata needs only the database.
        assert node.request("GET", "/v3/images").json()["total"] == 2
    finally:
        seaweedfs.start()
    assert wait_until(lambda: node.request("GET", f"/i/{cold['id']}").status == 200, timeout=20)
    assert node.request("GET", f"/i/{cold['id']}").body == cold_data
    assert node.upload(images.png(33, 20), "after.png").status == 201
    assert node.request("GET", "/v3/images").json()["total"] == 3


# -- kill -9 ----------------------------------------------------------------------------------


@dataclass
class Bucket:
    """The scaled-out library's storage, as the crash checks look at it."""

    seaweedfs: SeaweedFS
    target: S3Target

    def _names(self, folder: str) -> list[str]:
        prefix = f"{self.target.prefix}/{folder}/" if self.target.prefix else f"{folder}/"
        return [k.rpartition("/")[2] for k in self.seaweedfs.keys(self.target.bucket, prefix)]

    def originals(self) -> set[str]:
        return set(self._names("blobs"))

    def derived(self) -> set[str]:
        return {name.partition(".")[0] for name in self._names("derived")}

    def check(self) -> None:
        return None  # PostgreSQL checks itself; the keys are asserted above


def test_kill_9_of_a_node_mid_upload_loses_nothing_answered(
    postgres_server: PostgresServer, seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    rng = random.Random()
    target = seaweedfs.new_target()
    env = {**target.env(), "PICTOR_DATABASE": postgres_server.create_database()}
    data_dir = tmp_path / "node"
    key = create_key(data_dir, "t", env=env)
    pool = [noisy_jpeg(rng) for _ in range(2)]
    ledger = Ledger()
    storage = Bucket(seaweedfs, target)
    for _ in range(max(2, ROUNDS // 3)):
        server = ServerProcess.start(data_dir, tmp_path / "server.log", env=env)
        try:
            load = Load(server.port, key, ledger, pool, rng.randrange(2**32))
            before = len(ledger.uploads)
            load.start()
            deadline = time.monotonic() + 30
            while load.acked < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.3))
        finally:
            server.kill()
        load.dead.set()
        load.join()
        assert ledger.failures == [], ledger.failures
        assert len(ledger.uploads) > before
    # What a killed node left behind is swept by a later sweep (here: at once).
    done = subprocess_sweep(data_dir, env)
    assert done.returncode == 0, done.stderr
    server = ServerProcess.start(data_dir, tmp_path / "server.log", env=env)
    try:
        check_library(server, data_dir, key, ledger, storage)
    finally:
        assert server.stop() == 0


def subprocess_sweep(data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "main.py", "sweep", "--grace-seconds", "0", "--data-dir", str(data_dir)],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PICTOR_")}, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
