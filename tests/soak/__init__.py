"""A bounded soak: dozens of keep-alive clients against `main.py serve` in a subprocess.

Each client mixes uploads, lists, searches, patches, deletes and public reads (plain,
HEAD, conditional, ranged, thumbnails) on loopback. Every answer is checked against what
the client knows; 5xx, connection errors and unexpected answers are counted. The server's
RSS is sampled from /proc every second. At the end every acknowledged write (uploads not
deleted, the latest acknowledged PATCH of each image, deletes) is read back.

`make soak` (python -m tests.soak) runs it for minutes; tests/test_soak_short.py runs the
same code for seconds inside `make test`. `ServerProcess` is also what the crash tests use.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.encoding import multipart, png_chunk

ROOT = Path(__file__).resolve().parents[2]
SERVING_RE = re.compile(r"^Pictor is serving .+ at http://([^/]+):(\d+)/$")
CONNECTION_ERRORS = (OSError, http.client.HTTPException)


# -- the server as a child process ------------------------------------------------------


class ServerProcess:
    """`main.py serve --port 0 --data-dir D`, its port read from its first line of output."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
        self.proc = proc
        self.port = port
        self._log = log

    @classmethod
    def start(
        cls,
        data_dir: Path,
        log_path: Path,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> ServerProcess:
        """`env` adds PICTOR_* (and AWS_*) variables, e.g. another pair of backends."""
        log = open(log_path, "ab")  # noqa: SIM115 - closed by stop()/kill()
        proc = subprocess.Popen(
            [sys.executable, "main.py", "serve", "--port", "0", "--data-dir", str(data_dir)],
            cwd=ROOT,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("PICTOR_")},
                **(env or {}),
            },
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert proc.stdout is not None
        port: list[int] = []

        def read_announcement() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                match = SERVING_RE.match(raw.decode().rstrip("\n"))
                if match and not port:
                    port.append(int(match.group(2)))
            # keep draining until exit so the child never blocks on a full pipe

        reader = threading.Thread(target=read_announcement, daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        while not port:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                log.close()
                raise RuntimeError(f"the server did not start; see {log_path}")
            time.sleep(0.02)
        return cls(proc, port[0], log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int | None:
        """VmRSS of the server process, or None once it is gone."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) if match else None

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


def create_key(data_dir: Path, tenant: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "main.py",
            "keys",
            "create",
            "--tenant",
            tenant,
            "--data-dir",
            str(data_dir),
        ],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("PICTOR_")},
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


# -- HTTP -------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class KeepAliveClient:
    """One persistent connection; reconnects (and re-raises) after a connection error."""

    def __init__(self, port: int, key: str, timeout: float = 60) -> None:
        self.port = port
        self.key = key
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        hdrs = dict(headers or {})
        if path.startswith("/v3"):
            hdrs["Authorization"] = f"Bearer {self.key}"
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=hdrs)
            resp = self.conn.getresponse()
            data = resp.read()
        except CONNECTION_ERRORS:
            self.close()
            raise
        if resp.will_close:
            self.close()
        return Answer(resp.status, resp.headers, data)

    def upload(self, data: bytes, filename: str, alt_text: str = "", folder: str = "") -> Answer:
        body, ctype = multipart(
            [("file", data, filename), ("alt_text", alt_text, None), ("folder", folder, None)]
        )
        return self.request("POST", "/v3/images", body, {"Content-Type": ctype})

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# -- test images --------------------------------------------------------------------------


def padded(image: bytes, size: int, rng: random.Random) -> bytes:
    """A PNG made about `size` bytes long (and unique) by an ancillary chunk of random
    bytes that decoders skip: big uploads that cost the server little decoding."""
    assert image.startswith(b"\x89PNG")
    pad = rng.randbytes(max(0, size - len(image) - 12))
    return image[:-12] + png_chunk(b"zzPd", pad) + image[-12:]


def image_pool(rng: random.Random, count: int = 48) -> list[tuple[str, bytes]]:
    """Small images in the four formats, some animated, and a few over 1 MB (streamed by the
    proxy rather than cached)."""
    from tests import images  # Pillow; imported here so `ServerProcess` users need not

    pool: list[tuple[str, bytes]] = []
    makers: list[tuple[str, Callable[[int, int], bytes]]] = [
        ("png", lambda w, h: images.png(w, h)),
        ("jpg", lambda w, h: images.jpeg(w, h)),
        ("gif", lambda w, h: images.gif(w, h, frames=3)),
        ("webp", lambda w, h: images.webp(w, h)),
        ("webp", lambda w, h: images.animated_webp(w, h, frames=2)),
        ("png", lambda w, h: images.png(w, h, mode="RGBA")),
    ]
    for n in range(count):
        ext, make = makers[n % len(makers)]
        pool.append((ext, make(rng.randint(16, 640), rng.randint(16, 480))))
    for _ in range(max(2, count // 16)):
        pool.append(("png", padded(images.png(32, 32), rng.randint(1_100_000, 1_600_000), rng)))
    return pool


# -- the soak -----------------------------------------------------------------------------


@dataclass
class Owned:
    """One image a client uploaded, as the client last had it acknowledged."""

    id: str
    sha256: str
    etag: str | None = None
    alt_text: str = ""
    folder: str | None = None
    deleted: bool = False


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    connection_errors: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[kind] += 1
            self.statuses[status] += 1
            if len(self.latencies) < 1_000_000:
                self.latencies.append(seconds)

    def problem(self, bucket: list[str], text: str) -> None:
        with self.lock:
            if len(bucket) < 10_000:
                bucket.append(text)


class Shared:
    """Ids every client may read through the proxy (others' images may vanish: 410)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: list[str] = []

    def add(self, image_id: str) -> None:
        with self.lock:
            self.ids.append(image_id)
            if len(self.ids) > 2000:
                del self.ids[:1000]

    def discard(self, image_id: str) -> None:
        with self.lock, contextlib.suppress(ValueError):
            self.ids.remove(image_id)

    def pick(self, rng: random.Random) -> str | None:
        with self.lock:
            return rng.choice(self.ids) if self.ids else None


class Worker(threading.Thread):
    MAX_OWNED = 8

    def __init__(
        self,
        n: int,
        port: int,
        key: str,
        pool: list[tuple[str, bytes]],
        shared: Shared,
        stats: Stats,
        deadline: float,
        seed: int,
    ) -> None:
        super().__init__(name=f"soak-{n}", daemon=True)
        self.n = n
        self.client = KeepAliveClient(port, key)
        self.pool = pool
        self.shared = shared
        self.stats = stats
        self.deadline = deadline
        self.rng = random.Random(seed)
        self.owned: dict[str, Owned] = {}
        self.history: list[Owned] = []
        self.bytes_of: dict[str, bytes] = {}  # sha256 -> data, for byte-exact checks

    # one request, timed and classified
    def call(self, kind: str, method: str, path: str, **kw: Any) -> Answer | None:
        started = time.monotonic()
        try:
            if kind == "upload":
                answer = self.client.upload(**kw)
            else:
                answer = self.client.request(method, path, **kw)
        except CONNECTION_ERRORS as exc:
            self.stats.problem(
                self.stats.connection_errors, f"{method} {path}: {type(exc).__name__}: {exc}"
            )
            return None
        self.stats.record(kind, answer.status, time.monotonic() - started)
        if answer.status >= 500:
            self.stats.problem(
                self.stats.server_errors, f"{method} {path}: {answer.status} {answer.body[:200]!r}"
            )
            return None
        return answer

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.stats.problem(self.stats.unexpected, f"client {self.n}: {what}")

    def run(self) -> None:
        ops: list[tuple[Callable[[], None], int]] = [
            (self.upload, 12),
            (self.list, 10),
            (self.patch, 12),
            (self.delete, 4),
            (self.read_own, 20),
            (self.read_any, 30),
            (self.conditional, 8),
            (self.ranged, 4),
        ]
        actions = [op for op, weight in ops for _ in range(weight)]
        try:
            while time.monotonic() < self.deadline:
                self.rng.choice(actions)()
        finally:
            self.client.close()

    def live(self) -> list[Owned]:
        return [o for o in self.owned.values() if not o.deleted]

    def upload(self) -> None:
        if len(self.live()) >= self.MAX_OWNED:
            self.delete()
            return
        ext, data = self.rng.choice(self.pool)
        alt = f"soak {self.n} {self.rng.randrange(10**6)}"
        folder = self.rng.choice(["", "news", "brand", f"client-{self.n}"])
        answer = self.call(
            "upload",
            "POST",
            "/v3/images",
            data=data,
            filename=f"s.{ext}",
            alt_text=alt,
            folder=folder,
        )
        if answer is None:
            return
        self.expect(answer.status == 201, f"upload: {answer.status} {answer.body[:200]!r}")
        if answer.status != 201:
            return
        image = answer.json()
        sha = hashlib.sha256(data).hexdigest()
        self.expect(image["sha256"] == sha, f"upload recorded {image['sha256']}, sent {sha}")
        owned = Owned(image["id"], sha, alt_text=alt, folder=folder or None)
        self.owned[owned.id] = owned
        self.history.append(owned)
        self.bytes_of[sha] = data
        self.shared.add(owned.id)

    def list(self) -> None:
        choice = self.rng.random()
        if choice < 0.15:
            answer = self.call("folders", "GET", "/v3/images/folders")
            if answer is not None:
                self.expect(answer.status == 200, f"folders: {answer.status}")
            return
        query = f"page={self.rng.randint(1, 3)}&page_size={self.rng.choice([10, 25, 100])}"
        if choice < 0.45:
            query += "&search=" + self.rng.choice(["soak", f"soak+{self.n}", "s.p", "zz"])
        elif choice < 0.6:
            query += "&folder=" + self.rng.choice(["news", "brand", f"client-{self.n}"])
        answer = self.call("list", "GET", f"/v3/images?{query}")
        if answer is not None:
            self.expect(answer.status == 200, f"list {query}: {answer.status}")

    def patch(self) -> None:
        live = self.live()
        if not live:
            self.upload()
            return
        owned = self.rng.choice(live)
        change: dict[str, str | None] = {}
        if self.rng.random() < 0.8:
            change["alt_text"] = f"patched {self.n} {self.rng.randrange(10**6)}"
        if self.rng.random() < 0.5:
            change["folder"] = self.rng.choice([None, "news", "brand", f"p-{self.n}"])
        answer = self.call(
            "patch",
            "PATCH",
            f"/v3/images/{owned.id}",
            body=json.dumps(change).encode(),
            headers={"Content-Type": "application/json"},
        )
        if answer is None:
            return
        self.expect(answer.status == 200, f"patch {owned.id}: {answer.status}")
        if answer.status == 200:
            owned.alt_text = str(change.get("alt_text", owned.alt_text))
            owned.folder = change.get("folder", owned.folder)
            image = answer.json()
            self.expect(
                (image["alt_text"], image["folder"]) == (owned.alt_text, owned.folder),
                f"patch {owned.id} answered {image}",
            )

    def delete(self) -> None:
        live = self.live()
        if not live:
            return
        owned = self.rng.choice(live)
        answer = self.call("delete", "DELETE", f"/v3/images/{owned.id}")
        if answer is None:
            return
        self.expect(answer.status == 204, f"delete {owned.id}: {answer.status}")
        if answer.status == 204:
            owned.deleted = True
            if self.rng.random() < 0.8:  # most readers stop asking; some keep getting 410
                self.shared.discard(owned.id)

    def read_own(self) -> None:
        live = self.live()
        if not live:
            self.upload()
            return
        owned = self.rng.choice(live)
        thumb = self.rng.random() < 0.3
        path = f"/i/{owned.id}" + ("?variant=thumbnail" if thumb else "")
        method = "HEAD" if self.rng.random() < 0.1 else "GET"
        answer = self.call("read", method, path)
        if answer is None:
            return
        self.expect(answer.status == 200, f"{method} {path}: {answer.status}")
        if answer.status == 200 and not thumb:
            owned.etag = answer.headers["ETag"]
            if method == "GET":
                self.expect(
                    hashlib.sha256(answer.body).hexdigest() == owned.sha256, f"bytes of {path}"
                )

    def read_any(self) -> None:
        image_id = self.shared.pick(self.rng)
        if image_id is None:
            self.upload()
            return
        path = f"/i/{image_id}" + ("?variant=thumbnail" if self.rng.random() < 0.3 else "")
        answer = self.call("read", "GET", path)
        if answer is not None:
            self.expect(answer.status in (200, 410), f"GET {path}: {answer.status}")

    def conditional(self) -> None:
        with_etag = [o for o in self.live() if o.etag]
        if not with_etag:
            self.read_own()
            return
        owned = self.rng.choice(with_etag)
        assert owned.etag is not None
        answer = self.call(
            "conditional", "GET", f"/i/{owned.id}", headers={"If-None-Match": owned.etag}
        )
        if answer is not None:
            self.expect(answer.status == 304 and not answer.body, f"conditional: {answer.status}")

    def ranged(self) -> None:
        live = self.live()
        if not live:
            self.read_own()
            return
        owned = self.rng.choice(live)
        data = self.bytes_of[owned.sha256]
        first = self.rng.randrange(len(data))
        last = min(len(data) - 1, first + self.rng.randrange(1, 70_000))
        answer = self.call(
            "range", "GET", f"/i/{owned.id}", headers={"Range": f"bytes={first}-{last}"}
        )
        if answer is not None:
            self.expect(
                answer.status == 206 and answer.body == data[first : last + 1],
                f"range {first}-{last} of {owned.id}: {answer.status}",
            )


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_kib: int


@dataclass
class SoakResult:
    seconds: float
    clients: int
    warmup: float
    stats: Stats
    samples: list[Sample]
    unreadable: list[str]
    acknowledged: int

    def rss_at(self, t: float) -> int:
        before = [s for s in self.samples if s.t <= t]
        return (before[-1] if before else self.samples[0]).rss_kib

    @property
    def rss_start(self) -> int:
        return self.samples[0].rss_kib

    @property
    def rss_warm(self) -> int:
        return self.rss_at(self.warmup)

    @property
    def rss_end(self) -> int:
        # The median of the last few samples: one upload in flight is not a trend.
        return int(statistics.median(s.rss_kib for s in self.samples[-5:]))

    @property
    def rss_peak(self) -> int:
        return max(s.rss_kib for s in self.samples)

    @property
    def growth_mib(self) -> float:
        return (self.rss_end - self.rss_warm) / 1024

    @property
    def total_requests(self) -> int:
        return sum(self.stats.requests.values())

    def failures(self, max_growth_mib: float | None) -> list[str]:
        out = []
        s = self.stats
        if s.server_errors:
            out.append(f"{len(s.server_errors)} 5xx answers, e.g. {s.server_errors[:3]}")
        if s.connection_errors:
            out.append(f"{len(s.connection_errors)} connection errors: {s.connection_errors[:3]}")
        if s.unexpected:
            out.append(f"{len(s.unexpected)} unexpected answers, e.g. {s.unexpected[:3]}")
        if self.unreadable:
            out.append(f"{len(self.unreadable)} writes not read back: {self.unreadable[:3]}")
        if max_growth_mib is not None and self.growth_mib > max_growth_mib:
            out.append(
                f"RSS grew {self.growth_mib:.1f} MiB after warm-up (limit {max_growth_mib} MiB)"
            )
        return out

    def summary(self) -> str:
        s = self.stats
        lat = sorted(s.latencies) or [0.0]
        mib = 1024
        lines = [
            f"soak: {self.seconds:.0f} s, {self.clients} clients, warm-up {self.warmup:.0f} s",
            f"requests: {self.total_requests} ({self.total_requests / self.seconds:.0f}/s); "
            + ", ".join(f"{k} {v}" for k, v in sorted(s.requests.items())),
            "statuses: " + ", ".join(f"{k}: {v}" for k, v in sorted(s.statuses.items())),
            f"latency: p50 {lat[len(lat) // 2] * 1000:.1f} ms, "
            f"p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms, max {lat[-1] * 1000:.0f} ms",
            f"errors: {len(s.server_errors)} 5xx, {len(s.connection_errors)} connection, "
            f"{len(s.unexpected)} unexpected; acknowledged writes read back: "
            f"{self.acknowledged - len(self.unreadable)}/{self.acknowledged}",
            f"server RSS (MiB): start {self.rss_start / mib:.1f}, after warm-up "
            f"{self.rss_warm / mib:.1f}, end {self.rss_end / mib:.1f}, peak "
            f"{self.rss_peak / mib:.1f}; growth after warm-up {self.growth_mib:+.1f}",
            "RSS over time (MiB): "
            + " ".join(
                f"{x.t:.0f}s:{x.rss_kib / mib:.0f}"
                for x in self.samples[:: max(1, len(self.samples) // 12)]
            ),
        ]
        return "\n".join(lines)


def _sample_rss(
    server: ServerProcess, started: float, stop: threading.Event, out: list[Sample]
) -> None:
    while not stop.is_set():
        rss = server.rss_kib()
        if rss is not None:
            out.append(Sample(time.monotonic() - started, rss))
        stop.wait(1.0)


def read_back(port: int, key: str, workers: list[Worker]) -> tuple[int, list[str]]:
    """Every acknowledged write, as its client last saw it acknowledged."""
    client = KeepAliveClient(port, key)
    unreadable: list[str] = []
    count = 0
    try:
        live = 0
        for worker in workers:
            for owned in worker.history:
                count += 1
                meta = client.request("GET", f"/v3/images/{owned.id}")
                public = client.request("GET", f"/i/{owned.id}")
                if owned.deleted:
                    if (meta.status, public.status) != (404, 410):
                        unreadable.append(f"{owned.id} deleted: {meta.status} {public.status}")
                    continue
                live += 1
                if meta.status != 200 or public.status != 200:
                    unreadable.append(f"{owned.id}: {meta.status} {public.status}")
                    continue
                image = meta.json()
                if (image["alt_text"], image["folder"]) != (owned.alt_text, owned.folder):
                    unreadable.append(
                        f"{owned.id}: has {image['alt_text']!r}/{image['folder']!r}, "
                        f"acknowledged {owned.alt_text!r}/{owned.folder!r}"
                    )
                if hashlib.sha256(public.body).hexdigest() != owned.sha256:
                    unreadable.append(f"{owned.id}: served bytes differ")
        total = client.request("GET", "/v3/images?page_size=1").json()["total"]
        if total != live:
            unreadable.append(f"the list has {total} images, the clients {live}")
    finally:
        client.close()
    return count, unreadable


def run_soak(
    data_dir: Path,
    log_path: Path,
    *,
    seconds: float,
    clients: int,
    warmup: float,
    seed: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> SoakResult:
    seed = random.randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    pool = image_pool(rng)
    key = create_key(data_dir, "soak")
    server = ServerProcess.start(data_dir, log_path)
    stats = Stats()
    samples: list[Sample] = []
    stop = threading.Event()
    try:
        started = time.monotonic()
        sampler = threading.Thread(
            target=_sample_rss, args=(server, started, stop, samples), daemon=True
        )
        sampler.start()
        shared = Shared()
        workers = [
            Worker(
                n, server.port, key, pool, shared, stats, started + seconds, rng.randrange(2**32)
            )
            for n in range(clients)
        ]
        for w in workers:
            w.start()
        while any(w.is_alive() for w in workers):
            time.sleep(min(15.0, max(0.1, started + seconds - time.monotonic())))
            if progress is not None and samples:
                progress(
                    f"{time.monotonic() - started:.0f}s: {sum(stats.requests.values())} "
                    f"requests, RSS {samples[-1].rss_kib / 1024:.0f} MiB"
                )
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join(timeout=5)
        rss = server.rss_kib()
        if rss is not None:
            samples.append(Sample(elapsed, rss))
        acknowledged, unreadable = read_back(server.port, key, workers)
    finally:
        stop.set()
        code = server.stop()
    if code != 0:
        unreadable.append(f"the server exited {code} on SIGTERM; see {log_path}")
    return SoakResult(elapsed, clients, warmup, stats, samples, unreadable, acknowledged)


@contextlib.contextmanager
def temporary_dir() -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pictor-soak-") as tmp:
        yield Path(tmp)
