"""A `serve` process whose blobs live in S3 (a real SeaweedFS): uploads, serves and stops
cleanly, its S3 connections closed (no warning, no traceback, exit code 0)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests import images
from tests.api_helpers import ROOT, SERVING_RE, Served, clean_env, printed_keys
from tests.s3_server import S3Target, SeaweedFS


def test_a_node_on_s3_serves_and_exits_cleanly(
    seaweedfs: SeaweedFS, s3_target: S3Target, tmp_path: Path
) -> None:
    env = clean_env(**s3_target.env()) | {"PYTHONWARNINGS": "always"}
    proc = subprocess.Popen(
        [sys.executable, "main.py", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or lines[-1] != "Stop with Ctrl+C.":
            line = proc.stdout.readline()
            assert line, (proc.poll(), lines)
            lines.append(line.rstrip("\n"))
        match = SERVING_RE.match(lines[0])
        assert match, lines
        served = Served(proc, lines, match.group(2), int(match.group(3)))
        [key] = printed_keys(lines)
        data = images.png(64, 48)
        made = served.upload(key, data)
        assert made.status == 201, made.body
        sha = made.json()["sha256"]
        assert served.request("GET", f"/i/{made.json()['id']}").body == data
        thumb = served.request("GET", f"/i/{made.json()['id']}?variant=thumbnail")
        assert (thumb.status, thumb.headers["Content-Type"]) == (200, "image/png")
        assert sorted(seaweedfs.keys(s3_target.bucket, s3_target.prefix + "/")) == [
            f"{s3_target.prefix}/blobs/{sha[:2]}/{sha}",
            f"{s3_target.prefix}/derived/{sha[:2]}/{sha}.thumbnail",
        ]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    for trouble in ("Traceback", "Warning", "Unclosed", "Task was destroyed", "Exception ignored"):
        assert trouble not in err, err
