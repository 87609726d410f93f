"""Scale-out: a node on PostgreSQL and S3 (SeaweedFS, both on loopback) against a node on the
embedded SQLite and blob directory, side by side in one run.

- hot 200 KB GET (wrk): the S3-backed node answers from memory, as the directory one does;
- cold 200 KB GET: each image's first request, which reads its bytes from the store, against
  a GET of another fresh object of the same size straight from the store with the node's own
  S3 client, in turns (`tests.bench.s3.cold_gets`);
- 200 KB upload p50, one at a time: PostgreSQL + S3 against SQLite + directory.
"""

from __future__ import annotations

import time
from typing import Any

from tests.bench import load
from tests.bench.common import Client, Context, Row, fmt_ms, fmt_rate, percentile, ratio
from tests.bench.media import Media, unique_jpeg
from tests.bench.s3 import cold_gets
from tests.bench.servers import Appliance
from tests.pg_server import running_postgres
from tests.s3_server import S3Target, SeaweedFS

COLD_IMAGES = 150
UPLOADS = 60


def run(ctx: Context, media: Media) -> tuple[list[Row], dict[str, Any]]:
    photo = media.jpeg_200k.read_bytes()
    with running_postgres() as pg, SeaweedFS(root=ctx.subdir("seaweedfs")) as store:
        target = store.new_target()
        env = {**target.env(), "PICTOR_DATABASE": pg.create_database()}
        embedded = Appliance.start(ctx, ctx.subdir("scaleout-embedded") / "data")
        scaled = Appliance.start(ctx, ctx.subdir("scaleout-s3") / "data", env=env)
        try:
            raw: dict[str, Any] = {}
            rows = [_hot(ctx, embedded, scaled, photo, raw)]
            rows.append(_cold(scaled, target, photo, raw))
            rows.append(_uploads(embedded, scaled, photo, raw))
            return rows, raw
        finally:
            scaled.stop()
            embedded.stop()


def _hot(
    ctx: Context, embedded: Appliance, scaled: Appliance, photo: bytes, raw: dict[str, Any]
) -> Row:
    results = {}
    for name, app in (("file", embedded), ("s3", scaled)):
        image = app.upload(photo, "hot.jpg")
        url = f"http://127.0.0.1:{app.port}/i/{image['id']}"
        load.wrk(ctx, url, duration=1)  # warm: the node holds the representation
        results[name] = load.wrk(ctx, url)
    raw["hot_get"] = {n: r.as_dict() for n, r in results.items()}
    q = ratio(results["s3"].rps, results["file"].rps)
    return Row(
        section="scaleout",
        figure="scale-out: hot GET 200 KB, S3 node / directory node (req/s)",
        appliance=f"{fmt_rate(results['s3'].rps, 'req/s')} p50 {fmt_ms(results['s3'].p50)} ms",
        reference=f"directory {fmt_rate(results['file'].rps, 'req/s')}",
        ratio=q,
        target=">= 0.90",
        passed=None if q is None else q >= 0.90,
        data=raw["hot_get"],
    )


def _cold(scaled: Appliance, target: S3Target, photo: bytes, raw: dict[str, Any]) -> Row:
    # Each image is asked for once, for the first time, so its bytes come from the store
    # (uploads keep no body in memory); the direct side reads other, equally fresh objects,
    # in turns with the node, so neither reads what the other just warmed in the store.
    times = cold_gets(scaled, target, photo, COLD_IMAGES)
    node, direct = times["node"], times["direct"]
    raw["cold_get"] = {"node_s": node, "direct_s": direct}
    p_node, p_direct = percentile(node, 50), percentile(direct, 50)
    q = ratio(p_node, p_direct)
    return Row(
        section="scaleout",
        figure="scale-out: cold GET 200 KB through a node / straight from S3 (p50 ms)",
        appliance=f"{fmt_ms(p_node)} ms (p99 {fmt_ms(percentile(node, 99))})",
        reference=f"S3 client {fmt_ms(p_direct)} ms (p99 {fmt_ms(percentile(direct, 99))})",
        ratio=q,
        target="<= 1.50",
        passed=None if q is None else q <= 1.50,
        data={"n": len(node)},
    )


def _uploads(embedded: Appliance, scaled: Appliance, photo: bytes, raw: dict[str, Any]) -> Row:
    times: dict[str, list[float]] = {}
    for name, app in (("file", embedded), ("s3", scaled)):
        client = Client(app.port)
        times[name] = []
        for n in range(UPLOADS):
            data = unique_jpeg(photo, f"up-{name}-{n}".encode())
            started = time.perf_counter()
            app.upload(data, f"u{n}.jpg", client=client)
            times[name].append(time.perf_counter() - started)
    raw["upload_200k"] = times
    p_s3, p_file = percentile(times["s3"], 50), percentile(times["file"], 50)
    return Row(
        section="scaleout",
        figure="scale-out: upload 200 KB one at a time, PostgreSQL+S3 / SQLite+directory (p50)",
        appliance=f"{fmt_ms(p_s3)} ms",
        reference=f"SQLite+directory {fmt_ms(p_file)} ms",
        ratio=ratio(p_s3, p_file),
        target="",
        passed=None,
        data={"n": UPLOADS},
    )
