"""Uploads: the appliance receiving, checking and storing real images, against the cost of
just receiving the same bytes (`sink_server.py`), with the same client; and the appliance's
peak memory while 16 ten-megabyte uploads arrive at once.

Every upload is distinct bytes (a JPEG comment carries a counter), so each one is hashed,
made durable and published as a blob of its own, as real uploads are.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tests.bench.common import (
    Client,
    Context,
    Row,
    fmt_ms,
    multipart,
    percentile,
    reset_peak_rss,
    rss_kib,
)
from tests.bench.media import Media, unique_jpeg
from tests.bench.servers import Appliance, Sink

RSS_TARGET_MB = 64.0


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    size: str  # "200k" or "10m"
    concurrency: int
    count: int


SCENARIOS = (
    Scenario("200k_alone", "200 KB, one at a time", "200k", 1, 40),
    Scenario("200k_x16", "200 KB, 16 at a time", "200k", 16, 192),
    Scenario("10m_alone", "10 MB, one at a time", "10m", 1, 6),
    Scenario("10m_x16", "10 MB, 16 at a time", "10m", 16, 32),
)


@dataclass
class Run:
    latencies: list[float]
    seconds: float

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": len(self.latencies),
            "seconds": self.seconds,
            "uploads_per_s": self.per_second,
            "p50": percentile(self.latencies, 50),
            "p99": percentile(self.latencies, 99),
            "latencies": self.latencies,
        }


class Uploader:
    """`count` POSTs of distinct copies of one JPEG, `concurrency` at a time, each on a
    keep-alive connection of its own."""

    def __init__(self, port: int, auth: dict[str, str], data: bytes) -> None:
        self.port = port
        self.auth = auth
        self.data = data
        self._serial = itertools.count()
        self._local = threading.local()

    def _one(self, _: int) -> float:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = Client(self.port)
        tag = f"pictor-bench {next(self._serial)} {time.time_ns()}".encode()
        body, ctype = multipart(unique_jpeg(self.data, tag), "photo.jpg", {"alt_text": "bench"})
        started = time.perf_counter()
        answer = client.request(
            "POST", "/v3/images", headers={**self.auth, "Content-Type": ctype}, body=body
        )
        elapsed = time.perf_counter() - started
        if answer.status != 201:
            raise RuntimeError(f"upload answered {answer.status}: {answer.body[:300]!r}")
        reply = json.loads(answer.body)
        # Both servers must have taken every byte: the appliance stores the file, the
        # baseline counts the body.
        expected = {"size_bytes": len(self.data) + len(tag) + 4, "received": len(body)}
        for name, value in expected.items():
            if name in reply and reply[name] != value:
                raise RuntimeError(f"upload: {name} is {reply[name]}, expected {value}")
        return elapsed

    def run(self, count: int, concurrency: int) -> Run:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            started = time.perf_counter()
            latencies = list(pool.map(self._one, range(count)))
            seconds = time.perf_counter() - started
        return Run(latencies, seconds)


def run(ctx: Context, media: Media) -> tuple[list[Row], dict[str, Any]]:
    data = {"200k": media.jpeg_200k.read_bytes(), "10m": media.jpeg_10m.read_bytes()}
    app = Appliance.start(ctx, ctx.subdir("uploads") / "data")
    sink = Sink.start(ctx)
    results: dict[str, dict[str, Run]] = {}
    memory: dict[str, dict[str, Any]] = {}
    try:
        targets = {"appliance": (app.port, app.pid, app.auth()), "sink": (sink.port, sink.pid, {})}
        for port, _pid, auth in targets.values():  # warm-up: connections, codecs
            Uploader(port, auth, data["200k"]).run(4, 2)
        for scenario in SCENARIOS:
            results[scenario.key] = {}
            for name, (port, pid, auth) in targets.items():
                uploader = Uploader(port, auth, data[scenario.size])
                if scenario.key == "10m_x16":
                    before = rss_kib(pid)
                    reset = reset_peak_rss(pid)
                    results[scenario.key][name] = uploader.run(scenario.count, scenario.concurrency)
                    after = rss_kib(pid)
                    memory[name] = {
                        "rss_before_kib": before["VmRSS"],
                        "hwm_after_kib": after["VmHWM"],
                        "rss_after_kib": after["VmRSS"],
                        "peak_reset": reset,
                        "growth_mb": (after["VmHWM"] - before["VmRSS"]) / 1024,
                    }
                else:
                    results[scenario.key][name] = uploader.run(scenario.count, scenario.concurrency)
            ctx.note(
                f"upload {scenario.label}: appliance "
                f"{results[scenario.key]['appliance'].per_second:.1f}/s, receiving only "
                f"{results[scenario.key]['sink'].per_second:.1f}/s"
            )
    finally:
        sink.stop()
        app.stop()

    rows = [_row(s, results[s.key]["appliance"], results[s.key]["sink"]) for s in SCENARIOS]
    growth, base_growth = memory["appliance"]["growth_mb"], memory["sink"]["growth_mb"]
    rows.append(
        Row(
            section="uploads",
            figure="upload: peak RSS growth, 16 x 10 MB at once (MB)",
            appliance=f"{growth:.1f} MB (peak {memory['appliance']['hwm_after_kib'] / 1024:.0f})",
            reference=f"receive only {base_growth:.1f} MB "
            f"(peak {memory['sink']['hwm_after_kib'] / 1024:.0f})",
            ratio=None,
            target=f"<= {RSS_TARGET_MB:.0f} MB",
            passed=growth <= RSS_TARGET_MB,
            data=memory,
        )
    )
    ctx.note(f"peak RSS growth: appliance {growth:.1f} MB, receive only {base_growth:.1f} MB")
    raw = {
        "scenarios": {k: {n: r.as_dict() for n, r in v.items()} for k, v in results.items()},
        "memory": memory,
    }
    return rows, raw


def _row(scenario: Scenario, app: Run, sink: Run) -> Row:
    def cell(r: Run) -> str:
        p50, p99 = percentile(r.latencies, 50), percentile(r.latencies, 99)
        return f"{r.per_second:,.1f}/s  p50 {fmt_ms(p50)} p99 {fmt_ms(p99)} ms"

    return Row(
        section="uploads",
        figure=f"upload: {scenario.label} (uploads/s)",
        appliance=cell(app),
        reference="receive only " + cell(sink),
        ratio=app.per_second / sink.per_second,
        data={"appliance": app.as_dict(), "sink": sink.as_dict()},
    )
