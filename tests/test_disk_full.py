"""A full disk is the admin's problem, not a crash: uploads get a clear 507, nothing half
written stays behind, what was stored keeps serving, and uploads work again once there is
room. The data directory lives on a small tmpfs (mounting one needs root, as CI has)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.api_helpers import assert_error, small_tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "6m") as mount:
        yield mount


def test_a_full_disk_answers_507_and_loses_nothing(small_disk: Path, server_factory: Any) -> None:
    server = server_factory(data_dir=small_disk / "data")
    stored: list[tuple[str, bytes]] = []
    refused = None
    for n in range(12):  # 12 distinct files of about 1 MB cannot fit in 6 MB
        data = images.padded_png(1_000_000 + n)
        resp = server.upload(data, f"big-{n}.png")
        if resp.status == 201:
            stored.append((resp.json()["id"], data))
            continue
        refused = resp
        break
    assert refused is not None and stored, "the disk never filled up"
    assert_error(refused, 507, "insufficient_storage")
    assert refused.json()["error"]["message"] == (
        "The server's disk is full, so the upload was not stored. Try again later."
    )
    assert not list((small_disk / "data" / "tmp").iterdir())  # nothing half written
    for image_id, data in stored:
        got = server.request("GET", f"/i/{image_id}")
        assert (got.status, hashlib.sha256(got.body).hexdigest()) == (
            200,
            hashlib.sha256(data).hexdigest(),
        )
    listed = server.request("GET", "/v3/images?page_size=100").json()
    assert sorted(i["id"] for i in listed["images"]) == sorted(i for i, _ in stored)
    # Room again: the next upload is stored.
    for image_id, _ in stored[:3]:
        assert server.request("DELETE", f"/v3/images/{image_id}").status == 204
    again = server.upload(images.padded_png(1_000_100), "after.png")
    assert again.status == 201, again.body
