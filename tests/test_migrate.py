"""`pictor migrate`: a library copied to another pair of backends serves the same ids, bytes,
ETags and 410s, its keys still work, and a second run copies nothing again (CONTRACT.md:
Running on more than one machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.api_helpers import pictor
from tests.conftest import Response, Server
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
