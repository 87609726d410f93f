"""Assertions and helpers shared by the API, upload, CLI and storage tests."""

from __future__ import annotations

import asyncio
import http.client
import os
import queue
import re
import secrets
import signal
import sqlite3
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Response, Server, multipart, run_server

ROOT = Path(__file__).resolve().parent.parent

IMAGE_KEYS = {
    "id",
    "filename",
    "alt_text",
    "folder",
    "mime_type",
    "size_bytes",
    "width",
    "height",
    "sha256",
    "url",
    "thumbnail_url",
    "created_at",
    "updated_at",
}
ID_RE = re.compile(r"^img_[A-Za-z0-9_-]{22,}$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
KEY_RE = re.compile(r"^pk_[A-Za-z0-9]{16}_[A-Za-z0-9]{43}$")


def assert_error(resp: Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The contract's error: JSON `{"error": {"status", "code", "message"}}`, nothing else,
    its status equal to the HTTP status, a message a person can read, never cached."""
    assert resp.status == status, (resp.status, resp.body[:500])
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    assert resp.headers.get("Cache-Control") == "no-store"
    assert "Server" not in resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"status", "code", "message"}, body
    assert error["status"] == status
    assert isinstance(error["code"], str) and re.fullmatch(r"[a-z_]+", error["code"]), error
    assert isinstance(error["message"], str) and len(error["message"]) > 10, error
    if code is not None:
        assert error["code"] == code, body
    return error


def assert_image(image: dict[str, Any]) -> None:
    """The shape of one ImageResponse (not its values)."""
    assert set(image) == IMAGE_KEYS, sorted(image)
    assert ID_RE.match(image["id"]), image["id"]
    assert TIMESTAMP_RE.match(image["created_at"]), image["created_at"]
    assert TIMESTAMP_RE.match(image["updated_at"]), image["updated_at"]
    assert image["url"].endswith(f"/i/{image['id']}")
    assert image["thumbnail_url"] == image["url"] + "?variant=thumbnail"


def parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def random_image_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "img_" + "".join(secrets.choice(alphabet) for _ in range(22))


def uploaded(server: Server, data: bytes, filename: str = "image.png", **kw: Any) -> dict[str, Any]:
    resp = server.upload(data, filename, **kw)
    assert resp.status == 201, resp.body[:500]
    image: dict[str, Any] = resp.json()
    return image


def list_images(server: Server, query: str = "", key: Any = None) -> dict[str, Any]:
    kwargs = {} if key is None else {"key": key}
    resp = server.request("GET", "/v3/images" + (f"?{query}" if query else ""), **kwargs)
    assert resp.status == 200, resp.body[:500]
    assert resp.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = resp.json()
    assert set(body) == {"images", "page", "page_size", "total"}, body
    return body


def blob_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "blobs").rglob("*") if p.is_file())


def tmp_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "tmp").rglob("*") if p.is_file())


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll for a side effect that lands just after the response (e.g. temp file cleanup)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def db_query(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read (or poke) the database file directly, as another process would."""
    conn = sqlite3.connect(data_dir / "pictor.db", timeout=10)
    try:
        rows = conn.execute(sql, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def stop_server(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)  # the server thread then closes the appliance
    thread.join(timeout=30)
    assert not thread.is_alive(), "the server did not stop"


@contextmanager
def running(data_dir: Path, api_key: str | None = None, **overrides: Any) -> Iterator[Server]:
    """A server on `data_dir` that is stopped when the block ends (server_factory only stops
    its servers at teardown; restarts need one stopped before the next starts)."""
    app, loop, thread = run_server(data_dir, **overrides)
    try:
        srv = Server(app=app, loop=loop, data_dir=data_dir, api_key=api_key or "")
        if api_key is None:
            srv.api_key = srv.new_key("default")
        yield srv
    finally:
        stop_server(loop, thread)


# -- the command line as a subprocess ------------------------------------------------

SERVING_RE = re.compile(r"^Pictor is serving (.+) at http://([^/]+):(\d+)/$")


def clean_env(**pictor: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICTOR_")}
    env.update(pictor)
    return env


def pictor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "main.py", *args],
        cwd=ROOT,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def create_key(data_dir: Path, tenant: str) -> str:
    done = pictor("keys", "create", "--tenant", tenant, "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    key = done.stdout.splitlines()[-1]
    assert KEY_RE.match(key), done.stdout
    return key


@dataclass
class Served:
    proc: subprocess.Popen[str]
    lines: list[str]
    host: str
    port: int

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        hdrs = dict(headers or {})
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            raw = conn.getresponse()
            return Response(raw.status, raw.reason, raw.headers, raw.read())
        finally:
            conn.close()

    def upload(self, key: str, data: bytes, filename: str = "a.png") -> Response:
        body, ctype = multipart([("file", data, filename, "image/png")])
        return self.request(
            "POST", "/v3/images", key=key, body=body, headers={"Content-Type": ctype}
        )


@contextmanager
def serving(
    *args: str, env: dict[str, str] | None = None, expected_exit: int = 0
) -> Iterator[Served]:
    """`main.py serve ...` until its announcement is printed; SIGTERM at the end, which
    must stop it cleanly (exit code 0, unless the test killed it itself)."""
    proc = subprocess.Popen(
        [sys.executable, "main.py", "serve", *args],
        cwd=ROOT,
        env=env or clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []

    def pump_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def pump_stderr() -> None:
        assert proc.stderr is not None
        stderr.extend(proc.stderr)

    threads = [threading.Thread(target=f, daemon=True) for f in (pump_stdout, pump_stderr)]
    for t in threads:
        t.start()
    try:
        seen: list[str] = []
        while not seen or seen[-1] != "Stop with Ctrl+C.":
            line = lines.get(timeout=60)
            if line is None:
                pytest.fail(f"serve exited early ({proc.wait()}): {seen} {''.join(stderr)}")
            seen.append(line)
        match = SERVING_RE.match(seen[0])
        assert match, seen
        yield Served(proc, seen, match.group(2), int(match.group(3)))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        for t in threads:
            t.join(timeout=10)
    assert code == expected_exit, (code, "".join(stderr))
    assert "Traceback" not in "".join(stderr), "".join(stderr)


def printed_keys(lines: list[str]) -> list[str]:
    return [m.group(0) for line in lines for m in re.finditer(r"pk_[A-Za-z0-9_]+", line)]


@contextmanager
def small_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "6m") mounted at `mount`, for full-disk tests (needs root, as
    CI has); the test is skipped where mounting is refused."""
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
