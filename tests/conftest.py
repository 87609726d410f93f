"""The real appliance on an ephemeral port with a temporary data directory, for every test.

The server runs in a thread of its own with its own event loop; tests talk to it over real
sockets with `http.client`, so every header and byte is what a client would see.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from appliance.app import Appliance, start_appliance
from appliance.config import Settings
from tests.encoding import multipart

if TYPE_CHECKING:  # the plugins themselves are loaded (and assertion-rewritten) by pytest
    from tests.pg_server import PostgresServer
    from tests.s3_server import S3Target, SeaweedFS

# Real servers for the scale-out tests: PostgreSQL (`postgres_server`, `postgres_url`) and
# SeaweedFS's S3 gateway (`seaweedfs`, `s3_target`), started only by the tests that use them.
pytest_plugins = ["tests.pg_server", "tests.s3_server"]

DEFAULT = object()


@dataclass
class Response:
    status: int
    reason: str
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header_dict(self) -> dict[str, str]:
        """All headers, lower-cased names, minus the ones that vary per request (Date)."""
        return {k.lower(): v for k, v in self.headers.items() if k.lower() != "date"}


@dataclass
class Server:
    app: Appliance
    loop: asyncio.AbstractEventLoop
    data_dir: Path
    api_key: str
    thread: threading.Thread | None = None
    host: str = "127.0.0.1"
    _conns: list[http.client.HTTPConnection] = field(default_factory=list)

    def stop(self) -> None:
        """Stop the server (closing its database) and wait for it; idempotent."""
        if self.thread is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)

    @property
    def port(self) -> int:
        return self.app.port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop (e.g. to seed the store) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def settle(self) -> None:
        """Run the blob removals a delete deferred (an object store keeps an unused original
        a while, for streams in flight); nothing to do on the directory store."""
        self.call(self.app.library.remove_unused_now())

    def originals(self) -> list[str]:
        """The digests of the originals in the library's blob store, sorted."""
        stored = self.call(self.app.library.blobs.list_blobs())
        return sorted(b.sha256 for b in stored if b.variant is None)

    def derived(self) -> list[tuple[str, str]]:
        """(digest, variant) of every derived file (thumbnails) in the blob store, sorted."""
        stored = self.call(self.app.library.blobs.list_blobs())
        return sorted((b.sha256, b.variant) for b in stored if b.variant is not None)

    def blob_bytes(self, sha256: str, variant: str | None = None) -> bytes:
        return bytes(self.call(self.app.library.blobs.read(sha256, variant)))

    def new_key(self, tenant: str) -> str:
        return str(self.call(self.app.keys.create_key(tenant)).key)

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self._conns.append(conn)
        return conn

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        key: Any = DEFAULT,
        json_body: Any = None,
    ) -> Response:
        hdrs = dict(headers or {})
        if key is DEFAULT:
            key = self.api_key if path.startswith("/v3") else None
        if key is not None:
            hdrs.setdefault("Authorization", f"Bearer {key}")
        if json_body is not None:
            body = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, resp.reason, resp.headers, data)
        finally:
            conn.close()

    def upload(
        self,
        data: bytes,
        filename: str = "image.png",
        *,
        alt_text: str | None = None,
        folder: str | None = None,
        content_type: str = "application/octet-stream",
        key: Any = DEFAULT,
    ) -> Response:
        parts: list[tuple[str, str | bytes, str | None, str | None]] = [
            ("file", data, filename, content_type)
        ]
        if alt_text is not None:
            parts.append(("alt_text", alt_text, None, None))
        if folder is not None:
            parts.append(("folder", folder, None, None))
        body, ctype = multipart(parts)
        return self.request(
            "POST", "/v3/images", body=body, headers={"Content-Type": ctype}, key=key
        )


def run_server(
    data_dir: Path,
    fast_path: bool = True,
    flush_interval: float | None = None,
    **overrides: Any,
) -> tuple[Appliance, asyncio.AbstractEventLoop, threading.Thread]:
    """Start the appliance in a thread with its own event loop; returns once it listens.
    (`flush_interval`: seconds between writes of the fetch counts, for the stats tests.)"""
    settings = Settings(host="127.0.0.1", port=0, data_dir=data_dir, **overrides)
    extra: dict[str, Any] = {} if flush_interval is None else {"flush_interval": flush_interval}
    started: Future[Appliance] = Future()
    loop = asyncio.new_event_loop()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            app = loop.run_until_complete(
                start_appliance(settings, announce=False, fast_path=fast_path, **extra)
            )
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(app)
        loop.run_forever()
        loop.run_until_complete(app.stop())
        loop.close()

    thread = threading.Thread(target=main, name="pictor-test-server", daemon=True)
    thread.start()
    return started.result(timeout=60), loop, thread


# The suites that hold every backend pair to the same answers: each of their tests that uses
# a server runs once on the embedded default (SQLite and a blob directory) and once scaled
# out (PostgreSQL and an S3 object store), unless it is marked `embedded_only` (it looks at
# the data directory's own files).
SHARED_SUITES = {
    "test_api",
    "test_proxy",
    "test_variants",
    "test_upload",
    "test_storage",
    "test_conditional",
    "test_fetch_stats",
}
SCALEOUT_SUITES = {"test_scaleout"}  # only about many nodes over shared services
PAIRS: list[str] = ["embedded", "scaleout"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "embedded_only: looks at the embedded library's files; one backend pair"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backends" not in metafunc.fixturenames:
        return
    suite = metafunc.module.__name__.rpartition(".")[2]
    pairs = PAIRS if suite in SHARED_SUITES else PAIRS[:1]
    if suite in SCALEOUT_SUITES:
        pairs = PAIRS[1:]
    if metafunc.definition.get_closest_marker("embedded_only"):
        pairs = PAIRS[:1]
    metafunc.parametrize("backends", pairs, indirect=True)


class Backends:
    """Where a test's libraries live: settings for a server of the library at `data_dir`
    (two servers started on one data directory share one library)."""

    name = "embedded"

    def settings(self, data_dir: Path) -> dict[str, Any]:
        return {}

    def drop(self) -> None:
        """Remove the test's libraries from shared servers (its servers have stopped)."""


class ScaledOut(Backends):
    """PostgreSQL and an S3 store (the session's servers): a fresh database and bucket
    prefix per library, the S3 credentials in the environment as a node reads them."""

    name = "scaleout"

    def __init__(self, postgres: PostgresServer, seaweedfs: SeaweedFS) -> None:
        self.postgres = postgres
        self.seaweedfs = seaweedfs
        self._libraries: dict[Path, tuple[str, S3Target]] = {}
        self._lock = threading.Lock()  # servers may be started from several threads

    def library(self, data_dir: Path) -> tuple[str, S3Target]:
        with self._lock:
            if data_dir not in self._libraries:
                self._libraries[data_dir] = (
                    self.postgres.create_database(),
                    self.seaweedfs.new_target(),
                )
            return self._libraries[data_dir]

    def settings(self, data_dir: Path) -> dict[str, Any]:
        database, target = self.library(data_dir)
        return {"database": database, "blob_store": target.url, "s3_endpoint": target.endpoint}

    def drop(self) -> None:
        # A cluster of hundreds of databases makes every crash recovery (fsync of the whole
        # data directory) slow; each test's databases go when it ends.
        with self._lock:
            libraries, self._libraries = list(self._libraries.values()), {}
        if not self.postgres.running:
            return
        for database, _ in libraries:
            name = database.rpartition("/")[2]
            self.postgres.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def backends(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Backends:
    name = getattr(request, "param", "embedded")
    if name == "embedded":
        return Backends()
    pairs = ScaledOut(
        request.getfixturevalue("postgres_server"), request.getfixturevalue("seaweedfs")
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", pairs.seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", pairs.seaweedfs.secret_key)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return pairs


@contextmanager
def servers_on(backends: Backends, tmp_path: Path) -> Iterator[Any]:
    """A function that starts servers on these backends; all are stopped at the end."""
    running: list[Server] = []

    def start(data_dir: Path | None = None, **overrides: Any) -> Server:
        data_dir = data_dir or tmp_path / f"data{len(running)}"
        overrides = {**backends.settings(data_dir), **overrides}
        app, loop, thread = run_server(data_dir, **overrides)
        srv = Server(app=app, loop=loop, data_dir=data_dir, api_key="", thread=thread)
        running.append(srv)
        srv.api_key = srv.new_key("default")
        return srv

    try:
        yield start
    finally:
        for srv in running:
            srv.stop()
        backends.drop()


@pytest.fixture
def server_factory(tmp_path: Path, backends: Backends) -> Iterator[Any]:
    """Start servers (e.g. with --public-url); all are stopped at the end of the test."""
    with servers_on(backends, tmp_path) as start:
        yield start


@pytest.fixture
def server(server_factory: Any) -> Server:
    """A fresh appliance: empty data directory, one key for tenant "default"."""
    return server_factory()  # type: ignore[no-any-return]
