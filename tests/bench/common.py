"""Plumbing shared by the sections: child processes (pinned, always stopped), ports, HTTP,
statistics, and the rows of the final table."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable  # `make bench` runs .venv/bin/python
SERVER_CORE = 0
CLIENT_CORE = 1


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


# -- processes ---------------------------------------------------------------------------


class Processes:
    """Every child the bench starts, each in a session of its own, so that all of them (and
    their children: nginx's worker) are stopped by process group however the run ends."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        args: Sequence[str],
        *,
        core: int | None = None,
        stdout: IO[bytes] | int | None = subprocess.DEVNULL,
        stderr: IO[bytes] | int | None = subprocess.DEVNULL,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `args`, pinned to `core` with taskset (which execs it: the pid is the
        program's own, so /proc/PID is the program's)."""
        argv = list(args)
        if core is not None:
            argv = ["taskset", "-c", str(core), *argv]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=REPO,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
        self._running.append(proc)
        return proc

    def run(
        self,
        args: Sequence[str],
        *,
        core: int | None = None,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion (e.g. wrk), capturing its output; killed if it overstays."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = self.start(args, core=core, stdout=out, stderr=err, env=env)
            try:
                proc.wait(timeout=timeout)
            finally:
                self.stop(proc)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(
                proc.args,
                proc.returncode,
                out.read().decode("utf-8", "replace"),
                err.read().decode("utf-8", "replace"),
            )

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """Signal the child's process group, give it 10 s, then SIGKILL it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Leftovers of its group (a worker whose master died first).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self._running:
            self._running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self._running)):
            self.stop(proc)


@dataclass
class Context:
    """What every section gets: where to put files, which children to track, the knobs."""

    procs: Processes
    tmp: Path
    duration: float  # seconds of each wrk/ab run
    connections: int  # wrk/ab connections
    log: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        print(f"  {message}", flush=True)
        self.log.append(message)

    def subdir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def make_tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="pictor-bench-"))


def remove_tmp(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def pin_self(core: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {core})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until an HTTP request to the port gets any answer; fails if the process died."""
    deadline = time.monotonic() + timeout
    while True:
        if answers(port):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before answering")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args!r} did not answer on port {port} in {timeout} s")
        time.sleep(0.002)


def answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        conn.close()


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs; needs privilege)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# -- HTTP client -------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """One keep-alive connection (reconnects if the server closed it)."""

    def __init__(self, port: int, timeout: float = 120) -> None:
        self.port = port
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Answer:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=self.timeout
                )
            try:
                self._conn.request(method, path, body=body, headers=dict(headers or {}))
                resp = self._conn.getresponse()
                data = resp.read()
                hdrs = {k.lower(): v for k, v in resp.getheaders()}
                if hdrs.get("connection", "").lower() == "close":
                    self.close()
                return Answer(resp.status, hdrs, data)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def multipart(
    data: bytes, filename: str, fields: Mapping[str, str] | None = None
) -> tuple[bytes, str]:
    """A multipart/form-data body with one `file` part (and text fields)."""
    boundary = "benchboundary" + uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (fields or {}).items()
    ]
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = b"".join([*parts, head, data, f"\r\n--{boundary}--\r\n".encode()])
    return body, f"multipart/form-data; boundary={boundary}"


# -- statistics --------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b


# -- the table ---------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table. `passed` is None when the figure has no target."""

    section: str
    figure: str
    appliance: str
    reference: str
    ratio: float | None
    target: str = ""
    passed: bool | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> str:
        if self.passed is None:
            return "-" if not self.target else "n/a"
        return "pass" if self.passed else "FAIL"


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1000
    if ms != ms:
        return "n/a"
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


def fmt_rate(value: float, unit: str) -> str:
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.1f} {unit}"
