"""Start-up: from exec until the port answers an HTTP request, for the appliance from source,
the packaged executable (when `make binary` built it), and a bare Tornado server (the
floor of any Python server), interleaved run by run on the server core."""

from __future__ import annotations

from typing import Any

from tests.bench.common import Context, Row, median, ratio
from tests.bench.media import Media
from tests.bench.servers import EXECUTABLE, Appliance, Sink

RUNS = 5
TARGET_S = 1.0  # the executable


def run(ctx: Context, media: Media) -> tuple[list[Row], dict[str, Any]]:
    data_dir = ctx.subdir("startup") / "data"
    first = Appliance.start(ctx, data_dir)
    try:
        first.upload(media.jpeg_200k.read_bytes(), "hero.jpg")
    finally:
        first.stop()
    built = EXECUTABLE.is_file()
    times: dict[str, list[float]] = {"source": [], "tornado": [], "executable": []}
    for _ in range(RUNS):
        app = Appliance.start(ctx, data_dir, key=first.key)
        app.stop()
        times["source"].append(app.started_in)
        if built:
            exe = Appliance.start(ctx, data_dir, key=first.key, command=[str(EXECUTABLE)])
            exe.stop()
            times["executable"].append(exe.started_in)
        sink = Sink.start(ctx)
        sink.stop()
        times["tornado"].append(sink.started_in)
    source, tornado = median(times["source"]), median(times["tornado"])
    rows = [
        Row(
            section="startup",
            figure="start-up: from source, exec -> HTTP answer (s)",
            appliance=f"{source:.2f} s",
            reference=f"bare Tornado server {tornado:.2f} s",
            ratio=ratio(source, tornado),
            data={"source": times["source"], "tornado": times["tornado"]},
        )
    ]
    if built:
        exe_s = median(times["executable"])
        rows.append(
            Row(
                section="startup",
                figure="start-up: executable dist/pictor (s)",
                appliance=f"{exe_s:.2f} s",
                reference=f"from source {source:.2f} s",
                ratio=ratio(exe_s, source),
                target=f"<= {TARGET_S:.0f} s",
                passed=exe_s <= TARGET_S,
                data={"executable": times["executable"]},
            )
        )
    else:
        rows.append(
            Row(
                section="startup",
                figure="start-up: executable dist/pictor (s)",
                appliance="not built",
                reference=f"from source {source:.2f} s",
                ratio=None,
                target=f"<= {TARGET_S:.0f} s",
                passed=None,
            )
        )
    ctx.note(
        f"start-up: source {source:.2f} s, bare Tornado {tornado:.2f} s, executable "
        + (f"{median(times['executable']):.2f} s" if built else "not built")
    )
    return rows, {"runs": times, "first_start_s": first.started_in, "executable_built": built}
