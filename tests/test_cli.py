"""The command line, run as users and scripts run it: `python main.py ...` in a subprocess
(CONTRACT.md: Command line; Auth and tenants)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance import __version__
from tests import images
from tests.api_helpers import (
    KEY_RE,
    ROOT,
    assert_error,
    clean_env,
    create_key,
    pictor,
    printed_keys,
    serving,
)

# -- general ------------------------------------------------------------------------------


def test_version() -> None:
    done = pictor("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"pictor {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_every_serve_flag_has_an_environment_variable() -> None:
    done = pictor("serve", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for flag, env in (
        ("--host", "PICTOR_HOST"),
        ("--port", "PICTOR_PORT"),
        ("--data-dir", "PICTOR_DATA_DIR"),
        ("--public-url", "PICTOR_PUBLIC_URL"),
    ):
        assert flag in text and env in text, (flag, env)


def test_unknown_command_is_a_usage_error() -> None:
    done = pictor("frobnicate")
    assert done.returncode == 2
    assert "usage" in done.stderr.lower()


# -- keys ---------------------------------------------------------------------------------


def test_keys_create_prints_the_key_alone_on_the_last_line(
    tmp_path: Path, server_factory: Any
) -> None:
    data_dir = tmp_path / "fresh" / "data"  # created as needed
    done = pictor("keys", "create", "--tenant", "acme", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("\n")
    last = done.stdout.splitlines()[-1]
    assert KEY_RE.match(last), done.stdout
    assert last == last.strip()
    assert (data_dir / "pictor.db").is_file()
    # The key works on a server over that data directory, for tenant acme only.
    srv = server_factory(data_dir=data_dir)
    image = srv.upload(images.png(), key=last)
    assert image.status == 201
    assert srv.request("GET", f"/v3/images/{image.json()['id']}", key=last).status == 200
    assert srv.request("GET", f"/v3/images/{image.json()['id']}").status == 404  # "default"
    # Two keys of one tenant see the same library.
    second = create_key(data_dir, "acme")
    assert second != last
    listed = srv.request("GET", "/v3/images", key=second).json()
    assert [i["id"] for i in listed["images"]] == [image.json()["id"]]


def test_keys_create_needs_a_tenant(tmp_path: Path) -> None:
    done = pictor("keys", "create", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert "--tenant" in done.stderr


def test_keys_list_shows_ids_and_tenants_never_secrets(tmp_path: Path) -> None:
    keys = {tenant: create_key(tmp_path, tenant) for tenant in ("acme", "globex")}
    done = pictor("keys", "list", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for tenant, key in keys.items():
        _, key_id, secret = key.split("_")
        [row] = [line for line in done.stdout.splitlines() if key_id in line]
        assert tenant in row.split()
        assert "active" in row
        assert secret not in done.stdout
        assert secret[:12] not in done.stdout
    assert "pk_" not in done.stdout


def test_keys_revoke_takes_effect_on_a_running_server_at_once(
    tmp_path: Path, server_factory: Any
) -> None:
    data_dir = tmp_path / "data"
    key = create_key(data_dir, "acme")
    keep = create_key(data_dir, "acme")
    srv = server_factory(data_dir=data_dir)
    image = srv.upload(images.png(), key=key).json()
    assert srv.request("GET", "/v3/images", key=key).status == 200

    key_id = key.split("_")[1]
    done = pictor("keys", "revoke", key_id, "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert key_id in done.stdout

    for method, path in (("GET", "/v3/images"), ("GET", f"/v3/images/{image['id']}")):
        resp = srv.request(method, path, key=key)
        assert_error(resp, 401, "invalid_api_key")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    # The tenant's other key and its images are untouched.
    assert srv.request("GET", f"/v3/images/{image['id']}", key=keep).json() == image
    listing = pictor("keys", "list", "--data-dir", str(data_dir)).stdout
    [row] = [line for line in listing.splitlines() if key_id in line]
    assert "revoked" in row


def test_keys_revoke_unknown_or_twice_fails(tmp_path: Path) -> None:
    key_id = create_key(tmp_path, "acme").split("_")[1]
    assert pictor("keys", "revoke", key_id, "--data-dir", str(tmp_path)).returncode == 0
    again = pictor("keys", "revoke", key_id, "--data-dir", str(tmp_path))
    assert again.returncode == 1
    assert key_id in again.stderr
    unknown = pictor("keys", "revoke", "A" * 16, "--data-dir", str(tmp_path))
    assert unknown.returncode == 1
    assert unknown.stderr.strip()


def test_keys_list_without_a_database_fails_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    done = pictor("keys", "list", "--data-dir", str(missing))
    assert done.returncode == 1
    assert str(missing) in done.stderr
    assert not missing.exists()


def test_keys_commands_read_the_data_dir_from_the_environment(tmp_path: Path) -> None:
    env = clean_env(PICTOR_DATA_DIR=str(tmp_path / "env-data"))
    done = pictor("keys", "create", "--tenant", "envco", env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "env-data" / "pictor.db").is_file()
    key_id = done.stdout.splitlines()[-1].split("_")[1]
    assert key_id in pictor("keys", "list", env=env).stdout


# -- serve --------------------------------------------------------------------------------


def test_first_start_prints_key_and_gallery_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    args = ("--port", "0", "--data-dir", str(data_dir))
    with serving(*args) as served:
        assert served.host == "127.0.0.1"
        assert served.lines[0].startswith(f"Pictor is serving {data_dir.resolve()} at ")
        [key] = printed_keys(served.lines)
        assert KEY_RE.match(key)
        key_lines = [line for line in served.lines if key in line]
        assert len(key_lines) == 1
        gallery = f"http://127.0.0.1:{served.port}/"
        assert any(gallery in line for line in served.lines), served.lines
        # The key belongs to the tenant "default" and works at once; the gallery is there.
        assert served.request("GET", "/v3/images", key=key).status == 200
        assert served.upload(key, images.png()).status == 201
        page = served.request("GET", "/")
        assert page.status == 200
        assert page.headers["Content-Type"].startswith("text/html")
    listing = pictor("keys", "list", "--data-dir", str(data_dir)).stdout
    [row] = [line for line in listing.splitlines() if key.split("_")[1] in line]
    assert "default" in row.split()

    with serving(*args) as again:
        assert printed_keys(again.lines) == []
        assert not any("Gallery" in line or "API key" in line for line in again.lines)
        body = again.request("GET", "/v3/images", key=key).json()
        assert body["total"] == 1
    assert pictor("keys", "list", "--data-dir", str(data_dir)).stdout.count("default") == 1


def test_serve_reads_data_dir_and_public_url_from_the_environment(tmp_path: Path) -> None:
    data_dir = tmp_path / "env-data"
    env = clean_env(
        PICTOR_DATA_DIR=str(data_dir),
        PICTOR_PUBLIC_URL="https://img.example.com/",
        PICTOR_PORT="0",
        PICTOR_HOST="127.0.0.1",
    )
    with serving(env=env) as served:
        assert (data_dir / "pictor.db").is_file()
        assert served.host == "127.0.0.1"
        [key] = printed_keys(served.lines)
        assert any("https://img.example.com/" in line for line in served.lines), served.lines
        resp = served.upload(key, images.png())
        assert resp.status == 201
        image = resp.json()
        assert image["url"] == f"https://img.example.com/i/{image['id']}"
        assert image["thumbnail_url"] == image["url"] + "?variant=thumbnail"


def test_flags_win_over_the_environment(tmp_path: Path) -> None:
    env = clean_env(
        PICTOR_PORT="not-a-port",
        PICTOR_PUBLIC_URL="also not a url",
        PICTOR_DATA_DIR=str(tmp_path / "from-env"),
    )
    args = ("--port", "0", "--public-url", "https://cdn.example.net", "--data-dir")
    with serving(*args, str(tmp_path / "from-flag"), env=env) as served:
        [key] = printed_keys(served.lines)
        image = served.upload(key, images.png()).json()
        assert image["url"].startswith("https://cdn.example.net/i/img_")
    assert (tmp_path / "from-flag" / "pictor.db").is_file()
    assert not (tmp_path / "from-env").exists()


def test_serve_with_host_and_port_from_the_environment(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    env = clean_env(PICTOR_HOST="127.0.0.2", PICTOR_PORT=str(port), PICTOR_DATA_DIR=str(tmp_path))
    with serving(env=env) as served:
        assert (served.host, served.port) == ("127.0.0.2", port)
        assert any(f"http://127.0.0.2:{port}/" in line for line in served.lines)
        assert served.request("GET", "/").status == 200
        # Listening on that address only.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--public-url", "ftp://img.example.com"], {}, "--public-url"),
        (["--public-url", "img.example.com"], {}, "--public-url"),
        (["--public-url", "https://"], {}, "--public-url"),
        (["--public-url", "https://img.example.com/?a=1"], {}, "--public-url"),
        (["--public-url", "https://img.example.com/#top"], {}, "--public-url"),
        ([], {"PICTOR_PUBLIC_URL": "javascript:alert(1)"}, "PICTOR_PUBLIC_URL"),
        (["--port", "70000"], {}, "--port"),
        (["--port", "-1"], {}, "--port"),
        (["--port", "http"], {}, "--port"),
        ([], {"PICTOR_PORT": "abc"}, "PICTOR_PORT"),
        ([], {"PICTOR_PORT": "99999"}, "PICTOR_PORT"),
    ],
)
def test_invalid_settings_exit_2_with_a_message(
    tmp_path: Path, args: list[str], env: dict[str, str], names: str
) -> None:
    data_dir = tmp_path / "never-created"
    done = pictor(
        "serve", "--data-dir", str(data_dir), *args, env=clean_env(**{"PICTOR_PORT": "0", **env})
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert names in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not data_dir.exists()


def test_port_in_use_fails_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = pictor("serve", "--port", str(port), "--data-dir", str(tmp_path))
    assert done.returncode != 0
    assert done.stderr.strip()
    assert "Traceback" not in done.stderr


def test_sigint_also_stops_cleanly(tmp_path: Path) -> None:
    with serving("--port", "0", "--data-dir", str(tmp_path)) as served:
        served.proc.send_signal(signal.SIGINT)
        assert served.proc.wait(timeout=30) == 0


def test_api_json_from_a_packaged_style_start(tmp_path: Path) -> None:
    """The printed gallery URL and key are all a new user needs: list, upload, fetch."""
    with serving("--port", "0", "--data-dir", str(tmp_path)) as served:
        [key] = printed_keys(served.lines)
        data = images.gif(40, 30, frames=2)
        created = served.upload(key, data, "anim.gif")
        assert created.status == 201
        image = json.loads(created.body)
        assert image["url"] == f"http://127.0.0.1:{served.port}/i/{image['id']}"
        assert served.request("GET", f"/i/{image['id']}").body == data


def test_unusable_data_dir_fails_with_a_message_and_exits(tmp_path: Path) -> None:
    (tmp_path / "tmp").write_text("a file where a directory belongs")
    try:
        proc = subprocess.run(
            [sys.executable, "main.py", "serve", "--port", "0", "--data-dir", str(tmp_path)],
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=15,  # run() kills it then
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"serve printed {exc.stderr!r} and then hung instead of exiting")
    assert proc.returncode == 1
    assert str(tmp_path / "tmp") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_serve_refuses_to_start_without_the_wheels_libvips(tmp_path: Path) -> None:
    """With pyvips' compiled `_libvips` module unavailable, pyvips would fall back to ABI
    mode on whatever libvips the system has (or fail to find one): serve refuses, and says
    why, before it opens the data directory."""
    code = (
        "import sys; sys.modules['_libvips'] = None; "
        "from appliance.cli import main; "
        f"sys.exit(main(['serve', '--port', '0', '--data-dir', {str(tmp_path / 'data')!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert "pictor: refusing to start:" in done.stderr
    assert "pyvips-binary" in done.stderr
    assert not (tmp_path / "data").exists()
