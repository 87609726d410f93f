"""S3: a node whose blobs live in an object store (SeaweedFS on loopback), against the store
itself and against a directory-backed node.

- Cold 200 KB GET: `/i/{id}` of an image the node has never served (so its bytes are not
  in the node's memory), against a GET of the same size of object straight
  from the store with the node's own client (`appliance.blobs.s3client.S3Client`, one
  streamed GET read to its end, as the node does). Two disjoint sets of freshly uploaded
  images, taken in turns, so neither side reads what the other just warmed in the store.
  Goal: node <= 1.5x direct.
- 200 KB upload p50: the S3-backed node against a directory-backed one, one at a time.
- The store's start time (until a signed PUT works).

Metadata stays on SQLite here unless BENCH_DATABASE names a postgresql:// URL for the
S3-backed node (the PostgreSQL + S3 pair of the issue).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from appliance.blobs.s3client import S3Client
from tests.bench.common import Client, Context, Row, fmt_ms, percentile, ratio
from tests.bench.media import Media, unique_jpeg
from tests.bench.servers import Appliance
from tests.bench.uploads import Uploader
from tests.s3_server import S3Target, SeaweedFS

COLD_GETS = 60  # per side
UPLOADS = 40
GOAL_COLD = 1.5
WEED_CORE = int(os.environ["BENCH_WEED_CORE"]) if os.environ.get("BENCH_WEED_CORE") else None


def run(ctx: Context, media: Media) -> tuple[list[Row], dict[str, Any]]:
    data = media.jpeg_200k.read_bytes()
    with SeaweedFS(ctx.subdir("s3") / "weed", core=WEED_CORE) as store:
        target = store.new_target()
        env = target.env()
        if os.environ.get("BENCH_DATABASE"):
            env["PICTOR_DATABASE"] = os.environ["BENCH_DATABASE"]
        ctx.note(f"s3: SeaweedFS ready in {store.start_seconds[0]:.2f} s")
        s3_node = Appliance.start(ctx, ctx.subdir("s3") / "node", env=env)
        dir_node = Appliance.start(ctx, ctx.subdir("s3") / "dir-node")
        try:
            cold = cold_gets(s3_node, target, data, COLD_GETS)
            uploads = {
                name: Uploader(node.port, node.auth(), data).run(UPLOADS, 1)
                for name, node in (("s3", s3_node), ("directory", dir_node))
            }
        finally:
            s3_node.stop()
            dir_node.stop()
        start_seconds = list(store.start_seconds)

    node_p50 = percentile(cold["node"], 50)
    direct_p50 = percentile(cold["direct"], 50)
    cold_ratio = ratio(node_p50, direct_p50)
    up = {name: percentile(run.latencies, 50) for name, run in uploads.items()}
    rows = [
        Row(
            "s3",
            "cold 200 KB GET p50 (ms): S3 node vs direct from store",
            fmt_ms(node_p50),
            fmt_ms(direct_p50),
            cold_ratio,
            target=f"<= {GOAL_COLD}x",
            passed=None if cold_ratio is None else cold_ratio <= GOAL_COLD,
        ),
        Row(
            "s3",
            "200 KB upload p50 (ms): S3 node vs directory node",
            fmt_ms(up["s3"]),
            fmt_ms(up["directory"]),
            ratio(up["s3"], up["directory"]),
        ),
        Row("s3", "SeaweedFS start, until a PUT works (s)", f"{start_seconds[0]:.2f}", "", None),
    ]
    raw = {
        "cold_get": {
            side: {
                "p50": percentile(values, 50),
                "p90": percentile(values, 90),
                "p99": percentile(values, 99),
                "latencies": values,
            }
            for side, values in cold.items()
        },
        "uploads": {name: run.as_dict() for name, run in uploads.items()},
        "seaweedfs_start_s": start_seconds,
        "database": "postgresql" if os.environ.get("BENCH_DATABASE") else "sqlite",
    }
    return rows, raw


def cold_gets(node: Appliance, target: S3Target, data: bytes, count: int) -> dict[str, list[float]]:
    """Upload 2 x count distinct images through the node; then, in turns, GET one of the
    first set through the node and one of the second set straight from the store."""
    images = [node.upload(_distinct(data, n), f"cold-{n}.jpg") for n in range(2 * count)]
    through, direct = images[:count], images[count:]
    client = Client(node.port)
    client.request("GET", "/healthz")  # the connection is open before the clock runs
    prefix = f"{target.prefix}/" if target.prefix else ""

    async def measure() -> dict[str, list[float]]:
        s3 = S3Client(target.config())
        try:
            await s3.check_bucket()  # its connection is open before the clock runs
            times: dict[str, list[float]] = {"node": [], "direct": []}
            for mine, theirs in zip(through, direct, strict=True):
                began = time.perf_counter()
                answer = client.request("GET", f"/i/{mine['id']}")
                times["node"].append(time.perf_counter() - began)
                assert answer.status == 200 and len(answer.body) == mine["size_bytes"]
                sha = theirs["sha256"]
                began = time.perf_counter()
                stream = await s3.open_stream(f"{prefix}blobs/{sha[:2]}/{sha}")
                parts = []
                while chunk := await stream.read(1 << 20):
                    parts.append(chunk)
                await stream.close()
                times["direct"].append(time.perf_counter() - began)
                assert len(b"".join(parts)) == stream.size == theirs["size_bytes"]
            return times
        finally:
            await s3.close()

    try:
        return asyncio.run(measure())
    finally:
        client.close()


def _distinct(data: bytes, n: int) -> bytes:
    return unique_jpeg(data, f"pictor-bench-s3 {n} {time.time_ns()}".encode())
