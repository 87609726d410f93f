"""`pictor migrate`: a library copied to another pair of backends serves the same ids, bytes,
ETags and 410s, its keys still work, and a second run copies nothing again (CONTRACT.md:
Running on more than one machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api_helpers import clean_env, pictor
from tests.conftest import Backends, Response, Server, servers_on
from tests.pg_server import PostgresServer
from tests.s3_server import SeaweedFS
from tests.test_admin import seed

FORMS = ("", "?variant=thumbnail")


def served(srv: Server, made: dict[str, Any]) -> dict[tuple[str, str], tuple[int, bytes, str]]:
    """Every image's public answers: status, body and ETag, for each form."""
    answers = {}
    for image in made.values():
        for form in FORMS:
            resp: Response = srv.request("GET", f"/i/{image['id']}{form}")
            answers[(image["id"], form)] = (resp.status, resp.body, resp.headers.get("Etag", ""))
    return answers


def migrate_args(source: list[str], target: list[str]) -> list[str]:
    return ["migrate", *source, *target]


def test_migrate_copies_a_serving_library_and_resumes(server_factory: Any, tmp_path: Path) -> None:
    source_dir, target_dir = tmp_path / "source", tmp_path / "target"
    source = server_factory(source_dir)
    made = seed(source)
    before = served(source, made)
    listing = source.request("GET", "/v3/images?page_size=100").body.decode()

    args = [
        "migrate",
        "--data-dir",
        str(source_dir),
        "--to-database",
        "sqlite",
        "--to-blob-store",
        "file",
        "--to-data-dir",
        str(target_dir),
    ]
    done = pictor(*args)  # while the source keeps serving
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "migrated 1 tenant(s), 2 key(s), 6 image(s) (1 deleted); 4 blob(s) copied, 1 already there"
    )
    again = pictor(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == (
        "migrated 1 tenant(s), 2 key(s), 6 image(s) (1 deleted); 0 blob(s) copied, 5 already there"
    )

    target = server_factory(target_dir)
    target.api_key = source.api_key  # the key was copied, as a hash
    assert served(target, made) == before
    assert before[(made["deleted"]["id"], "")][0] == 410
    # The same records, in the same order; only the URLs' host (another port here) differs.
    copied = target.request("GET", "/v3/images?page_size=100").body.decode()
    assert copied.replace(target.base_url, "BASE") == listing.replace(source.base_url, "BASE")


def test_migrate_refuses_the_same_backends_as_its_source(tmp_path: Path) -> None:
    done = pictor(
        "migrate",
        "--data-dir",
        str(tmp_path),
        "--to-database",
        "sqlite",
        "--to-blob-store",
        "file",
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "pictor: migrate: the target must be another database and another blob store\n"
    )


class _Library(Backends):
    """Servers on a library that a test made itself (e.g. the target of a migration)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._settings = settings

    def settings(self, data_dir: Path) -> dict[str, Any]:
        return dict(self._settings)


def test_migrate_to_postgresql_and_s3_and_back_serves_the_same(
    server_factory: Any,
    postgres_server: PostgresServer,
    seaweedfs: SeaweedFS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source_dir = tmp_path / "source"
    source = server_factory(source_dir)
    made = seed(source)
    before = served(source, made)
    listing = source.request("GET", "/v3/images?page_size=100").body.decode()
    database, target = postgres_server.create_database(), seaweedfs.new_target()
    scaled = ["--database", database, "--blob-store", target.url, "--s3-endpoint", target.endpoint]
    env = clean_env(AWS_ACCESS_KEY_ID=target.access_key, AWS_SECRET_ACCESS_KEY=target.secret_key)

    there = pictor(
        "migrate",
        "--data-dir",
        str(source_dir),
        *["--to-" + a[2:] if a.startswith("--") else a for a in scaled],
        env=env,
    )
    assert there.returncode == 0, there.stderr
    assert there.stdout.splitlines()[-1] == (
        "migrated 1 tenant(s), 2 key(s), 6 image(s) (1 deleted); 4 blob(s) copied, 1 already there"
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", target.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", target.secret_key)
    settings = {"database": database, "blob_store": target.url, "s3_endpoint": target.endpoint}
    with servers_on(_Library(settings), tmp_path / "scaled") as start:
        node = start(tmp_path / "node")
        node.api_key = source.api_key
        assert served(node, made) == before  # ids, bytes, ETags and 410s
        copied = node.request("GET", "/v3/images?page_size=100").body.decode()
        assert copied.replace(node.base_url, "B") == listing.replace(source.base_url, "B")

    back_dir = tmp_path / "back"
    back = pictor(
        "migrate",
        *scaled,
        "--data-dir",
        str(tmp_path / "scratch"),
        "--to-database",
        "sqlite",
        "--to-blob-store",
        "file",
        "--to-data-dir",
        str(back_dir),
        env=env,
    )
    assert back.returncode == 0, back.stderr
    returned = server_factory(back_dir)
    returned.api_key = source.api_key
    assert served(returned, made) == before
