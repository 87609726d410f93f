"""Proxy: the appliance's /i/{id} against nginx serving the very same files.

Both servers are pinned to the server core, wrk (ab for HEAD) to the client core, with the
same duration and connections; the two are measured back to back for every case, so a noisy
neighbour hits both.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from tests.bench import load
from tests.bench.common import Client, Context, Row, fmt_ms, fmt_rate, ratio
from tests.bench.media import Media
from tests.bench.servers import Appliance, Nginx

RANGE = "bytes=65536-131071"  # 64 KiB from the middle of the 200 KB JPEG


@dataclass(frozen=True)
class Case:
    key: str
    figure: str
    method: str
    target: str  # which file: small, big, thumb
    headers: dict[str, str]
    status: int
    unit: str = "req/s"  # or MB/s
    minimum: float | None = None  # target on appliance/nginx


def run(ctx: Context, media: Media) -> tuple[list[Row], dict[str, Any]]:
    app = Appliance.start(ctx, ctx.subdir("proxy") / "data")
    try:
        small = app.upload(media.jpeg_200k.read_bytes(), "spring-sale.jpg")
        big = app.upload(media.jpeg_10m.read_bytes(), "poster.jpg")
        client = Client(app.port)
        warm = client.request("GET", f"/i/{small['id']}?variant=thumbnail")
        assert warm.status == 200, warm.status
        files = {
            "small": (app.blob_path(small["sha256"]), "image/jpeg"),
            "big": (app.blob_path(big["sha256"]), "image/jpeg"),
            "thumb": (app.thumbnail_path(small["sha256"]), "image/jpeg"),
        }
        nginx = Nginx.start(ctx, files)
        try:
            return _measure(ctx, app, nginx, small["id"], big["id"])
        finally:
            nginx.stop()
    finally:
        app.stop()


def _measure(
    ctx: Context, app: Appliance, nginx: Nginx, small_id: str, big_id: str
) -> tuple[list[Row], dict[str, Any]]:
    app_paths = {
        "small": f"/i/{small_id}",
        "big": f"/i/{big_id}",
        "thumb": f"/i/{small_id}?variant=thumbnail",
    }
    nginx_paths = {"small": "/i/small", "big": "/i/big", "thumb": "/i/thumb"}
    servers = {
        "appliance": (app.port, app_paths),
        "nginx": (nginx.port, nginx_paths),
    }
    # Each server's own ETag for the 304 case, fetched with a HEAD.
    etags = {
        name: Client(port).request("HEAD", paths["small"]).headers["etag"]
        for name, (port, paths) in servers.items()
    }
    cases = [
        Case("get_200k", "GET 200 KB JPEG", "GET", "small", {}, 200, minimum=0.30),
        Case("head_200k", "HEAD 200 KB JPEG (ab)", "HEAD", "small", {}, 200),
        Case(
            "inm_304",
            "If-None-Match -> 304",
            "GET",
            "small",
            {"If-None-Match": "*"},
            304,
            minimum=0.10,
        ),
        Case("get_10m", "GET 10 MB JPEG", "GET", "big", {}, 200, unit="MB/s", minimum=0.50),
        Case("get_thumb", "GET thumbnail (warm)", "GET", "thumb", {}, 200),
        Case("range_64k", "Range 64 KiB of 200 KB", "GET", "small", {"Range": RANGE}, 206),
    ]
    _check_same_answers(servers, cases, etags)
    for port, paths in servers.values():  # warm both up: connections, caches, page cache
        load.wrk(ctx, f"http://127.0.0.1:{port}{paths['small']}", duration=1)

    rows: list[Row] = []
    raw: dict[str, Any] = {"etags": etags, "cases": {}}
    for case in cases:
        results: dict[str, load.LoadResult] = {}
        for name, (port, paths) in servers.items():
            headers = dict(case.headers)
            if case.key == "inm_304":
                headers["If-None-Match"] = etags[name]
            url = f"http://127.0.0.1:{port}{paths[case.target]}"
            if case.method == "HEAD":
                result = load.ab_head(ctx, url)
            else:
                result = load.wrk(ctx, url, headers=headers)
            if result.errors or result.bad_status:
                ctx.note(
                    f"{case.figure} on {name}: {result.errors} errors, "
                    f"{result.bad_status} bad statuses"
                )
            results[name] = result
        raw["cases"][case.key] = {n: r.as_dict() for n, r in results.items()}
        rows.append(_row(case, results["appliance"], results["nginx"]))
        ctx.note(f"{rows[-1].figure}: {rows[-1].appliance} vs {rows[-1].reference}")
    return rows, raw


def _figure(case: Case, r: load.LoadResult) -> float:
    return r.bytes_per_s / 1e6 if case.unit == "MB/s" else r.rps


def _row(case: Case, app: load.LoadResult, ref: load.LoadResult) -> Row:
    def cell(r: load.LoadResult) -> str:
        return (
            f"{fmt_rate(_figure(case, r), case.unit)}  p50 {fmt_ms(r.p50)} p99 {fmt_ms(r.p99)} ms"
        )

    q = ratio(_figure(case, app), _figure(case, ref))
    passed = None if case.minimum is None or q is None else q >= case.minimum
    return Row(
        section="proxy",
        figure=f"proxy: {case.figure} ({case.unit})",
        appliance=cell(app),
        reference="nginx " + cell(ref),
        ratio=q,
        target="" if case.minimum is None else f">= {case.minimum:.2f}",
        passed=passed,
        data={"appliance": app.as_dict(), "nginx": ref.as_dict()},
    )


def _check_same_answers(
    servers: dict[str, tuple[int, dict[str, str]]], cases: list[Case], etags: dict[str, str]
) -> None:
    """Before timing anything: both servers give each case the same status, type and bytes."""
    for case in cases:
        seen: dict[str, tuple[int, str, str]] = {}
        for name, (port, paths) in servers.items():
            headers = dict(case.headers)
            if case.key == "inm_304":
                headers["If-None-Match"] = etags[name]
            answer = Client(port).request(case.method, paths[case.target], headers=headers)
            if answer.status != case.status:
                raise RuntimeError(f"{case.figure}: {name} answered {answer.status}")
            digest = hashlib.sha256(answer.body).hexdigest()
            # A 304 has no body, and RFC 9110 lets it omit Content-Type (nginx does).
            ctype = "" if answer.status == 304 else answer.headers.get("content-type", "")
            seen[name] = (answer.status, ctype, digest)
        if len(set(seen.values())) != 1:
            raise RuntimeError(f"{case.figure}: the servers differ: {seen}")
