"""`pictor import` and `pictor export`: moving many images in and out through the HTTP API.

Both are clients of a running appliance (any node, local or remote): they never open the
data directory, so what they do is exactly what the API allows, with the same checks.

- import walks files and directories, skips what the tenant already has (by SHA-256, with
  `GET /v3/images?sha256=`), uploads the rest N at a time, retries 429 and 503 (honouring
  Retry-After) and connection failures with backoff, and reports every refusal with the
  server's reason. A rerun after an interruption uploads only what is still missing.
- export writes every original as `<id>.<ext>` and an `images.json` of their metadata, which
  `import` reads back as its manifest (filenames, alt text, folders).
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode, urlsplit

from appliance import __version__
from appliance.uploads import MAX_FILE_BYTES

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp"})
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}
MANIFEST_NAME = "images.json"
RETRY_STATUSES = frozenset({429, 502, 503, 504})  # 502/504: a reverse proxy in front
MAX_ATTEMPTS = 8
MAX_BACKOFF = 60.0
PAGE_SIZE = 100
USER_AGENT = f"pictor-transfer/{__version__}"


class TransferError(Exception):
    """The run cannot go on (bad URL, refused key, server gone): exit 2 with this message."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def reason(self) -> str:
        """`413 file_too_large: The file is larger ...`, from the contract's error body."""
        try:
            error = self.json()["error"]
            return f"{self.status} {error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            text = self.body[:200].decode("utf-8", "replace").strip()
            return f"{self.status} {text}" if text else str(self.status)


def _retry_after(answer: Answer, attempt: int) -> float:
    raw = answer.headers.get("retry-after", "")
    if raw.isdigit():
        return min(float(raw), MAX_BACKOFF)
    return _backoff(attempt)


def _backoff(attempt: int) -> float:
    return min(0.5 * 2.0**attempt, MAX_BACKOFF) * (0.75 + secrets.randbelow(500) / 1000)


class Api:
    """The appliance's API over http.client: one keep-alive connection per thread, retries
    of transient failures."""

    def __init__(self, url: str, key: str, *, timeout: float = 120.0) -> None:
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransferError(f"--url must look like http://127.0.0.1:8080, not {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path
        self.key = key
        self.timeout = timeout
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = (
                http.client.HTTPSConnection
                if self.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = cls(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Answer:
        """One request, retried on 429/502/503/504 and on connection failures."""
        hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
        if auth:
            hdrs["Authorization"] = f"Bearer {self.key}"
        for attempt in range(MAX_ATTEMPTS):
            try:
                conn = self._connection()
                conn.request(method, self.prefix + path, body=body, headers=hdrs)
                raw = conn.getresponse()
                answer = Answer(raw.status, {k.lower(): v for k, v in raw.getheaders()}, raw.read())
                if raw.will_close:
                    self._drop_connection()
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                if attempt == MAX_ATTEMPTS - 1:
                    raise TransferError(f"{self.scheme}://{self.host}: {exc}") from exc
                time.sleep(_backoff(attempt))
                continue
            if answer.status in RETRY_STATUSES and attempt < MAX_ATTEMPTS - 1:
                time.sleep(_retry_after(answer, attempt))
                continue
            return answer
        raise AssertionError("unreachable")

    def check_key(self) -> None:
        answer = self.request("GET", "/v3/images?page_size=1")
        if answer.status in (401, 403):
            raise TransferError(f"the server refused the key: {answer.reason()}")
        if answer.status != 200:
            raise TransferError(f"GET /v3/images answered {answer.reason()}")

    def find_sha256(self, sha256: str) -> str | None:
        """The id of one of the tenant's images with these bytes, if any."""
        answer = self.request("GET", "/v3/images?" + urlencode({"sha256": sha256, "page_size": 1}))
        if answer.status != 200:
            raise TransferError(f"GET /v3/images?sha256= answered {answer.reason()}")
        # Checked here too, so that a server without the filter never makes us skip a file.
        for image in answer.json()["images"]:
            if image.get("sha256") == sha256:
                return str(image["id"])
        return None

    def upload(self, data: bytes, filename: str, alt_text: str, folder: str | None) -> Answer:
        fields = [("alt_text", alt_text)] + ([("folder", folder)] if folder else [])
        body, content_type = _multipart(data, filename, fields)
        return self.request("POST", "/v3/images", body=body, headers={"Content-Type": content_type})

    def pages(self) -> Iterator[dict[str, Any]]:
        """Every image of the tenant, newest first; ids seen twice (new uploads shift the
        pages while we read) are given once."""
        seen: set[str] = set()
        page = 1
        while True:
            answer = self.request("GET", f"/v3/images?page={page}&page_size={PAGE_SIZE}")
            if answer.status != 200:
                raise TransferError(f"GET /v3/images answered {answer.reason()}")
            images = answer.json()["images"]
            if not images:
                return
            for image in images:
                if image["id"] not in seen:
                    seen.add(image["id"])
                    yield image
            page += 1

    def original(self, image_id: str) -> Answer:
        return self.request("GET", f"/i/{quote(image_id)}", auth=False)


def _multipart(data: bytes, filename: str, fields: list[tuple[str, str]]) -> tuple[bytes, str]:
    boundary = "pictor-" + secrets.token_hex(16)
    # A quoted-string (RFC 9110 5.6.4): backslash and quote escaped; no line breaks.
    name = filename.replace("\\", "\\\\").replace('"', '\\"')
    name = name.replace("\r", " ").replace("\n", " ")
    out = bytearray()
    for key, value in fields:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    out += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    out += data + f"\r\n--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


# -- the manifest ------------------------------------------------------------------------


@dataclass(frozen=True)
class Labels:
    """What a manifest says about one file."""

    filename: str | None = None
    alt_text: str | None = None
    folder: str | None = None


def load_manifest(path: Path) -> dict[Path, Labels]:
    """A CSV with a header row (`path` or `file`, and any of `alt_text`, `folder`,
    `filename`), or an `images.json` written by export. Paths are relative to the manifest."""
    base = path.parent
    entries: dict[Path, Labels] = {}
    if path.suffix.lower() == ".json":
        payload = json.loads(path.read_text(encoding="utf-8"))
        rows = payload["images"] if isinstance(payload, dict) else payload
        for row in rows:
            entries[(base / row["file"]).resolve()] = Labels(
                row.get("filename"), row.get("alt_text"), row.get("folder")
            )
        return entries
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        key = "path" if "path" in columns else "file" if "file" in columns else None
        if key is None:
            raise TransferError(f"{path}: the CSV needs a 'path' column (and alt_text, folder)")
        for row in reader:
            if not (row.get(key) or "").strip():
                continue
            entries[(base / row[key].strip()).resolve()] = Labels(
                (row.get("filename") or "").strip() or None,
                row.get("alt_text"),
                (row.get("folder") or "").strip() or None,
            )
    return entries


def walk(paths: Sequence[Path]) -> tuple[list[Path], int]:
    """The files to import, in a stable order, and how many were passed over (not named like
    an image, or hidden). A file named on the command line is always taken."""
    files: list[Path] = []
    ignored = 0
    for root in paths:
        if root.is_file():
            files.append(root)
            continue
        if not root.is_dir():
            raise TransferError(f"{root}: no such file or directory")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                    ignored += name != MANIFEST_NAME
                    continue
                files.append(path)
    return files, ignored


# -- import ------------------------------------------------------------------------------


@dataclass
class Outcome:
    path: Path
    size: int
    status: str  # uploaded, skipped, refused
    detail: str


@dataclass
class ImportRun:
    api: Api
    labels: dict[Path, Labels]
    folder: str | None
    _claimed: dict[str, Path] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def one(self, path: Path) -> Outcome:
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                return Outcome(
                    path,
                    size,
                    "refused",
                    f"file_too_large: {size:,} bytes; the limit is {MAX_FILE_BYTES:,} bytes",
                )
            data = path.read_bytes()
        except OSError as exc:
            return Outcome(path, 0, "refused", f"cannot read it: {exc.strerror or exc}")
        sha256 = hashlib.sha256(data).hexdigest()
        with self._lock:
            first = self._claimed.setdefault(sha256, path)
        if first != path:
            return Outcome(path, len(data), "skipped", f"same bytes as {first}")
        existing = self.api.find_sha256(sha256)
        if existing is not None:
            return Outcome(path, len(data), "skipped", f"already in the library as {existing}")
        labels = self.labels.get(path.resolve(), Labels())
        answer = self.api.upload(
            data,
            labels.filename or path.name,
            labels.alt_text or "",
            labels.folder or self.folder,
        )
        if answer.status == 201:
            return Outcome(path, len(data), "uploaded", str(answer.json()["id"]))
        return Outcome(path, len(data), "refused", answer.reason())


def _progress_bar(total_bytes: int, files: int, stream: IO[str]) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total_bytes,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"0/{files} files",
        file=stream,
        dynamic_ncols=True,
        smoothing=0.1,
    )


def run_import(
    paths: Sequence[Path],
    *,
    url: str,
    key: str,
    folder: str | None = None,
    concurrency: int = 4,
    manifest: Path | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """0: everything is in the library; 1: some files were refused (each was reported)."""
    out = out or sys.stdout
    err = err or sys.stderr
    files, ignored = walk(paths)
    if manifest is None:
        found = [p / MANIFEST_NAME for p in paths if (p / MANIFEST_NAME).is_file()]
        if len(found) == 1:
            manifest = found[0]
            print(f"using the manifest {manifest}", file=out, flush=True)
    labels = load_manifest(manifest) if manifest is not None else {}
    api = Api(url, key)
    api.check_key()
    run = ImportRun(api, labels, folder)
    sizes = {p: _size(p) for p in files}
    on_terminal = err.isatty()
    bar = _progress_bar(sum(sizes.values()), len(files), err) if on_terminal else None
    started = time.monotonic()
    counts = {"uploaded": 0, "skipped": 0, "refused": 0}
    refused: list[Outcome] = []
    done_bytes = 0
    futures: list[Future[Outcome]] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = [pool.submit(run.one, p) for p in files]
            for n, future in enumerate(as_completed(futures), 1):
                outcome = future.result()
                counts[outcome.status] += 1
                done_bytes += outcome.size
                line = f"{outcome.status:<8} {outcome.path}: {outcome.detail}"
                if outcome.status == "refused":
                    refused.append(outcome)
                if bar is None:
                    print(line, file=out, flush=True)
                else:
                    if outcome.status == "refused":
                        bar.write(line, file=out)
                    bar.set_description_str(f"{n}/{len(files)} files", refresh=False)
                    bar.update(sizes[outcome.path])
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    finally:
        if bar is not None:
            bar.close()
    seconds = max(time.monotonic() - started, 1e-9)
    print(
        f"import: {counts['uploaded']} uploaded, {counts['skipped']} skipped, "
        f"{counts['refused']} refused of {len(files)} file(s)"
        + (f" ({ignored} other file(s) passed over)" if ignored else "")
        + f"; {done_bytes / 1e6:.1f} MB in {seconds:.1f} s, {len(files) / seconds:.1f} files/s",
        file=out,
        flush=True,
    )
    for outcome in refused:
        print(f"refused: {outcome.path}: {outcome.detail}", file=out)
    return 1 if refused else 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# -- export ------------------------------------------------------------------------------


def run_export(
    dest: Path, *, url: str, key: str, concurrency: int = 4, out: IO[str] | None = None
) -> int:
    """Every original as DEST/<id>.<ext> (files already there with the right bytes are kept)
    and DEST/images.json. 0 when all were written, 1 when some could not be downloaded."""
    out = out or sys.stdout
    api = Api(url, key)
    api.check_key()
    dest.mkdir(parents=True, exist_ok=True)
    images = list(api.pages())
    images.reverse()  # oldest first: an import in manifest order keeps the upload order
    failed: list[str] = []
    written = kept = 0

    def fetch(image: dict[str, Any]) -> str:
        target = dest / f"{image['id']}.{EXTENSIONS.get(image['mime_type'], 'bin')}"
        if target.is_file() and _sha256_file(target) == image["sha256"]:
            return "kept"
        answer = api.original(image["id"])
        if answer.status != 200:
            return f"failed: GET /i/{image['id']} answered {answer.reason()}"
        if hashlib.sha256(answer.body).hexdigest() != image["sha256"]:
            return f"failed: /i/{image['id']} did not give the recorded bytes"
        part = target.with_name(target.name + ".part")
        part.write_bytes(answer.body)
        os.replace(part, target)
        return "written"

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = pool.map(fetch, images)
        for image, result in zip(images, results, strict=True):
            if result == "written":
                written += 1
            elif result == "kept":
                kept += 1
            else:
                failed.append(f"{image['id']}: {result}")
                print(f"{image['id']}: {result}", file=out, flush=True)
    manifest = {
        "exported_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": url,
        "count": len(images),
        "images": [
            {**image, "file": f"{image['id']}.{EXTENSIONS.get(image['mime_type'], 'bin')}"}
            for image in images
        ],
    }
    part = dest / (MANIFEST_NAME + ".part")
    part.write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(part, dest / MANIFEST_NAME)
    print(
        f"export: {len(images)} image(s) to {dest}: {written} written, {kept} already there, "
        f"{len(failed)} failed; metadata in {dest / MANIFEST_NAME}",
        file=out,
        flush=True,
    )
    return 1 if failed else 0


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
