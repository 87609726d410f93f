"""Folders as teams use them (GET/POST /v3/folders, PATCH/DELETE /v3/folders/{name}) and the
list's sort and missing-alt-text filter, against a real server: whole bodies and headers."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests import images
from tests.api_helpers import assert_error, list_images, uploaded
from tests.conftest import Response, Server


def folders(server: Server, key: str | None = None) -> dict[str, Any]:
    resp = server.request("GET", "/v3/folders", key=key or server.api_key)
    assert resp.status == 200, resp.body
    assert resp.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert resp.headers["Cache-Control"] == "no-store"
    return resp.json()  # type: ignore[no-any-return]


def path(name: str) -> str:
    return "/v3/folders/" + quote(name, safe="")


def names_in(server: Server, query: str) -> list[str]:
    return [i["filename"] for i in list_images(server, query)["images"]]


def json_of(resp: Response, status: int) -> Any:
    assert resp.status == status, (resp.status, resp.body)
    assert resp.headers["Cache-Control"] == "no-store"
    return resp.json()


def test_folder_counts_include_created_empty_folders(server: Server) -> None:
    assert folders(server) == {"folders": [], "image_count": 0}
    uploaded(server, images.png(8, 8), "a.png", folder="news")
    uploaded(server, images.png(9, 8), "b.png", folder="news")
    uploaded(server, images.png(10, 8), "c.png")
    created = server.request("POST", "/v3/folders", json_body={"name": "Drafts/2026"})
    assert json_of(created, 201) == {"name": "Drafts/2026", "image_count": 0}
    assert created.headers["Location"] == "/v3/folders/Drafts%2F2026"
    assert folders(server) == {
        "folders": [
            {"name": "Drafts/2026", "image_count": 0},
            {"name": "news", "image_count": 2},
        ],
        "image_count": 3,
    }
    # The contract's list stays exactly as it was: folders with live images only.
    assert server.request("GET", "/v3/images/folders").json() == {"folders": ["news"]}
    # A name holding "/" travels percent-encoded in the path.
    resp = server.request("PATCH", path("Drafts/2026"), json_body={"name": "Drafts/2027"})
    assert json_of(resp, 200) == {"name": "Drafts/2027", "image_count": 0, "moved": 0,
                                  "merged": False}
    # Another tenant sees none of it.
    assert folders(server, server.new_key("other")) == {"folders": [], "image_count": 0}


def test_create_refuses_existing_and_bad_names(server: Server) -> None:
    uploaded(server, images.png(8, 8), "a.png", folder="news")
    dup = server.request("POST", "/v3/folders", json_body={"name": "news"})
    assert assert_error(dup, 409, "folder_exists")["message"] == (
        "A folder named 'news' already exists."
    )
    assert server.request("POST", "/v3/folders", json_body={"name": "e"}).status == 201
    assert_error(server.request("POST", "/v3/folders", json_body={"name": "e"}), 409)
    for body in ({}, {"name": ""}, {"name": None}, {"name": 3}, {"name": "x" * 101},
                 {"name": "a\u0001b"}, {"name": "ok", "extra": 1}):
        resp = server.request("POST", "/v3/folders", json_body=body)
        assert_error(resp, 400, "invalid_field")
    assert_error(server.request("POST", "/v3/folders", body="[]"), 400, "invalid_json")


def test_rename_moves_every_image_and_keeps_urls(server: Server) -> None:
    a = uploaded(server, images.png(8, 8), "a.png", folder="old")
    b = uploaded(server, images.png(9, 8), "b.png", folder="old")
    other = uploaded(server, images.png(10, 8), "c.png", folder="keep")
    resp = server.request("PATCH", path("old"), json_body={"name": "new name"})
    assert json_of(resp, 200) == {"name": "new name", "image_count": 2, "moved": 2,
                                  "merged": False}
    assert folders(server)["folders"] == [
        {"name": "keep", "image_count": 1},
        {"name": "new name", "image_count": 2},
    ]
    for image in (a, b):
        fresh = server.request("GET", f"/v3/images/{image['id']}").json()
        assert fresh["folder"] == "new name"
        assert fresh["url"] == image["url"]
        assert fresh["updated_at"] >= image["updated_at"]
    assert server.request("GET", f"/v3/images/{other['id']}").json()["folder"] == "keep"
    assert_error(server.request("PATCH", path("old"), json_body={"name": "x"}), 404,
                 "folder_not_found")


def test_rename_onto_an_existing_folder_merges(server: Server) -> None:
    uploaded(server, images.png(8, 8), "a.png", folder="spring")
    uploaded(server, images.png(9, 8), "b.png", folder="Spring")
    uploaded(server, images.png(10, 8), "c.png", folder="Spring")
    resp = server.request("PATCH", path("spring"), json_body={"name": "Spring"})
    assert json_of(resp, 200) == {"name": "Spring", "image_count": 3, "moved": 1, "merged": True}
    assert folders(server)["folders"] == [{"name": "Spring", "image_count": 3}]
    assert sorted(names_in(server, "folder=Spring")) == ["a.png", "b.png", "c.png"]
    # Renaming to itself changes nothing.
    same = server.request("PATCH", path("Spring"), json_body={"name": "Spring"})
    assert json_of(same, 200) == {"name": "Spring", "image_count": 3, "moved": 0, "merged": False}


def test_a_created_folder_keeps_its_place_through_renames(server: Server) -> None:
    assert server.request("POST", "/v3/folders", json_body={"name": "empty"}).status == 201
    resp = server.request("PATCH", path("empty"), json_body={"name": "still empty"})
    assert json_of(resp, 200) == {"name": "still empty", "image_count": 0, "moved": 0,
                                  "merged": False}
    assert folders(server)["folders"] == [{"name": "still empty", "image_count": 0}]
    # Images moved in and out again leave it in the list, empty.
    image = uploaded(server, images.png(8, 8), "a.png", folder="still empty")
    server.request("PATCH", f"/v3/images/{image['id']}", json_body={"folder": None})
    assert folders(server)["folders"] == [{"name": "still empty", "image_count": 0}]


def test_delete_folder_keeps_its_images(server: Server) -> None:
    a = uploaded(server, images.png(8, 8), "a.png", folder="gone")
    assert server.request("POST", "/v3/folders", json_body={"name": "gone"}).status == 409
    resp = server.request("DELETE", path("gone"))
    assert (resp.status, resp.body) == (204, b"")
    assert "Content-Type" not in resp.headers
    fresh = server.request("GET", f"/v3/images/{a['id']}").json()
    assert fresh["folder"] is None
    assert server.request("GET", f"/i/{a['id']}").status == 200
    assert folders(server) == {"folders": [], "image_count": 1}
    assert_error(server.request("DELETE", path("gone")), 404, "folder_not_found")
    # A created, empty folder can be deleted too.
    server.request("POST", "/v3/folders", json_body={"name": "e"})
    assert server.request("DELETE", path("e")).status == 204
    assert folders(server)["folders"] == []


def test_another_tenants_folder_is_404(server: Server) -> None:
    uploaded(server, images.png(8, 8), "a.png", folder="mine")
    other = server.new_key("other")
    assert_error(server.request("PATCH", path("mine"), json_body={"name": "x"}, key=other), 404)
    assert_error(server.request("DELETE", path("mine"), key=other), 404)
    assert folders(server)["folders"] == [{"name": "mine", "image_count": 1}]


def test_sorts(server: Server) -> None:
    uploaded(server, images.png(40, 40), "beta.png")
    uploaded(server, images.png(8, 8), "Alpha.png")
    uploaded(server, images.png(90, 90), "gamma.png")
    uploaded(server, images.png(8, 8), "alpha.png")
    assert names_in(server, "") == ["alpha.png", "gamma.png", "Alpha.png", "beta.png"]
    assert names_in(server, "sort=newest") == ["alpha.png", "gamma.png", "Alpha.png", "beta.png"]
    assert names_in(server, "sort=oldest") == ["beta.png", "Alpha.png", "gamma.png", "alpha.png"]
    # Case-insensitive A to Z; equal names in upload order.
    assert names_in(server, "sort=name") == ["Alpha.png", "alpha.png", "beta.png", "gamma.png"]
    sizes = [i["size_bytes"] for i in list_images(server, "sort=size")["images"]]
    assert sizes == sorted(sizes, reverse=True)
    assert names_in(server, "sort=size")[0] == "gamma.png"
    # Sorts page without overlap, and combine with search.
    paged = names_in(server, "sort=name&page_size=3") + names_in(
        server, "sort=name&page_size=3&page=2"
    )
    assert paged == ["Alpha.png", "alpha.png", "beta.png", "gamma.png"]
    assert names_in(server, "sort=name&search=alpha") == ["Alpha.png", "alpha.png"]
    assert names_in(server, "sort=oldest&search=al") == ["Alpha.png", "alpha.png"]


def test_missing_alt_text_filter(server: Server) -> None:
    uploaded(server, images.png(8, 8), "described.png", alt_text="A red square")
    uploaded(server, images.png(9, 8), "bare.png", folder="f")
    uploaded(server, images.png(10, 8), "bare2.png")
    body = list_images(server, "missing_alt_text=true")
    assert [i["filename"] for i in body["images"]] == ["bare2.png", "bare.png"]
    assert body["total"] == 2
    assert list_images(server, "missing_alt_text=true&folder=f")["total"] == 1
    assert list_images(server, "missing_alt_text=false")["total"] == 3


@pytest.mark.parametrize(
    "query", ["sort=random", "sort=NEWEST", "missing_alt_text=1", "missing_alt_text=yes"]
)
def test_bad_sort_and_filter_values_are_400(server: Server, query: str) -> None:
    error = assert_error(server.request("GET", f"/v3/images?{query}"), 400, "invalid_parameter")
    assert error["message"].startswith(("sort must be one of newest, oldest, name, size",
                                        "missing_alt_text must be true or false"))
