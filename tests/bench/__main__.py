"""`python -m tests.bench` (what `make bench` runs): every section, one table, one JSON file.

Knobs (environment):
  BENCH_DURATION       seconds of each wrk/ab run (default 6)
  BENCH_CONNECTIONS    wrk/ab connections (default 32)
  BENCH_SECTIONS       a comma-separated subset of: proxy,thumbnails,variants,uploads,
                       library,startup,pg_library,ops,scaleout,s3
  BENCH_PG_LIBRARY_SIZE  images in the PostgreSQL-vs-SQLite store comparison (default 1000000)
  BENCH_DATABASE       s3: a postgresql:// URL for the S3-backed node (default SQLite)
  BENCH_WEED_CORE      s3: pin SeaweedFS to this core (default: not pinned)
  BENCH_IMPORT_FILES   files the ops section imports (default 1000; 0 skips the import)
  BENCH_OPS_ROUNDS     on/off rounds of the ops section (default 5)
  BENCH_LIBRARY_SIZES  library sizes (default 10000,100000,1000000)

Servers run on core 0, the load generators and this process on core 1. Every process started
is stopped (by its own process group) and the temp directory removed, however the run ends.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from tests.bench import (
    library,
    ops,
    pg_library,
    proxy,
    report,
    s3,
    scaleout,
    startup,
    thumbnails,
    uploads,
    variants,
)
from tests.bench.common import (
    CLIENT_CORE,
    REPO,
    Context,
    Processes,
    Row,
    env_float,
    env_int,
    make_tmp,
    pin_self,
    remove_tmp,
)
from tests.bench.media import Media, make_media
from tests.bench.servers import ensure_tools

Section = Callable[[Context, Media], tuple[list[Row], dict[str, Any]]]


def _sections() -> dict[str, Section]:
    sizes = tuple(int(s) for s in os.environ.get("BENCH_LIBRARY_SIZES", "").split(",") if s.strip())
    return {
        "proxy": proxy.run,
        "thumbnails": thumbnails.run,
        "variants": variants.run,
        "uploads": uploads.run,
        "library": lambda ctx, media: library.run(ctx, media, sizes or library.SIZES),
        "startup": startup.run,
        "pg_library": pg_library.run,
        "ops": ops.run,
        "scaleout": scaleout.run,
        "s3": s3.run,
    }


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally` that cleans up


def main() -> int:
    sections = _sections()
    chosen = [s.strip() for s in os.environ.get("BENCH_SECTIONS", "").split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(sections))
    if unknown:
        print(f"bench: unknown section(s) {unknown}; choose from {list(sections)}")
        return 2
    if (os.cpu_count() or 1) < 2:
        print("bench: needs 2 cores (server on core 0, load generator on core 1)")
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)

    ctx = Context(
        procs=Processes(),
        tmp=make_tmp(),
        duration=env_float("BENCH_DURATION", 6.0),
        connections=env_int("BENCH_CONNECTIONS", 32),
    )
    started = time.time()
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    failed: list[str] = []
    meta: dict[str, Any] = {}
    try:
        pin_self(CLIENT_CORE)
        tools = ensure_tools(ctx)
        meta = report.host_info(tools)
        print(f"bench: temp dir {ctx.tmp}; {ctx.duration:g} s runs, {ctx.connections} connections")
        print("bench: making the test images", flush=True)
        media = make_media(ctx.tmp / "media")
        raw["media"] = media.describe()
        for name in chosen or list(sections):
            print(f"bench: {name}", flush=True)
            t0 = time.perf_counter()
            try:
                section_rows, section_raw = sections[name](ctx, media)
            except Exception as exc:
                traceback.print_exc()
                failed.append(name)
                section_rows = [Row(name, f"{name}: did not complete", repr(exc)[:80], "", None)]
                section_raw = {"error": traceback.format_exc()}
                ctx.procs.stop_all()  # whatever the section left running
            section_raw["seconds"] = time.perf_counter() - t0
            print(f"bench: {name} took {section_raw['seconds']:.0f} s", flush=True)
            rows += section_rows
            raw[name] = section_raw
    finally:
        ctx.procs.stop_all()
        remove_tmp(ctx.tmp)

    print()
    print(report.table(rows))
    path = report.write_json(
        {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": time.time() - started,
            "settings": {"duration_s": ctx.duration, "connections": ctx.connections},
            "host": meta,
            "notes": ctx.log,
            "rows": [
                {
                    "section": r.section,
                    "figure": r.figure,
                    "appliance": r.appliance,
                    "reference": r.reference,
                    "ratio": r.ratio,
                    "target": r.target,
                    "result": r.result,
                    "data": r.data,
                }
                for r in rows
            ],
            "sections": raw,
        }
    )
    print(f"\nbench: results in {path.relative_to(REPO)} ({time.time() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
