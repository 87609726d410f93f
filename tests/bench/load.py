"""Load generators on the client core: wrk for GETs, ab for HEAD (wrk waits for a HEAD
response's body and hangs), and their output parsed into one shape."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tests.bench.common import CLIENT_CORE, Context

_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_UNITS_B = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


@dataclass
class LoadResult:
    tool: str
    requests: int
    seconds: float
    rps: float
    bytes_per_s: float
    p50: float  # seconds
    p99: float
    errors: int  # socket errors, failed requests
    bad_status: int  # responses outside 2xx/3xx
    extra: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"cannot read a duration from {text!r}")
    return float(m.group(1)) * _UNITS_S[m.group(2)]


def _bytes(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(B|KB|MB|GB|TB)", text.strip())
    if not m:
        raise ValueError(f"cannot read a size from {text!r}")
    return float(m.group(1)) * _UNITS_B[m.group(2)]


def wrk(
    ctx: Context,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    duration: float | None = None,
    connections: int | None = None,
) -> LoadResult:
    duration = duration or ctx.duration
    connections = connections or ctx.connections
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", "30s"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    done = ctx.procs.run([*args, url], core=CLIENT_CORE, timeout=duration + 60)
    out = done.stdout
    if done.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed ({done.returncode}): {out}\n{done.stderr}")
    summary = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read", out)
    assert summary, out
    requests = int(summary.group(1))
    seconds = _seconds(summary.group(2))
    read = _bytes(summary.group(3))
    pcts = {int(p): _seconds(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M)}
    errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors = sum(int(g) for g in m.groups())
    bad = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        bad = int(m.group(1))
    return LoadResult(
        tool="wrk",
        requests=requests,
        seconds=seconds,
        rps=requests / seconds,
        bytes_per_s=read / seconds,
        p50=pcts[50],
        p99=pcts[99],
        errors=errors,
        bad_status=bad,
        extra={"connections": connections},
    )


def ab_head(
    ctx: Context, url: str, *, duration: float | None = None, connections: int | None = None
) -> LoadResult:
    """HEAD with keep-alive for `duration` seconds (`-t`; the `-n` after it only bounds the
    sample array ab allocates)."""
    duration = duration or ctx.duration
    connections = connections or ctx.connections
    csv = ctx.subdir("ab") / "percentiles.csv"
    args = ["ab", "-k", "-i", "-q", "-r", "-c", str(connections), "-t", f"{duration:g}"]
    args += ["-n", "3000000", "-e", str(csv), url]
    done = ctx.procs.run(args, core=CLIENT_CORE, timeout=duration + 60)
    out = done.stdout
    if done.returncode != 0 or "Requests per second" not in out:
        raise RuntimeError(f"ab failed ({done.returncode}): {out}\n{done.stderr}")

    def field(name: str) -> str:
        m = re.search(rf"^{re.escape(name)}:\s+(\S+)", out, re.M)
        return m.group(1) if m else "0"

    pcts: dict[int, float] = {}
    for line in csv.read_text().splitlines()[1:]:
        p, _, ms = line.partition(",")
        pcts[int(p)] = float(ms) / 1000
    complete = int(field("Complete requests"))
    seconds = float(field("Time taken for tests"))
    return LoadResult(
        tool="ab",
        requests=complete,
        seconds=seconds,
        rps=complete / seconds,
        bytes_per_s=float(field("Total transferred")) / seconds,
        p50=pcts[50],
        p99=pcts[99],
        errors=int(field("Failed requests")),
        bad_status=int(field("Non-2xx responses")),
        extra={
            "connections": connections,
            "keep_alive_requests": int(field("Keep-Alive requests")),
        },
    )
