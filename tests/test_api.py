"""The tenant API at /v3/images: auth, tenants, resources, paging, search, PATCH, DELETE and
the JSON error shape, against a real server (CONTRACT.md: Auth, Routes, Resources, Headers,
Errors)."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import images
from tests.api_helpers import (
    assert_error,
    assert_image,
    db_query,
    list_images,
    parse_time,
    random_image_id,
    uploaded,
)
from tests.conftest import Response, Server, multipart

# -- auth -------------------------------------------------------------------------------


def _routes(image_id: str) -> list[tuple[str, str, bytes | None]]:
    return [
        ("GET", "/v3/images", None),
        ("GET", "/v3/images/", None),
        ("POST", "/v3/images", b""),
        ("GET", "/v3/images/folders", None),
        ("GET", f"/v3/images/{image_id}", None),
        ("PATCH", f"/v3/images/{image_id}", b'{"alt_text": "x"}'),
        ("DELETE", f"/v3/images/{image_id}", None),
        ("GET", "/v3/no-such-route", None),
    ]


def assert_unauthorized(resp: Response, code: str) -> None:
    assert_error(resp, 401, code)
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.split()[0] == "Bearer", challenge


def test_every_v3_route_needs_a_key(server: Server) -> None:
    image = uploaded(server, images.png())
    for method, path, body in _routes(image["id"]):
        resp = server.request(method, path, body=body, key=None)
        assert_unauthorized(resp, "missing_api_key")
    # Nothing changed behind the 401s.
    assert server.request("GET", f"/v3/images/{image['id']}").json() == image


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("Basic {key}", "missing_api_key"),
        ("Token {key}", "missing_api_key"),
        ("{key}", "missing_api_key"),
        ("Bearer", "missing_api_key"),
        ("Bearer    ", "missing_api_key"),
        ("Bearer pk_short", "invalid_api_key"),
        ("Bearer {key}x", "invalid_api_key"),
        ("Bearer {key_id_only}", "invalid_api_key"),
        ("Bearer not a key at all", "invalid_api_key"),
        ("Bearer {unknown}", "invalid_api_key"),
        ("Bearer {wrong_secret}", "invalid_api_key"),
    ],
)
def test_bad_authorization_is_401(server: Server, header: str, code: str) -> None:
    key = server.api_key
    prefix, key_id, secret = key.split("_")
    value = header.format(
        key=key,
        key_id_only=f"{prefix}_{key_id}",
        unknown=f"pk_{'A' * 16}_{secret}",
        wrong_secret=f"pk_{key_id}_{'B' * 43}",
    )
    resp = server.request("GET", "/v3/images", headers={"Authorization": value}, key=None)
    assert_unauthorized(resp, code)


def test_unknown_key_and_wrong_secret_are_indistinguishable(server: Server) -> None:
    _, key_id, secret = server.api_key.split("_")
    unknown = server.request("GET", "/v3/images", key=f"pk_{'A' * 16}_{secret}")
    wrong = server.request("GET", "/v3/images", key=f"pk_{key_id}_{'B' * 43}")
    assert_unauthorized(unknown, "invalid_api_key")
    assert (unknown.status, unknown.header_dict(), unknown.body) == (
        wrong.status,
        wrong.header_dict(),
        wrong.body,
    )


def test_bearer_scheme_is_case_insensitive(server: Server) -> None:
    # RFC 9110 11.1: the auth scheme is a case-insensitive token.
    resp = server.request(
        "GET", "/v3/images", headers={"Authorization": f"bearer {server.api_key}"}, key=None
    )
    assert resp.status == 200, resp.body


def test_revoked_key_is_refused_at_once(server: Server) -> None:
    key = server.new_key("acme")
    key_id = key.split("_")[1]
    assert server.request("GET", "/v3/images", key=key).status == 200
    assert server.call(server.app.keys.revoke(key_id)) is True
    assert_unauthorized(server.request("GET", "/v3/images", key=key), "invalid_api_key")
    # Other keys are untouched.
    assert server.request("GET", "/v3/images").status == 200


@pytest.mark.embedded_only
def test_keys_are_stored_only_as_hashes(server: Server) -> None:
    other = server.new_key("acme")
    for key in (server.api_key, other):
        assert server.request("GET", "/v3/images", key=key).status == 200
        assert server.upload(images.png(), key=key).status == 201
    stored = b"".join(p.read_bytes() for p in server.data_dir.rglob("*") if p.is_file())
    assert len(stored) > 0
    for key in (server.api_key, other):
        secret = key.rsplit("_", 1)[1]
        assert secret.encode() not in stored
        assert key.encode() not in stored
        # Nor in any encoding a careless store might use.
        assert secret.encode("utf-16-le") not in stored
    for key in (server.api_key, other):
        _, key_id, secret = key.split("_")
        rows = db_query(
            server.data_dir, "SELECT secret_sha256 FROM api_keys WHERE id = ?", (key_id,)
        )
        assert [bytes(r[0]) for r in rows] == [hashlib.sha256(secret.encode()).digest()]


# -- tenants ----------------------------------------------------------------------------


def test_another_tenants_image_is_404_exactly_like_an_unknown_one(server: Server) -> None:
    image = uploaded(server, images.png(), "secret.png", alt_text="Board deck", folder="private")
    intruder = server.new_key("intruder")
    unknown = random_image_id()
    for method, body in (("GET", None), ("PATCH", b'{"alt_text": "pwned"}'), ("DELETE", None)):
        theirs = server.request(method, f"/v3/images/{image['id']}", body=body, key=intruder)
        missing = server.request(method, f"/v3/images/{unknown}", body=body, key=intruder)
        assert_error(theirs, 404)
        assert theirs.status == missing.status
        assert theirs.json() == missing.json()
        assert theirs.header_dict() == missing.header_dict()
    # The owner still sees it, unchanged and not deleted.
    resp = server.request("GET", f"/v3/images/{image['id']}")
    assert resp.status == 200
    assert resp.json() == image
    assert server.request("GET", f"/i/{image['id']}").status == 200


def test_listing_folders_and_search_only_show_the_tenants_own_images(server: Server) -> None:
    mine = uploaded(server, images.png(), "holiday.png", alt_text="beach", folder="trips")
    other = server.new_key("other")
    theirs = uploaded(server, images.gif(), "holiday.gif", folder="work", key=other)

    assert list_images(server, key=other) == {
        "images": [theirs],
        "page": 1,
        "page_size": 25,
        "total": 1,
    }
    assert list_images(server)["images"] == [mine]
    for query in ("search=holiday", "search=ho", "search=h", "search=beach", "folder=trips"):
        found = list_images(server, query, key=other)
        assert mine["id"] not in [i["id"] for i in found["images"]], query
    assert list_images(server, "folder=trips", key=other)["total"] == 0
    assert list_images(server, "search=beach", key=other)["total"] == 0
    assert server.request("GET", "/v3/images/folders", key=other).json() == {"folders": ["work"]}
    assert server.request("GET", "/v3/images/folders").json() == {"folders": ["trips"]}


# -- resources --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "mime", "size"),
    [
        (lambda: images.png(120, 80), "image/png", (120, 80)),
        (lambda: images.png(33, 21, mode="RGBA"), "image/png", (33, 21)),
        (lambda: images.png16(40, 30), "image/png", (40, 30)),
        (lambda: images.jpeg(90, 70), "image/jpeg", (90, 70)),
        (lambda: images.webp(50, 60), "image/webp", (50, 60)),
        (lambda: images.gif(70, 40, frames=4), "image/gif", (70, 40)),
        (lambda: images.animated_webp(30, 20, frames=3), "image/webp", (30, 20)),
    ],
)
def test_upload_returns_the_whole_image_response(
    server: Server, make: Any, mime: str, size: tuple[int, int]
) -> None:
    data = make()
    before = datetime.now(UTC).replace(microsecond=0)
    # Name and declared type lie: the type comes from the bytes.
    resp = server.upload(data, "picture.bmp", content_type="text/plain")
    after = datetime.now(UTC)
    assert resp.status == 201, resp.body
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers["Cache-Control"] == "no-store"
    image = resp.json()
    assert_image(image)
    assert len(image["id"]) >= 4 + 22  # >= 96 random bits, URL-safe
    assert resp.headers["Location"].endswith(f"/v3/images/{image['id']}")
    base = f"http://127.0.0.1:{server.port}"
    assert image == {
        "id": image["id"],
        "filename": "picture.bmp",
        "alt_text": "",
        "folder": None,
        "mime_type": mime,
        "size_bytes": len(data),
        "width": size[0],
        "height": size[1],
        "sha256": hashlib.sha256(data).hexdigest(),
        "url": f"{base}/i/{image['id']}",
        "thumbnail_url": f"{base}/i/{image['id']}?variant=thumbnail",
        "created_at": image["created_at"],
        "updated_at": image["created_at"],
    }
    assert before - timedelta(seconds=1) <= parse_time(image["created_at"]) <= after
    # The Location names the resource, and GET returns exactly what the upload returned.
    got = server.request("GET", resp.headers["Location"].removeprefix(base))
    assert got.status == 200
    assert got.headers["Cache-Control"] == "no-store"
    assert got.json() == image
    served = server.request("GET", f"/i/{image['id']}")
    assert served.status == 200
    assert served.body == data
    assert served.headers["Content-Type"] == mime


def test_upload_with_alt_text_and_folder(server: Server) -> None:
    resp = server.upload(images.png(), "spring-sale.png", alt_text="Spring sale", folder="news")
    assert resp.status == 201
    image = resp.json()
    assert (image["filename"], image["alt_text"], image["folder"]) == (
        "spring-sale.png",
        "Spring sale",
        "news",
    )
    # Fields may come before the file, as some clients send them.
    body, ctype = multipart(
        [
            ("folder", "news", None, None),
            ("alt_text", "Été, 日本", None, None),
            ("file", images.jpeg(), "b.jpg", "image/jpeg"),
        ]
    )
    resp = server.request("POST", "/v3/images", body=body, headers={"Content-Type": ctype})
    assert resp.status == 201, resp.body
    assert (resp.json()["alt_text"], resp.json()["folder"]) == ("Été, 日本", "news")


def test_ids_are_unique_and_unguessable(server: Server) -> None:
    data = images.png()
    ids = [uploaded(server, data)["id"] for _ in range(20)]
    assert len(set(ids)) == 20
    # Random, not a counter or a clock: both ends of every id differ from all others.
    assert len({i[4:12] for i in ids}) == 20
    assert len({i[-8:] for i in ids}) == 20


def test_urls_come_from_the_request_host(server: Server) -> None:
    body, ctype = multipart([("file", images.png(), "a.png", "image/png")])
    host = "photos.example.org:8443"
    resp = server.request(
        "POST", "/v3/images", body=body, headers={"Content-Type": ctype, "Host": host}
    )
    assert resp.status == 201
    image = resp.json()
    assert image["url"] == f"http://{host}/i/{image['id']}"
    assert image["thumbnail_url"] == f"http://{host}/i/{image['id']}?variant=thumbnail"
    for path in (f"/v3/images/{image['id']}", "/v3/images"):
        got = server.request("GET", path, headers={"Host": "other.example:81"}).json()
        got = got["images"][0] if "images" in got else got
        assert got["url"] == f"http://other.example:81/i/{image['id']}"


def test_urls_come_from_public_url_when_given(server_factory: Any) -> None:
    srv = server_factory(public_url="https://img.example.com")
    resp = srv.upload(images.png(), "a.png")
    assert resp.status == 201
    image = resp.json()
    assert image["url"] == f"https://img.example.com/i/{image['id']}"
    assert image["thumbnail_url"] == f"https://img.example.com/i/{image['id']}?variant=thumbnail"
    headers = {"Host": "internal:9999"}
    assert srv.request("GET", f"/v3/images/{image['id']}", headers=headers).json() == image
    assert srv.request("GET", "/v3/images", headers=headers).json()["images"] == [image]
    patched = srv.request("PATCH", f"/v3/images/{image['id']}", json_body={"folder": "f"}).json()
    assert patched["url"] == image["url"]


def test_images_route_with_and_without_trailing_slash(server: Server) -> None:
    body, ctype = multipart([("file", images.png(), "slash.png", "image/png")])
    resp = server.request("POST", "/v3/images/", body=body, headers={"Content-Type": ctype})
    assert resp.status == 201, resp.body
    image = resp.json()
    uploaded(server, images.gif(), "noslash.gif")
    plain = server.request("GET", "/v3/images?page_size=10")
    slash = server.request("GET", "/v3/images/?page_size=10")
    assert plain.status == slash.status == 200
    assert plain.json() == slash.json()
    assert plain.json()["total"] == 2
    assert image in plain.json()["images"]


def test_empty_library(server: Server) -> None:
    assert list_images(server) == {"images": [], "page": 1, "page_size": 25, "total": 0}
    assert server.request("GET", "/v3/images/folders").json() == {"folders": []}


@pytest.mark.embedded_only
def test_list_is_newest_first_also_within_one_second(server: Server) -> None:
    ids = [uploaded(server, images.png(10 + i, 10))["id"] for i in range(6)]
    # Whatever the clock did, give them all the same timestamp: upload order must decide.
    db_query(
        server.data_dir,
        "UPDATE images SET created_at = '2026-01-01T00:00:00Z', updated_at = created_at",
    )
    listed = list_images(server)
    assert [i["id"] for i in listed["images"]] == ids[::-1]
    assert listed["total"] == 6
    # Timestamps going backwards (a clock step) do not reorder the list either.
    for n, image_id in enumerate(ids):
        db_query(
            server.data_dir,
            "UPDATE images SET created_at = ? WHERE id = ?",
            (f"2026-01-01T00:00:{59 - n:02d}Z", image_id),
        )
    assert [i["id"] for i in list_images(server)["images"]] == ids[::-1]


def test_pages_never_overlap_or_skip(server: Server) -> None:
    ids = [uploaded(server, images.png(8 + i, 8))["id"] for i in range(7)]
    newest_first = ids[::-1]
    seen: list[str] = []
    for page in (1, 2, 3):
        body = list_images(server, f"page={page}&page_size=3")
        assert (body["page"], body["page_size"], body["total"]) == (page, 3, 7)
        expected = newest_first[(page - 1) * 3 : page * 3]
        assert body["images"] == [server.request("GET", f"/v3/images/{i}").json() for i in expected]
        seen += [i["id"] for i in body["images"]]
    assert seen == newest_first
    assert list_images(server, "page=4&page_size=3") == {
        "images": [],
        "page": 4,
        "page_size": 3,
        "total": 7,
    }
    assert list_images(server, "page=1000000&page_size=100")["images"] == []
    # Defaults and the limits themselves.
    assert list_images(server)["page_size"] == 25
    assert len(list_images(server, "page_size=1")["images"]) == 1
    assert list_images(server, "page_size=100")["page_size"] == 100


def test_folder_filter_is_an_exact_case_sensitive_match(server: Server) -> None:
    by_folder = {
        folder: uploaded(server, images.png(10, 10 + n), folder=folder)["id"]
        for n, folder in enumerate(["news", "News", "newsletters", "new", "news letters", "été"])
    }
    unfiled = uploaded(server, images.png(12, 12))["id"]
    for folder, image_id in by_folder.items():
        body = list_images(server, f"folder={quote(folder)}")
        assert [i["id"] for i in body["images"]] == [image_id], folder
        assert body["total"] == 1
        assert body["images"][0]["folder"] == folder
    assert list_images(server, "folder=ne")["total"] == 0
    assert list_images(server, "folder=%C3%89T%C3%89")["total"] == 0  # ÉTÉ: case matters
    assert list_images(server, "folder=news%25")["total"] == 0
    # No folder parameter: everything, including the unfiled image.
    assert list_images(server)["total"] == 7
    assert unfiled in [i["id"] for i in list_images(server)["images"]]


SEARCH_CORPUS: dict[str, tuple[str, str]] = {
    # label: (filename, alt_text)
    "ete": ("summer-sale.png", "Été à Paris"),
    "percent": ("winter.png", "100% off"),
    "underscore": ("a_c.png", ""),
    "abc": ("abc.png", ""),
    "backslash": ("path.png", "C:\\temp\\x"),
    "quote": ("quote.png", 'say "hi" now'),
    "greek": ("ΑΘΗΝΑ.png", ""),
    "plain": ("plain.png", "ete sans accents"),
    "fts": ("x*y OR z.png", "NEAR(b c) -d ^e"),
    "cyrillic": ("privet.png", "ПРИВЕТ мир"),
}

SEARCH_CASES: list[tuple[str, set[str]]] = [
    # Case-insensitive and Unicode-aware, at every needle length.
    ("ÉTÉ", {"ete"}),
    ("été", {"ete"}),
    ("ÉT", {"ete"}),
    ("É", {"ete"}),
    ("é à p", {"ete"}),
    ("SUMMER", {"ete"}),
    ("mmer-s", {"ete"}),
    ("αθηνα", {"greek"}),
    ("αθ", {"greek"}),
    ("θ", {"greek"}),
    ("привет", {"cyrillic"}),
    ("МИР", {"cyrillic"}),
    ("ми", {"cyrillic"}),
    # A substring match, not accent-insensitive.
    ("ete", {"plain"}),
    # Literal: % _ \ " and FTS syntax are ordinary characters.
    ("%", {"percent"}),
    ("0%", {"percent"}),
    ("100%", {"percent"}),
    ("%%", set()),
    ("_", {"underscore"}),
    ("a_", {"underscore"}),
    ("a_c", {"underscore"}),
    ("abc", {"abc"}),
    ("\\", {"backslash"}),
    ("\\t", {"backslash"}),
    ("C:\\temp", {"backslash"}),
    ('"', {"quote"}),
    ('"h', {"quote"}),
    ('"hi"', {"quote"}),
    ('y "hi" n', {"quote"}),
    ("*", {"fts"}),
    ("x*y", {"fts"}),
    ("OR", {"fts"}),
    ("OR z", {"fts"}),
    ("NEAR(", {"fts"}),
    ("-d ^e", {"fts"}),
    ("AND", set()),
    ("zzz", set()),
    ("q", {"quote"}),
    (".PNG", set(SEARCH_CORPUS)),
]


def test_search(server: Server) -> None:
    ids = {
        label: uploaded(server, images.png(10 + n, 10), name, alt_text=alt)["id"]
        for n, (label, (name, alt)) in enumerate(SEARCH_CORPUS.items())
    }
    labels = {v: k for k, v in ids.items()}
    failures = []
    for needle, expected in SEARCH_CASES:
        body = list_images(server, f"search={quote(needle)}&page_size=100")
        found = {labels[i["id"]] for i in body["images"]}
        if found != expected or body["total"] != len(expected):
            failures.append((needle, sorted(found), body["total"], sorted(expected)))
    assert failures == []


def _simple_flip(c: str) -> str:
    """The other case of c, where that is a one-to-one mapping (not ß -> SS, not ﬁ -> FI)."""
    other = c.lower() if c != c.lower() else c.upper()
    if len(other) != 1 or other.casefold() != c.casefold():
        return c
    return other


SEARCH_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(
            "abcXYZ019 -_%\\\"*^():.,'éÉàÀçÇœŒøØåÅ日本😀ßﬁ"
            "\u03a3\u03c3\u03c2\u0391\u03a9\u03c9\u0416\u0436\u0130\u0131\u212a"
        ),
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")),
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=SEARCH_TEXT, data=st.data())
def test_search_finds_every_substring_in_either_case(
    server: Server, text: str, data: st.DataObject
) -> None:
    """Whatever the needle's length (scan below three characters, trigram index above), a
    substring of the alt text or of the filename, in any case, finds its image."""
    if not hasattr(server, "_search_image"):
        server._search_image = uploaded(server, images.png(), "seed.png")["id"]  # type: ignore[attr-defined]
        uploaded(server, images.gif(), "decoy.gif", alt_text="decoy")
    image_id = server._search_image  # type: ignore[attr-defined]
    resp = server.request("PATCH", f"/v3/images/{image_id}", json_body={"alt_text": text})
    assert resp.status == 200, resp.body
    start = data.draw(st.integers(0, len(text) - 1))
    end = data.draw(st.integers(start + 1, len(text)))
    flips = data.draw(st.lists(st.booleans(), min_size=end - start, max_size=end - start))
    needle = "".join(
        _simple_flip(c) if flip else c for c, flip in zip(text[start:end], flips, strict=True)
    )
    found = list_images(server, f"search={quote(needle)}&page_size=100")
    assert image_id in [i["id"] for i in found["images"]], (text, needle)


def test_search_combines_with_folder_and_paging(server: Server) -> None:
    for n in range(5):
        uploaded(server, images.png(10 + n, 10), f"logo-{n}.png", folder="brand" if n % 2 else None)
    uploaded(server, images.png(30, 10), "other.png", folder="brand")
    body = list_images(server, "search=logo&folder=brand")
    assert [i["filename"] for i in body["images"]] == ["logo-3.png", "logo-1.png"]
    assert body["total"] == 2
    body = list_images(server, "search=LOGO&page=2&page_size=2")
    assert [i["filename"] for i in body["images"]] == ["logo-2.png", "logo-1.png"]
    assert body["total"] == 5
    # An empty search is no filter.
    assert list_images(server, "search=")["total"] == 6


def test_sha256_filter_lists_this_tenants_live_copies_of_the_bytes(server: Server) -> None:
    data = images.png(21, 13)
    sha = hashlib.sha256(data).hexdigest()
    first = uploaded(server, data, "a.png", folder="brand")
    second = uploaded(server, data, "b.png")
    gone = uploaded(server, data, "c.png")
    uploaded(server, images.png(22, 13), "other.png")
    uploaded(server, data, "theirs.png", key=server.new_key("other"))
    assert server.request("DELETE", f"/v3/images/{gone['id']}").status == 204
    for query in (f"sha256={sha}", f"sha256={sha.upper()}"):
        body = list_images(server, query)
        assert [i["id"] for i in body["images"]] == [second["id"], first["id"]]
        assert (body["total"], body["page"], body["page_size"]) == (2, 1, 25)
    body = list_images(server, f"sha256={sha}&folder=brand")
    assert ([i["id"] for i in body["images"]], body["total"]) == ([first["id"]], 1)
    missing = hashlib.sha256(b"never uploaded").hexdigest()
    assert list_images(server, f"sha256={missing}")["images"] == []
    for bad in ("abc", sha[:-1] + "g", sha + "0", ""):
        assert_error(server.request("GET", f"/v3/images?sha256={bad}"), 400, "invalid_parameter")


def test_search_follows_patch_and_delete(server: Server) -> None:
    image = uploaded(server, images.png(), "cat.png", alt_text="sleepy tabby")
    assert list_images(server, "search=tabby")["total"] == 1
    patch = server.request("PATCH", f"/v3/images/{image['id']}", json_body={"alt_text": "dog"})
    assert patch.status == 200
    for needle, total in (("tabby", 0), ("ta", 0), ("dog", 1), ("DO", 1), ("cat", 1)):
        assert list_images(server, f"search={needle}")["total"] == total, needle
    assert server.request("DELETE", f"/v3/images/{image['id']}").status == 204
    for needle in ("dog", "do", "d", "cat", "c"):
        assert list_images(server, f"search={needle}")["total"] == 0, needle


def test_folders_sorted_distinct_live_and_own(server: Server) -> None:
    made = {}
    for n, folder in enumerate(["newsletters", "branding", "B", "newsletters", "été", "a"]):
        made.setdefault(folder, []).append(
            uploaded(server, images.png(10 + n, 10), folder=folder)["id"]
        )
    uploaded(server, images.png(40, 10))  # no folder: not listed
    uploaded(server, images.png(41, 10), folder="zeta", key=server.new_key("other"))
    resp = server.request("GET", "/v3/images/folders")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.json() == {"folders": ["B", "a", "branding", "newsletters", "été"]}
    assert server.request("GET", "/v3/images/folders/").json() == resp.json()

    # A folder disappears with its last image: deleted...
    assert server.request("DELETE", f"/v3/images/{made['a'][0]}").status == 204
    # ... or moved away (PATCH to another folder, to null, to "").
    moved = server.request("PATCH", f"/v3/images/{made['B'][0]}", json_body={"folder": "a2"})
    assert moved.status == 200
    assert (
        server.request("PATCH", f"/v3/images/{made['été'][0]}", json_body={"folder": None}).json()[
            "folder"
        ]
        is None
    )
    assert (
        server.request(
            "PATCH", f"/v3/images/{made['branding'][0]}", json_body={"folder": ""}
        ).json()["folder"]
        is None
    )
    # One of two images leaving keeps the folder.
    assert server.request("DELETE", f"/v3/images/{made['newsletters'][0]}").status == 204
    assert server.request("GET", "/v3/images/folders").json() == {"folders": ["a2", "newsletters"]}


# -- PATCH ------------------------------------------------------------------------------


def _age(server: Server, image_id: str) -> None:
    """Move an image's timestamps into the past, so a change of updated_at shows."""
    db_query(
        server.data_dir,
        "UPDATE images SET created_at = '2020-01-01T00:00:00Z', "
        "updated_at = '2020-01-01T00:00:00Z' WHERE id = ?",
        (image_id,),
    )


@pytest.mark.embedded_only
def test_patch_alt_text_and_folder(server: Server) -> None:
    image = uploaded(server, images.png(), "a.png", alt_text="old", folder="f1")
    _age(server, image["id"])
    path = f"/v3/images/{image['id']}"

    resp = server.request("PATCH", path, json_body={"alt_text": "new alt"})
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    patched = resp.json()
    assert_image(patched)
    assert parse_time(patched["updated_at"]) > datetime.now(UTC) - timedelta(minutes=5)
    assert patched == {
        **image,
        "alt_text": "new alt",
        "created_at": "2020-01-01T00:00:00Z",
        "updated_at": patched["updated_at"],
    }
    assert server.request("GET", path).json() == patched

    resp = server.request("PATCH", path, json_body={"folder": "f2"})
    assert resp.json() == {**patched, "folder": "f2", "updated_at": resp.json()["updated_at"]}

    resp = server.request("PATCH", path, json_body={"alt_text": "", "folder": "f3"})
    assert (resp.json()["alt_text"], resp.json()["folder"]) == ("", "f3")

    for cleared in (None, ""):
        server.request("PATCH", path, json_body={"folder": "x"})
        resp = server.request("PATCH", path, json_body={"folder": cleared})
        assert resp.status == 200
        assert resp.json()["folder"] is None
        assert server.request("GET", path).json()["folder"] is None

    # The immutable parts never change.
    final = server.request("GET", path).json()
    for name in ("id", "filename", "mime_type", "size_bytes", "width", "height", "sha256", "url"):
        assert final[name] == image[name]
    assert final["created_at"] == "2020-01-01T00:00:00Z"


def test_patch_limits_are_inclusive(server: Server) -> None:
    image = uploaded(server, images.png())
    path = f"/v3/images/{image['id']}"
    alt = "é" * 1000  # characters, not bytes
    folder = "😀" * 100
    resp = server.request("PATCH", path, json_body={"alt_text": alt, "folder": folder})
    assert resp.status == 200, resp.body
    assert (resp.json()["alt_text"], resp.json()["folder"]) == (alt, folder)
    assert server.request("GET", "/v3/images/folders").json() == {"folders": [folder]}


@pytest.mark.embedded_only
def test_patch_with_empty_object_changes_nothing(server: Server) -> None:
    image = uploaded(server, images.png(), alt_text="keep", folder="keep")
    _age(server, image["id"])
    resp = server.request("PATCH", f"/v3/images/{image['id']}", json_body={})
    assert resp.status == 200
    assert resp.json() == {
        **image,
        "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2020-01-01T00:00:00Z",
    }


@pytest.mark.parametrize(
    "body",
    [
        b'{"title": "x"}',
        b'{"alt_text": "x", "filename": "evil.png"}',
        b'{"id": "img_other"}',
        b'{"alt_text": 5}',
        b'{"alt_text": null}',
        b'{"alt_text": ["x"]}',
        b'{"alt_text": {"a": 1}}',
        b'{"folder": 5}',
        b'{"folder": true}',
        b'{"folder": []}',
        b"{",
        b"",
        b"not json",
        b'{"alt_text": "x",}',
        b"[]",
        b'["alt_text"]',
        b'"alt_text"',
        b"null",
        b"42",
        b"\xff\xfe{}",
        b'{"alt_text": "\xff"}',
        json.dumps({"alt_text": "x" * 1001}).encode(),
        json.dumps({"alt_text": "é" * 1001}).encode(),
        json.dumps({"folder": "f" * 101}).encode(),
        json.dumps({"folder": "a\nb"}).encode(),
        json.dumps({"folder": "a\x00b"}).encode(),
        json.dumps({"folder": "tab\there"}).encode(),
        json.dumps({"folder": "del\x7f"}).encode(),
        json.dumps({"folder": "c1\x85"}).encode(),
        b'{"alt_text": "\\ud800"}',
        b"[" * 60_000,  # deeper than the JSON parser recurses
    ],
)
def test_patch_rejects_bad_bodies(server: Server, body: bytes) -> None:
    image = uploaded(server, images.png(), alt_text="before", folder="before")
    path = f"/v3/images/{image['id']}"
    resp = server.request("PATCH", path, body=body, headers={"Content-Type": "application/json"})
    assert_error(resp, 400)
    assert server.request("GET", path).json() == image


def test_patch_body_too_large_is_413(server: Server) -> None:
    image = uploaded(server, images.png())
    body = json.dumps({"alt_text": "x" * 200_000}).encode()
    resp = server.request("PATCH", f"/v3/images/{image['id']}", body=body)
    assert_error(resp, 413)


def test_patch_unknown_id_is_404(server: Server) -> None:
    resp = server.request("PATCH", f"/v3/images/{random_image_id()}", json_body={"alt_text": "x"})
    assert_error(resp, 404, "image_not_found")


# -- DELETE -----------------------------------------------------------------------------


def test_delete(server: Server) -> None:
    keep = uploaded(server, images.gif(), "keep.gif")
    image = uploaded(server, images.png(), "gone.png", folder="f")
    path = f"/v3/images/{image['id']}"
    assert server.request("GET", f"/i/{image['id']}").status == 200

    resp = server.request("DELETE", path)
    assert resp.status == 204
    assert resp.body == b""
    assert resp.headers["Cache-Control"] == "no-store"
    assert "Server" not in resp.headers

    assert_error(server.request("GET", path), 404, "image_not_found")
    assert_error(server.request("PATCH", path, json_body={"alt_text": "x"}), 404)
    assert_error(server.request("DELETE", path), 404, "image_not_found")
    for variant in ("", "?variant=thumbnail"):
        gone = server.request("GET", f"/i/{image['id']}{variant}")
        assert gone.status == 410, (variant, gone.status)
    assert list_images(server) == {"images": [keep], "page": 1, "page_size": 25, "total": 1}
    assert server.request("GET", "/v3/images/folders").json() == {"folders": []}


def test_delete_unknown_id_is_404(server: Server) -> None:
    assert_error(server.request("DELETE", f"/v3/images/{random_image_id()}"), 404)
    assert_error(server.request("DELETE", "/v3/images/not-even-an-id"), 404)


# -- errors and headers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=-1",
        "page=abc",
        "page=",
        "page=1.5",
        "page=1e3",
        "page=%201",
        "page=+1",
        "page=0x10",
        "page=%EF%BC%91",  # a full-width digit one
        "page=99999999999999999999999",
        "page=9223372036854775808",
        "page=1&page=2",
        "page_size=0",
        "page_size=101",
        "page_size=-5",
        "page_size=ten",
        "page_size=25.0",
        "page_size=99999999999999999999999",
        "search=%FF",
        "folder=%FF%FE",
    ],
)
def test_bad_query_values_are_400(server: Server, query: str) -> None:
    uploaded(server, images.png())
    error = assert_error(server.request("GET", f"/v3/images?{query}"), 400)
    assert error["code"] == "invalid_parameter"


def test_unknown_v3_route_is_json_404(server: Server) -> None:
    image = uploaded(server, images.png())
    for path in (
        "/v3",
        "/v3/",
        "/v3/imagez",
        "/v3/images/folders/extra",
        f"/v3/images/{image['id']}/thumbnail",
        "/v3/keys",
    ):
        assert_error(server.request("GET", path), 404)


def test_unsupported_methods_are_json_405(server: Server) -> None:
    image = uploaded(server, images.png())
    for method, path in (
        ("PUT", "/v3/images"),
        ("DELETE", "/v3/images"),
        ("POST", f"/v3/images/{image['id']}"),
        ("PUT", f"/v3/images/{image['id']}"),
        ("POST", "/v3/images/folders"),
    ):
        resp = server.request(method, path, body=b"{}")
        assert_error(resp, 405)
    assert server.request("GET", f"/v3/images/{image['id']}").json() == image


def test_no_store_and_no_server_header_on_every_v3_response(server: Server) -> None:
    image = uploaded(server, images.png(), folder="f")
    responses = [
        server.upload(images.png(20, 20)),
        server.request("GET", "/v3/images"),
        server.request("GET", "/v3/images/folders"),
        server.request("GET", f"/v3/images/{image['id']}"),
        server.request("PATCH", f"/v3/images/{image['id']}", json_body={"alt_text": "a"}),
        server.request("GET", "/v3/images?page=0"),
        server.request("GET", "/v3/images", key=None),
        server.request("GET", f"/v3/images/{random_image_id()}"),
        server.upload(b"not an image"),
        server.upload(images.padded_png(10 * 1024 * 1024 + 1)),
        server.request("DELETE", f"/v3/images/{image['id']}"),
    ]
    for resp in responses:
        assert resp.headers.get("Cache-Control") == "no-store", resp.status
        assert "Server" not in resp.headers
    assert [r.status for r in responses] == [201, 200, 200, 200, 200, 400, 401, 404, 400, 413, 204]


def test_no_response_names_the_server(server: Server) -> None:
    image = uploaded(server, images.png())
    for method, path in (
        ("GET", "/"),
        ("GET", "/static/app.js"),
        ("GET", "/no/such/page"),
        ("GET", f"/i/{image['id']}"),
        ("HEAD", f"/i/{image['id']}"),
        ("GET", f"/i/{image['id']}?variant=thumbnail"),
        ("GET", f"/i/{random_image_id()}"),
        ("GET", f"/i/{image['id']}?variant=huge"),
        ("POST", f"/i/{image['id']}"),
    ):
        resp = server.request(method, path)
        assert "Server" not in resp.headers, (method, path)
        assert "tornado" not in str(resp.headers).lower(), (method, path)
        assert b"tornado" not in resp.body.lower(), (method, path)


def test_odd_input_is_never_a_500(server: Server) -> None:
    image = uploaded(server, images.png(), alt_text="x")
    long_id = "img_" + "a" * 10_000
    requests: list[tuple[str, str, bytes | None, dict[str, str]]] = [
        ("GET", "/v3/images/%00", None, {}),
        ("GET", "/v3/images/%FF%FE", None, {}),
        ("GET", f"/v3/images/{long_id}", None, {}),
        ("GET", "/v3/images/img_%C3%A9%F0%9F%98%80", None, {}),
        ("GET", "/v3/images/..%2F..%2Fetc%2Fpasswd", None, {}),
        ("PATCH", "/v3/images/%FF", b'{"alt_text": "x"}', {}),
        ("DELETE", "/v3/images/%00", None, {}),
        ("GET", "/v3/images?search=%00", None, {}),
        ("GET", "/v3/images?search=a%00b%00c", None, {}),
        ("GET", "/v3/images?search=" + "x" * 201, None, {}),
        ("GET", "/v3/images?search=" + "x" * 200, None, {}),
        ("GET", "/v3/images?search=" + "%22" * 50, None, {}),
        ("GET", "/v3/images?search=%E2%80%8B", None, {}),  # a zero-width space
        ("GET", "/v3/images?folder=" + "f" * 10_000, None, {}),
        ("GET", "/v3/images?folder=%00", None, {}),
        ("GET", "/v3/images?unknown=1&page=1", None, {}),
        ("GET", "/v3/images", None, {"Authorization": "Bearer " + "k" * 10_000}),
        ("GET", "/v3/images", None, {"Authorization": "Bearer pk_\u00e9\u00e9"}),
        (
            "PATCH",
            f"/v3/images/{image['id']}",
            b'{"alt_text": "x"}',
            {"Content-Type": "text/plain; charset=latin-1"},
        ),
        ("PATCH", f"/v3/images/{image['id']}", b'{"alt_text": "x", "alt_text": 5}', {}),
        ("PATCH", f"/v3/images/{image['id']}", b'{"alt_text": 1e999}', {}),
        ("PATCH", f"/v3/images/{image['id']}", b'{"folder": NaN}', {}),
    ]
    statuses = []
    for method, path, body, headers in requests:
        resp = server.request(method, path, body=body, headers=headers)
        statuses.append((method, path[:60], resp.status))
        assert resp.status < 500, (method, path[:80], resp.body)
        if resp.status >= 400:
            assert_error(resp, resp.status)
    status_of = {path: status for _, path, status in statuses}
    assert status_of["/v3/images?search=%00"] == 400
    assert [s for _, p, s in statuses if p.startswith("/v3/images?search=xxx")] == [400, 200]
    assert server.request("GET", f"/v3/images/{image['id']}").json()["alt_text"] == "x"


def test_short_and_long_searches_fold_case_alike(server: Server) -> None:
    """Below three characters the search scans, above it uses the trigram index: both fold
    case one character to one character, so neither finds what the other would not."""
    glass = uploaded(server, images.png(), "glass.png")["id"]
    strasse = uploaded(server, images.png(12, 12), "straße.png")["id"]
    micro = uploaded(server, images.png(14, 14), "\u00b5-chart.png")["id"]  # micro sign
    for needle, expected in [
        ("\u039c", {micro}),  # Greek capital mu: its simple fold is the micro sign's
        ("\u039c-CH", {micro}),
        ("ß", {strasse}),
        ("SS", {glass}),
        ("ASS", {glass}),
        ("STRASSE", set()),
        ("STRAßE", {strasse}),
        ("aßE", {strasse}),
    ]:
        found = list_images(server, f"search={quote(needle)}")
        assert {i["id"] for i in found["images"]} == expected, needle


def test_list_total_follows_uploads_and_deletes_per_tenant(server: Server) -> None:
    other = server.new_key("other")
    ids = [uploaded(server, images.png(10 + n, 10), f"{n}.png")["id"] for n in range(3)]
    uploaded(server, images.png(), "theirs.png", key=other)
    assert list_images(server)["total"] == 3
    assert server.request("DELETE", f"/v3/images/{ids[0]}").status == 204
    assert server.request("DELETE", f"/v3/images/{ids[0]}").status == 404  # counted once
    assert list_images(server)["total"] == 2
    assert list_images(server, key=other)["total"] == 1


def test_search_totals_count_only_this_tenants_matches(server: Server) -> None:
    other = server.new_key("other")
    for n in range(3):
        uploaded(server, images.png(10 + n, 10), f"sale-{n}.png")
    uploaded(server, images.png(), "sale-theirs.png", key=other)
    mine = list_images(server, "search=sale")
    assert (mine["total"], len(mine["images"])) == (3, 3)
    theirs = list_images(server, "search=SALE", key=other)
    assert (theirs["total"], [i["filename"] for i in theirs["images"]]) == (1, ["sale-theirs.png"])
    page = list_images(server, "search=sale&page_size=2&page=2")
    assert (page["total"], [i["filename"] for i in page["images"]]) == (3, ["sale-0.png"])


def test_folders_follow_every_upload_move_clear_and_delete(server: Server) -> None:
    """The folder list is kept by triggers: after a random mix of changes it must equal the
    folders of the images that are listed."""
    rng = random.Random(7)
    names = ["a", "b", "c", "Ünï", "d/e"]
    ids: list[str] = []
    for step in range(40):
        action = rng.choice(["upload", "upload", "move", "clear", "delete"])
        if action == "upload" or not ids:
            folder = rng.choice([*names, None])
            ids.append(
                uploaded(server, images.png(8 + step, 8), f"{step}.png", folder=folder)["id"]
            )
        elif action == "move":
            body = {"folder": rng.choice(names)}
            assert (
                server.request("PATCH", f"/v3/images/{rng.choice(ids)}", json_body=body).status
                == 200
            )
        elif action == "clear":
            body = {"folder": rng.choice([None, ""])}
            assert (
                server.request("PATCH", f"/v3/images/{rng.choice(ids)}", json_body=body).status
                == 200
            )
        else:
            victim = ids.pop(rng.randrange(len(ids)))
            assert server.request("DELETE", f"/v3/images/{victim}").status == 204
        listed = list_images(server, "page_size=100")["images"]
        expected = sorted({i["folder"] for i in listed if i["folder"] is not None})
        assert server.request("GET", "/v3/images/folders").json() == {"folders": expected}, step
