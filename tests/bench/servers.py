"""The servers under test, each a pinned child process: the appliance (from source or the
packaged executable), the byte-discarding upload baseline, and nginx."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.common import (
    PYTHON,
    REPO,
    SERVER_CORE,
    Client,
    Context,
    free_port,
    multipart,
    rss_kib,
    wait_http,
)

SOURCE_COMMAND = (PYTHON, "main.py")
EXECUTABLE = REPO / "dist" / "pictor"


def ensure_tools(ctx: Context) -> dict[str, str]:
    """nginx, wrk, ab and taskset, installed from Debian when missing."""
    wanted = {"nginx": "nginx", "wrk": "wrk", "ab": "apache2-utils", "taskset": "util-linux"}
    missing = sorted({pkg for tool, pkg in wanted.items() if _which(tool) is None})
    if missing:
        if os.geteuid() != 0:
            raise RuntimeError(f"missing {missing}; install them: apt-get install -y {missing}")
        ctx.note(f"installing {' '.join(missing)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        # Debian's nginx package starts a system nginx on port 80 unless policy-rc.d says no;
        # we want the binary only.
        policy = Path("/usr/sbin/policy-rc.d")
        made_policy = not policy.exists()
        if made_policy:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        try:
            install = ["apt-get", "install", "-y", "-qq", *missing]
            if subprocess.run(install, env=env, check=False).returncode != 0:
                subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
                subprocess.run(install, env=env, check=True)
        finally:
            if made_policy:
                policy.unlink(missing_ok=True)
    versions = {}
    for tool, args in (("nginx", ["-v"]), ("wrk", ["--version"]), ("ab", ["-V"])):
        out = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
        versions[tool] = ((out.stdout or "") + (out.stderr or "")).strip().splitlines()[0]
    return versions


def _with(env: Mapping[str, str] | None) -> dict[str, str] | None:
    return None if env is None else {**os.environ, **env}


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


# -- the appliance -----------------------------------------------------------------------


def create_key(
    ctx: Context,
    data_dir: Path,
    command: Sequence[str] = SOURCE_COMMAND,
    env: Mapping[str, str] | None = None,
) -> str:
    """`keys create` prints the key alone on its last line (the CLI contract)."""
    done = ctx.procs.run(
        [*command, "keys", "create", "--tenant", "default", "--data-dir", str(data_dir)],
        env=_with(env),
    )
    if done.returncode != 0:
        raise RuntimeError(f"keys create failed: {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1].strip()


@dataclass
class Appliance:
    ctx: Context
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    key: str
    started_in: float  # seconds from exec until the port answered

    @classmethod
    def start(
        cls,
        ctx: Context,
        data_dir: Path,
        *,
        key: str | None = None,
        command: Sequence[str] = SOURCE_COMMAND,
        core: int = SERVER_CORE,
        env: Mapping[str, str] | None = None,
    ) -> Appliance:
        """`env` adds variables, e.g. PICTOR_DATABASE and the S3 settings of another pair."""
        data_dir.mkdir(parents=True, exist_ok=True)
        if key is None:
            key = create_key(ctx, data_dir, command, env)
        port = free_port()
        argv = [*command, "serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--data-dir", str(data_dir)]
        with open(data_dir.parent / f"{data_dir.name}.log", "ab") as log:
            started = time.perf_counter()
            proc = ctx.procs.start(argv, core=core, stdout=log, stderr=log, env=_with(env))
        wait_http(port, proc)
        return cls(ctx, data_dir, port, proc, key, time.perf_counter() - started)

    def stop(self) -> None:
        self.ctx.procs.stop(self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> dict[str, int]:
        return rss_kib(self.pid)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def upload(
        self,
        data: bytes,
        filename: str,
        fields: Mapping[str, str] | None = None,
        client: Client | None = None,
    ) -> dict[str, Any]:
        body, ctype = multipart(data, filename, fields)
        client = client or Client(self.port)
        answer = client.request(
            "POST", "/v3/images", headers={**self.auth(), "Content-Type": ctype}, body=body
        )
        if answer.status != 201:
            raise RuntimeError(f"upload of {filename} answered {answer.status}: {answer.body!r}")
        record: dict[str, Any] = json.loads(answer.body)
        return record

    def blob_path(self, sha256: str) -> Path:
        return self.data_dir / "blobs" / sha256[:2] / sha256

    def thumbnail_path(self, sha256: str) -> Path:
        return self.data_dir / "derived" / sha256[:2] / f"{sha256}.thumbnail"


# -- the upload baseline -----------------------------------------------------------------


@dataclass
class Sink:
    ctx: Context
    port: int
    proc: subprocess.Popen[bytes]
    started_in: float

    @classmethod
    def start(cls, ctx: Context, core: int = SERVER_CORE) -> Sink:
        port = free_port()
        script = Path(__file__).with_name("sink_server.py")
        started = time.perf_counter()
        proc = ctx.procs.start([PYTHON, str(script), str(port)], core=core)
        wait_http(port, proc)
        return cls(ctx, port, proc, time.perf_counter() - started)

    def stop(self) -> None:
        self.ctx.procs.stop(self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid


# -- nginx -------------------------------------------------------------------------------


@dataclass
class Nginx:
    ctx: Context
    port: int
    proc: subprocess.Popen[bytes]
    conf: Path

    @classmethod
    def start(
        cls, ctx: Context, files: Mapping[str, tuple[Path, str]], core: int = SERVER_CORE
    ) -> Nginx:
        """Serve each file at /i/<name> with its Content-Type, nginx's own ETag and the
        appliance's Cache-Control: one worker, sendfile, keep-alive."""
        root = ctx.subdir("nginx")
        port = free_port()
        locations = "".join(
            f"""
        location = /i/{name} {{
            alias "{path}";
            types {{ }}
            default_type {mime};
            etag on;
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}"""
            for name, (path, mime) in files.items()
        )
        temps = "\n".join(
            f"    {kind}_temp_path {root / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # As root the worker would drop to `nobody`, who cannot read our 0700 temp dirs.
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = root / "nginx.conf"
        conf.write_text(
            f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {root / "nginx.pid"};
error_log {root / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    access_log {root / "access.log"};
{temps}
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    server_tokens off;
    server {{
        listen 127.0.0.1:{port};{locations}
        location / {{ return 404; }}
    }}
}}
"""
        )
        nginx = _which("nginx") or "nginx"
        args = [nginx, "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)]
        check = ctx.procs.run([*args, "-t"])
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed: {check.stderr.strip()}")
        proc = ctx.procs.start(args, core=core)
        wait_http(port, proc)
        return cls(ctx, port, proc, conf)

    def stop(self) -> None:
        self.ctx.procs.stop(self.proc)
