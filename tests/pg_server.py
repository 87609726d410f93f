"""A real PostgreSQL server for the tests and benchmarks, started by the project itself.

Debian's `postgresql` package (installed by `make services-deps` when missing) provides the
binaries; this module makes a throw-away cluster in a temporary directory and runs it:

- as an unprivileged user when we are root (`initdb` refuses root): `nobody`, owning the
  cluster's directory, which is made outside pytest's root-only temporary tree;
- on 127.0.0.1 only, on a free port, with its unix socket in the cluster's own directory
  (never /var/run/postgresql), password authentication (scram-sha-256) for everyone;
- with fsync on (the defaults: what production runs), sized for the tests' connections.

Use `postgres_server` (a session fixture: one server for the whole run, each test making its
own database with `create_database()` in tens of milliseconds), or `running_postgres()` (a
context manager, e.g. for a benchmark or a test that must own its server). `stop()` and
`start()` take the server down and bring it back on the same port and data, for the fault
tests.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

USER = "pictor"
MAX_CONNECTIONS = 200  # each test's stores hold a few pooled connections each
RUN_AS = "nobody"  # when we are root


# The server stops (immediate shutdown) if the process that started it dies without stopping
# it (kill -9 of pytest or a benchmark): no orphan servers left behind. util-linux's setpriv
# sets the parent-death signal after the switch to the unprivileged user, then execs.
_SETPRIV = shutil.which("setpriv")
_DIE_WITH_US = [_SETPRIV, "--pdeathsig", "SIGQUIT", "--"] if _SETPRIV else []


def find_bindir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian: /usr/lib/postgresql/N/bin)."""
    versions = {
        Path(p).parent.parent.name: p for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
    }
    numbered = sorted((int(v), p) for v, p in versions.items() if v.isdigit())
    if numbered:
        return Path(numbered[-1][1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError(
        "PostgreSQL is not installed: run `make services-deps` (Debian's postgresql package)"
    )


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One throw-away cluster. `init()` once, then `start()`/`stop()` as often as needed."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        # Not under pytest's tmp_path: that tree is root-only, and the server runs as nobody.
        self.root = Path(tempfile.mkdtemp(prefix="pictor-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log = self.root / "postgres.log"
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._databases = 0
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam(RUN_AS)
            self._as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.init_seconds = 0.0
        self.start_seconds = 0.0

    def _run(self, *args: str | Path, timeout: float = 60) -> None:
        subprocess.run(
            [str(a) for a in args],
            check=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=self.root,
            env=self._env(),
            **self._as,
        )

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}

    def init(self) -> None:
        started = time.perf_counter()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as:
            os.chown(pwfile, self._as["user"], self._as["group"])
        pwfile.chmod(0o600)
        try:
            # UTF-8 with a Unicode-aware C locale: pg_trgm then counts letters of every script
            # as word characters (the search index covers them), and sorting is by code point.
            self._run(
                self.bindir / "initdb",
                "--pgdata", self.data,
                "--username", USER,
                "--pwfile", pwfile,
                "--auth", "scram-sha-256",
                "--encoding", "UTF8",
                "--locale", "C.UTF-8",
                "--no-instructions",
                # A throw-away cluster: its initial files need no fsync (the server's own
                # writes are fsynced as in production: fsync stays on).
                "--no-sync",
            )  # fmt: skip
        finally:
            pwfile.unlink()
        self.socket_dir.mkdir()
        if self._as:
            os.chown(self.socket_dir, self._as["user"], self._as["group"])
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# pictor tests\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                f"max_connections = {MAX_CONNECTIONS}\n"
                "fsync = on\n"
                "synchronous_commit = on\n"
                "log_min_messages = warning\n"
            )
        self.init_seconds = time.perf_counter() - started

    def start(self) -> None:
        """Start (again) and return once it accepts connections; same port as before."""
        if self.process is not None:
            return
        started = time.perf_counter()
        for attempt in range(5):
            port = self.port or free_port()
            if self._launch(port):
                self.port = port
                break
            if self.port or attempt == 4:  # a restart must keep its port
                raise RuntimeError(f"PostgreSQL did not start:\n{self.log_tail()}")
        self.start_seconds = time.perf_counter() - started

    def _launch(self, port: int) -> bool:
        """Run the postmaster as our own child; True once postmaster.pid says "ready"."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *_DIE_WITH_US,
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(port),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=self._env(),
                **self._as,
            )
        pidfile = self.data / "postmaster.pid"
        # Crash recovery fsyncs the whole data directory first: on a loaded disk, that is
        # tens of seconds.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                lines = []
            # Line 8 is the postmaster's status (PM_STATUS_READY once it takes connections).
            if lines[:1] == [str(self.process.pid)] and [s.strip() for s in lines[7:8]] == [
                "ready"
            ]:
                return True
            time.sleep(0.005)
        self.stop("immediate")
        return False

    @property
    def running(self) -> bool:
        return self.process is not None

    def stop(self, mode: str = "fast") -> None:
        """`fast` (rolls back and disconnects every session, then a checkpoint) or
        `immediate` (no checkpoint: the next start recovers from the WAL, as after a crash)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # A slow shutdown checkpoint (a loaded disk): quit at once instead. SIGKILL only
            # as a last resort, since its orphaned backends would keep the shared memory.
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.process = None

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{USER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with psql (over TCP, as the tests' user); returns its unaligned output."""
        done = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql,
             "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", dbname],
            check=True,
            timeout=60,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            # The password by environment, not on a command line other users can read.
            env={**self._env(), "PGPASSWORD": self.password},
        )  # fmt: skip
        return done.stdout

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (a copy of template1); returns its URL."""
        if name is None:
            self._databases += 1
            name = f"t{self._databases}_{secrets.token_hex(4)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A fresh cluster, initialised and started; removed at the end."""
    server = PostgresServer()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the whole run; a test that stops it must start it again."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    postgres_server.start()  # in case an earlier test left it stopped
    return postgres_server.create_database()
