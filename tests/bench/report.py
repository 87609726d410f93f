"""The one table, and the JSON beside it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.bench.common import REPO, Row

RESULTS = Path(__file__).with_name("results")
HEADERS = ("figure", "appliance", "reference", "ratio", "target", "result")


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: Sequence[Row]) -> str:
    cells = [
        (r.figure, r.appliance, r.reference, _ratio(r.ratio), r.target or "-", r.result)
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if i == 3 else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return " | ".join(parts).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    out = [line(HEADERS), rule]
    section = None
    for row, values in zip(rows, cells, strict=True):
        if section is not None and row.section != section:
            out.append(rule)
        section = row.section
        out.append(line(values))
    with_target = [r for r in rows if r.target]
    met = sum(1 for r in with_target if r.passed)
    out.append(rule)
    out.append(
        f"targets met: {met} of {len(with_target)}"
        + "".join(f"; {r.figure}: {r.result}" for r in with_target if not r.passed)
    )
    return "\n".join(out)


def host_info(tools: dict[str, str]) -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
        "git_head": commit,
        "tools": tools,
    }


def write_json(payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / time.strftime("bench-%Y%m%d-%H%M%S.json", time.gmtime())
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return path
