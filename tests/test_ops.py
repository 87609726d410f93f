"""Operations: /healthz and /readyz, Prometheus metrics, and what an unexpected error logs.

Real faults, no mocks: the database file is replaced by a directory (which no connection can
open, root or not), the data directory sits on a small tmpfs that a filler file fills, and
an internal error is forced by renaming the `images` table under the running server, as a
broken migration or an old SQLite build would leave it.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tests import images
from tests.api_helpers import (
    ROOT,
    assert_error,
    clean_env,
    db_query,
    small_tmpfs,
    uploaded,
    wait_until,
)
from tests.conftest import Response, Server

PLAIN_HEADERS = {
    "content-type": "text/plain; charset=UTF-8",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
JSON_LOGS = ("--log-format", "json")
FREE_LINE = re.compile(r"^free space: ok \(([\d,]+) bytes free, minimum 104,857,600\)$")


def probe(server: Server, method: str, path: str) -> Response:
    return server.request(method, path, key=None)


def test_healthz_is_plain_ok_without_a_key_and_head_matches(server: Server) -> None:
    got = probe(server, "GET", "/healthz")
    assert (got.status, got.body) == (200, b"ok")
    assert got.header_dict() == {**PLAIN_HEADERS, "content-length": "2"}
    head = probe(server, "HEAD", "/healthz")
    assert (head.status, head.body, head.header_dict()) == (200, b"", got.header_dict())


def test_readyz_reports_each_check_and_head_matches(server: Server) -> None:
    got = probe(server, "GET", "/readyz")
    assert got.status == 200, got.body
    lines = got.body.decode().splitlines()
    assert lines[:3] == ["ready", "database: ok (answers)", "blob store: ok (answers)"]
    assert len(lines) == 4 and FREE_LINE.match(lines[3]), lines
    assert got.header_dict() == {**PLAIN_HEADERS, "content-length": str(len(got.body))}
    head = probe(server, "HEAD", "/readyz")
    assert (head.status, head.body) == (200, b"")
    assert head.header_dict() == got.header_dict()


def test_probes_are_not_access_logged_when_ok_but_errors_are(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tornado.access"):
        for path in ("/healthz", "/readyz", "/healthz"):
            assert probe(server, "GET", path).status == 200
        assert probe(server, "GET", "/nothing-here").status == 404
        wait_until(lambda: any("/nothing-here" in r.getMessage() for r in caplog.records))
    logged = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert len(logged) == 1 and logged[0].startswith("404 GET /nothing-here (127.0.0.1) "), logged


def test_readyz_fails_while_the_database_file_cannot_be_opened(server: Server) -> None:
    db = server.data_dir / "pictor.db"
    aside = server.data_dir / "pictor.db.aside"
    db.rename(aside)
    db.mkdir()  # what is there now is no database, for root too
    try:
        got = probe(server, "GET", "/readyz")
        assert got.status == 503, got.body
        assert got.header_dict() == {
            **PLAIN_HEADERS,
            "content-length": str(len(got.body)),
            "retry-after": "5",
        }
        lines = got.body.decode().splitlines()
        assert lines[:3] == [
            "not ready",
            "database: FAILED (The database pictor.db does not answer: "
            "unable to open database file.)",
            "blob store: ok (answers)",
        ]
        assert FREE_LINE.match(lines[3]), lines
        assert probe(server, "GET", "/healthz").status == 200  # alive, just not ready
    finally:
        db.rmdir()
        aside.rename(db)
    assert probe(server, "GET", "/readyz").status == 200


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "16m") as mount:
        yield mount


def test_readyz_fails_below_the_free_space_threshold(small_disk: Path, server_factory: Any) -> None:
    minimum = 8 * 1024 * 1024
    server = server_factory(data_dir=small_disk / "data", min_free_space=minimum)
    assert probe(server, "GET", "/readyz").status == 200
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # beside the data directory, on the same file system
        f.write(b"\0" * (10 * 1024 * 1024))
    try:
        got = probe(server, "GET", "/readyz")
        assert got.status == 503, got.body
        lines = got.body.decode().splitlines()
        assert lines[:3] == ["not ready", "database: ok (answers)", "blob store: ok (answers)"]
        match = re.fullmatch(
            r"free space: FAILED \(([\d,]+) bytes free, minimum 8,388,608\)", lines[3]
        )
        assert match and int(match.group(1).replace(",", "")) < minimum, lines
    finally:
        filler.unlink()
    assert probe(server, "GET", "/readyz").status == 200


# -- metrics -----------------------------------------------------------------------------


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus_client's own parser."""
    conn = http.client.HTTPConnection("127.0.0.1", server.app.metrics_port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200, body
        assert resp.getheader("Content-Type") == CONTENT_TYPE_LATEST
        assert resp.getheader("Cache-Control") == "no-store"
    finally:
        conn.close()
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_exactly_the_requests_made(server_factory: Any) -> None:
    server = server_factory(metrics_port=0)
    a = uploaded(server, images.png(40, 30), "a.png")
    b_data = images.jpeg(50, 40)
    uploaded(server, b_data, "b.jpg")
    before = scrape(server)
    assert sample(before, "pictor_stored_images") == 2
    assert sample(before, "pictor_stored_bytes") == a["size_bytes"] + len(b_data)

    for _ in range(7):  # the first loads (a miss), the six others come from memory
        assert server.request("GET", f"/i/{a['id']}").status == 200
    for _ in range(2):
        assert server.request("HEAD", f"/i/{a['id']}").status == 200
    assert server.request("GET", "/i/img_unknown").status == 404
    assert server.upload(images.png(10, 10), "c.png").status == 201
    assert_error(server.upload(b"not an image", "d.png"), 400, "unsupported_media_type")
    assert server.request("GET", "/v3/images").status == 200
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    image = {"route": "/i/{id}"}
    assert delta("pictor_http_requests_total", **image, method="GET", status="200") == 7
    assert delta("pictor_http_requests_total", **image, method="HEAD", status="200") == 2
    assert delta("pictor_http_requests_total", **image, method="GET", status="404") == 1
    api = {"route": "/v3/images"}
    assert delta("pictor_http_requests_total", **api, method="POST", status="201") == 1
    assert delta("pictor_http_requests_total", **api, method="POST", status="400") == 1
    assert delta("pictor_http_requests_total", **api, method="GET", status="200") == 1
    assert delta("pictor_http_request_duration_seconds_count", **image) == 10
    assert delta("pictor_http_request_duration_seconds_bucket", **image, le="+Inf") == 10
    assert delta("pictor_http_request_duration_seconds_count", **api) == 3
    assert delta("pictor_uploads_accepted_total") == 1
    assert delta("pictor_uploads_refused_total", reason="unsupported_media_type") == 1
    assert delta("pictor_proxy_cache_misses_total") == 1
    assert delta("pictor_proxy_cache_hits_total") == 8
    # Buckets are cumulative and end with the count.
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in after.items()
        if name == "pictor_http_request_duration_seconds_bucket"
        and dict(labels)["route"] == "/i/{id}"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1] == (
        float("inf"),
        sample(after, "pictor_http_request_duration_seconds_count", **image),
    )
    assert sample(after, "pictor_data_dir_free_bytes") > 0
    assert sample(after, "pictor_data_dir_size_bytes") >= sample(
        after, "pictor_data_dir_free_bytes"
    )
    assert sample(after, "process_resident_memory_bytes") > 0
    assert sample(after, "pictor_render_queue_jobs") == 0
    # No label value is ever an id, a path with an id, a key or a tenant.
    values = {v for (_, labels) in after for _, v in labels}
    assert not [v for v in values if "img_" in v or "pk_" in v or v == "default"], values


def test_metrics_port_serves_only_metrics_and_is_off_by_default(
    server: Server, server_factory: Any
) -> None:
    assert server.app.metrics_port is None and server.app.metrics is None
    other = server_factory(metrics_port=0)
    conn = http.client.HTTPConnection("127.0.0.1", other.app.metrics_port, timeout=30)
    try:
        conn.request("GET", "/v3/images")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (404, b"Only /metrics is served on this port.\n")
        conn.request("HEAD", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b""
        assert int(resp.getheader("Content-Length") or 0) > 1000
    finally:
        conn.close()


def test_render_and_flush_counters_move(server_factory: Any) -> None:
    server = server_factory(metrics_port=0, flush_interval=3600)
    a = uploaded(server, images.png(400, 300), "a.png")
    before = scrape(server)
    thumb = server.data_dir / "derived" / a["sha256"][:2] / f"{a['sha256']}.thumbnail"
    thumb.unlink()  # made at upload; gone, the first request renders it again
    assert server.request("GET", f"/i/{a['id']}?variant=thumbnail").status == 200
    assert sample(scrape(server), "pictor_fetch_stats_pending") == 1
    assert server.call(server.app.fetch_stats.flush()) == 1
    after = scrape(server)
    assert (
        sample(after, "pictor_representations_rendered_total")
        - sample(before, "pictor_representations_rendered_total")
        == 1
    )
    assert sample(after, "pictor_fetch_stats_flushes_total") == 1
    assert sample(after, "pictor_fetch_stats_pending") == 0


# -- logging -----------------------------------------------------------------------------


def test_an_internal_error_is_logged_once_with_its_traceback_and_never_the_key(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    db_query(server.data_dir, "ALTER TABLE images RENAME TO images_elsewhere")
    try:
        with caplog.at_level(logging.INFO):
            got = server.upload(images.png(20, 20), "x.png")
            wait_until(lambda: any(r.name == "tornado.access" for r in caplog.records))
    finally:
        db_query(server.data_dir, "ALTER TABLE images_elsewhere RENAME TO images")
    error = assert_error(got, 500, "internal_error")
    assert error["message"] == "The upload could not be stored; the error was logged."
    failures = [r for r in caplog.records if r.exc_info]
    assert len(failures) == 1, [r.getMessage() for r in caplog.records]
    record = failures[0]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("POST /v3/images (127.0.0.1) failed: 500 internal_error")
    text = logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
    assert "Traceback (most recent call last)" in text
    assert "sqlite3.OperationalError: no such table: images" in text
    everything = "\n".join(
        r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
        for r in caplog.records
    )
    assert server.api_key not in everything and "Bearer" not in everything
    assert server.upload(images.png(20, 20), "y.png").status == 201  # and it recovers


def test_json_log_lines_carry_the_access_fields_and_the_traceback(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "main.py", "serve", "--port", "0", "--data-dir", str(data), *JSON_LOGS],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr: list[str] = []
    pump = threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True)
    pump.start()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        port = int(re.search(r":(\d+)/$", first.strip()).group(1))  # type: ignore[union-attr]
        key = next(
            line.split("API key: ")[1].strip()
            for line in iter(proc.stdout.readline, "")
            if "API key: " in line
        )
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/nothing?x=1", headers={"Authorization": f"Bearer {key}"})
        conn.getresponse().read()
        db_query(data, "ALTER TABLE images RENAME TO images_elsewhere")
        conn.request("GET", "/v3/images", headers={"Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        db_query(data, "ALTER TABLE images_elsewhere RENAME TO images")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        pump.join(timeout=10)
    lines = [json.loads(line) for line in stderr]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(e) for e in lines), lines
    access = [e for e in lines if e["logger"] == "tornado.access"]
    assert access[0] == {
        **{k: access[0][k] for k in ("time", "message", "duration_ms")},
        "level": "WARNING",
        "logger": "tornado.access",
        "status": 404,
        "method": "GET",
        "path": "/nothing?x=1",
        "remote_ip": "127.0.0.1",
    }
    assert access[0]["message"].startswith("404 GET /nothing?x=1 (127.0.0.1) ")
    assert resp.status == 500
    failed = [e for e in lines if "exception" in e]
    assert len(failed) == 1 and failed[0]["level"] == "ERROR", failed
    assert failed[0]["request"] == "GET /v3/images (127.0.0.1)"
    assert failed[0]["status"] == 500
    assert "Traceback (most recent call last)" in failed[0]["exception"]
    assert "no such table: images" in failed[0]["exception"]
    assert key not in "".join(stderr)


def test_the_gallery_page_names_the_command_this_user_has(server: Server) -> None:
    page = server.request("GET", "/")
    assert page.status == 200
    assert b'<html data-command="python main.py" lang="en">' in page.body
    head = server.request("HEAD", "/")
    assert (head.status, head.body, head.header_dict()) == (200, b"", page.header_dict())
