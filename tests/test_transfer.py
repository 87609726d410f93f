"""`pictor import` and `pictor export` as a user runs them: subprocesses talking HTTP to a
real server (and, for the retries, to a scripted one that answers 503 and 429 first)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.api_helpers import ROOT, clean_env, list_images, pictor, uploaded
from tests.conftest import Server

ID = r"img_[A-Za-z0-9]{22}"


def run_import(
    server: Server, *args: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    return pictor("import", *args, "--url", server.base_url, "--key", key or server.api_key)


def library(server: Server, key: str | None = None) -> set[tuple[Any, ...]]:
    listed = list_images(server, "page_size=100", key=key)
    assert listed["total"] == len(listed["images"])
    fields = (
        "filename",
        "alt_text",
        "folder",
        "mime_type",
        "size_bytes",
        "width",
        "height",
        "sha256",
    )
    return {tuple(image[f] for f in fields) for image in listed["images"]}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_import_uploads_skips_and_refuses_then_a_rerun_skips_everything(
    server: Server, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / ".hidden").mkdir()
    files = {
        "a.png": images.png(40, 30),
        "sub/b.jpg": images.jpeg(50, 30),
        "sub/c.gif": images.gif(20, 20),
        "sub/a-copy.png": images.png(40, 30),  # the same bytes as a.png
        "known.webp": images.webp(30, 30),  # already in the library
        "bad.png": b"this is not an image",
        "big.png": images.padded_png(10 * 1024 * 1024 + 1),  # one byte over the limit
        "notes.txt": b"not named like an image",
        ".hidden/x.png": images.png(10, 10),
    }
    for name, data in files.items():
        (tree / name).write_bytes(data)
    manifest = tmp_path / "labels.csv"
    manifest.write_text(
        "path,alt_text,folder\ntree/sub/b.jpg,Spring sale banner,newsletters\n", encoding="utf-8"
    )
    known = uploaded(server, files["known.webp"], "known.webp")

    done = run_import(server, str(tree), "--manifest", str(manifest), "--folder", "imported")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    per_file = sorted(lines[:7])
    dup_first = next(
        n for n in ("a.png", "sub/a-copy.png") if f"uploaded {tree / n}:" in done.stdout
    )
    dup_second = "sub/a-copy.png" if dup_first == "a.png" else "a.png"
    expected = sorted(
        [
            f"uploaded {tree / dup_first}: {ID}",
            f"uploaded {tree / 'sub/b.jpg'}: {ID}",
            f"uploaded {tree / 'sub/c.gif'}: {ID}",
            f"skipped  {tree / dup_second}: same bytes as {tree / dup_first}",
            f"skipped  {tree / 'known.webp'}: already in the library as {known['id']}",
            f"refused  {tree / 'bad.png'}: 400 unsupported_media_type: The file is not a JPEG, "
            "PNG, GIF or WebP image. Upload one of those.",
            f"refused  {tree / 'big.png'}: file_too_large: 10,485,761 bytes; the limit is "
            "10,485,760 bytes",
        ]
    )
    assert len(per_file) == len(expected)
    for line, pattern in zip(per_file, expected, strict=True):
        assert re.fullmatch(re.escape(pattern).replace(re.escape(ID), ID), line), (line, pattern)
    assert re.fullmatch(
        r"import: 3 uploaded, 2 skipped, 2 refused of 7 file\(s\) \(1 other file\(s\) passed "
        r"over\); [\d.]+ MB in [\d.]+ s, [\d.]+ files/s",
        lines[7],
    ), lines[7]
    assert sorted(lines[8:]) == [
        f"refused: {tree / 'bad.png'}: 400 unsupported_media_type: The file is not a JPEG, PNG, "
        "GIF or WebP image. Upload one of those.",
        f"refused: {tree / 'big.png'}: file_too_large: 10,485,761 bytes; the limit is "
        "10,485,760 bytes",
    ]
    assert library(server) == {
        (
            dup_first.rsplit("/", 1)[-1],
            "",
            "imported",
            "image/png",
            len(files["a.png"]),
            40,
            30,
            sha(files["a.png"]),
        ),
        (
            "b.jpg",
            "Spring sale banner",
            "newsletters",
            "image/jpeg",
            len(files["sub/b.jpg"]),
            50,
            30,
            sha(files["sub/b.jpg"]),
        ),
        (
            "c.gif",
            "",
            "imported",
            "image/gif",
            len(files["sub/c.gif"]),
            20,
            20,
            sha(files["sub/c.gif"]),
        ),
        (
            "known.webp",
            "",
            None,
            "image/webp",
            len(files["known.webp"]),
            30,
            30,
            sha(files["known.webp"]),
        ),
    }

    again = run_import(server, str(tree), "--manifest", str(manifest))
    assert again.returncode == 1  # the two bad files are still refused, and said so
    assert not [line for line in again.stdout.splitlines() if line.startswith("uploaded")]
    assert "import: 0 uploaded, 5 skipped, 2 refused of 7 file(s)" in again.stdout
    assert list_images(server)["total"] == 4


def test_export_then_import_into_a_new_tenant_gives_the_same_library(
    server: Server, tmp_path: Path
) -> None:
    originals = [
        (images.png(64, 48), 'Frühling ☀ "quoted".png', "Spring, in Berlin", "newsletters"),
        (images.jpeg(80, 60), "banner.jpg", "", None),
        (images.animated_webp(32, 32), "spinner.webp", "Loading", "ui"),
    ]
    for data, name, alt, folder in originals:
        uploaded(server, data, name, alt_text=alt, folder=folder)
    dest = tmp_path / "export"
    done = pictor("export", str(dest), "--url", server.base_url, "--key", server.api_key)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"export: 3 image(s) to {dest}: 3 written, 0 already there, 0 failed; "
        f"metadata in {dest / 'images.json'}\n"
    )
    manifest = json.loads((dest / "images.json").read_text(encoding="utf-8"))
    assert manifest["count"] == 3
    assert [i["filename"] for i in manifest["images"]] == [o[1] for o in originals]  # oldest first
    for entry, (data, *_rest) in zip(manifest["images"], originals, strict=True):
        assert (
            entry["file"]
            == f"{entry['id']}.{entry['mime_type'].split('/')[1].replace('jpeg', 'jpg')}"
        )
        assert (dest / entry["file"]).read_bytes() == data
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["images.json", *(e["file"] for e in manifest["images"])]
    )

    other = server.new_key("elsewhere")
    back = run_import(server, str(dest), key=other)
    assert back.returncode == 0, back.stdout + back.stderr
    assert back.stdout.splitlines()[0] == f"using the manifest {dest / 'images.json'}"
    assert "import: 3 uploaded, 0 skipped, 0 refused of 3 file(s);" in back.stdout
    assert library(server, key=other) == library(server)
    for image in list_images(server, key=other)["images"]:
        got = server.request("GET", f"/i/{image['id']}")
        assert sha(got.body) == image["sha256"]

    twice = pictor("export", str(dest), "--url", server.base_url, "--key", server.api_key)
    assert "3 image(s)" in twice.stdout and "0 written, 3 already there" in twice.stdout


class _Scripted(BaseHTTPRequestHandler):
    """Answers like an overloaded appliance: the duplicate check first gets 503, the upload
    first gets 429, both with Retry-After; then they succeed."""

    calls: list[tuple[str, str]]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self, status: int, payload: dict[str, Any], retry: bool = False) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if retry:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path))
        empty = {"images": [], "page": 1, "page_size": 1, "total": 0}
        if "sha256=" in self.path and sum("sha256=" in p for _, p in self.calls) == 1:
            error = {"status": 503, "code": "storage_unavailable", "message": "Try again shortly."}
            self._answer(503, {"error": error}, retry=True)
        else:
            self._answer(200, empty)

    def do_POST(self) -> None:
        self.calls.append(("POST", self.path))
        self.rfile.read(int(self.headers["Content-Length"]))
        if sum(m == "POST" for m, _ in self.calls) == 1:
            error = {"status": 429, "code": "too_many_requests", "message": "Slow down a bit."}
            self._answer(429, {"error": error}, retry=True)
        else:
            self._answer(201, {"id": "img_" + "x" * 22})


@pytest.fixture
def scripted() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    calls: list[tuple[str, str]] = []
    handler = type("Handler", (_Scripted,), {"calls": calls})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", calls
    httpd.shutdown()
    httpd.server_close()


def test_import_retries_503_and_429(
    scripted: tuple[str, list[tuple[str, str]]], tmp_path: Path
) -> None:
    url, calls = scripted
    path = tmp_path / "one.png"
    path.write_bytes(images.png(10, 10))
    done = pictor("import", str(path), "--url", url, "--key", "pk_whatever")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == f"uploaded {path}: img_{'x' * 22}"
    digest = sha(path.read_bytes())
    assert calls == [
        ("GET", "/v3/images?page_size=1"),
        ("GET", f"/v3/images?sha256={digest}&page_size=1"),
        ("GET", f"/v3/images?sha256={digest}&page_size=1"),
        ("POST", "/v3/images"),
        ("POST", "/v3/images"),
    ]


def test_import_refuses_to_start_with_a_bad_key(server: Server, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(images.png(10, 10))
    done = run_import(server, str(tmp_path), key="pk_wrong")
    assert done.returncode == 2
    assert done.stderr == (
        "pictor import: the server refused the key: 401 invalid_api_key: "
        "This API key is not valid or has been revoked.\n"
    )
    assert list_images(server)["total"] == 0


def test_import_shows_a_progress_bar_on_a_terminal(server: Server, tmp_path: Path) -> None:
    for n in range(3):
        (tmp_path / f"{n}.png").write_bytes(images.png(20 + n, 20))
    primary, replica = pty.openpty()
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "main.py", "import", str(tmp_path), "--url", server.base_url],
        cwd=ROOT,
        env=clean_env(PICTOR_API_KEY=server.api_key),
        stdout=subprocess.PIPE,
        stderr=replica,
        text=True,
    )
    os.close(replica)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    out, _ = proc.communicate(timeout=60)
    os.close(primary)
    assert proc.returncode == 0
    terminal = b"".join(chunks).decode()
    assert "3/3 files" in terminal and "B/s" in terminal, terminal  # files, bytes, rate
    assert out.splitlines()[0].startswith("import: 3 uploaded, 0 skipped, 0 refused of 3")
