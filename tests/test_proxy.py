"""The public proxy /i/{id}: headers, preconditions and ranges edge by edge (RFC 9110),
GET/HEAD parity, thumbnails, 404/410, and deletion while a body streams.

Most tests run twice: on a small image (served from the in-memory cache) and on a large one
(streamed from its file), so both paths of the handler are held to the same answers.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import socket
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image

from tests import images
from tests.conftest import Response, Server

CACHE = "public, max-age=31536000, immutable"
CSP = "default-src 'none'; sandbox"


@dataclass
class Uploaded:
    id: str
    data: bytes
    mime: str
    json: dict[str, object]

    @property
    def path(self) -> str:
        return f"/i/{self.id}"

    @property
    def etag(self) -> str:
        return f'"{hashlib.sha256(self.data).hexdigest()}"'

    @property
    def last_modified(self) -> str:
        created = datetime.strptime(str(self.json["created_at"]), "%Y-%m-%dT%H:%M:%SZ")
        return email.utils.format_datetime(created.replace(tzinfo=UTC), usegmt=True)


def upload(server: Server, data: bytes, name: str = "x.png", mime: str = "image/png") -> Uploaded:
    resp = server.upload(data, name)
    assert resp.status == 201, resp.body
    body = resp.json()
    return Uploaded(id=body["id"], data=data, mime=mime, json=body)


@pytest.fixture(params=["handler", "fast"])
def server(request: pytest.FixtureRequest, server_factory: Any) -> Server:
    """Every proxy test runs against the plain handler and against the fast lane that
    answers hot images (appliance/fastpath.py): both must give the same answers."""
    srv: Server = server_factory(fast_path=request.param == "fast")
    srv.mode = request.param  # type: ignore[attr-defined]
    return srv


@pytest.fixture(params=["small", "large"])
def img(request: pytest.FixtureRequest, server: Server) -> Uploaded:
    # A small body is kept in memory; 3 MiB is over that limit (1 MiB) and streams from
    # its file. With the fast lane on, the cache is warmed first so that it answers.
    data = images.png(200, 150) if request.param == "small" else images.padded_png(3 << 20)
    image = upload(server, data)
    if server.mode == "fast":  # type: ignore[attr-defined]
        for path in (image.path, image.path + "?variant=thumbnail"):
            assert server.request("GET", path).status == 200
    return image


def get(server: Server, path: str, **headers: str) -> Response:
    return server.request("GET", path, headers=headers)


def image_headers(img: Uploaded, length: int, **extra: str) -> dict[str, str]:
    expected = {
        "content-type": img.mime,
        "content-length": str(length),
        "etag": img.etag,
        "last-modified": img.last_modified,
        "cache-control": CACHE,
        "accept-ranges": "bytes",
        "x-content-type-options": "nosniff",
        "content-security-policy": CSP,
        "cross-origin-resource-policy": "cross-origin",
        "referrer-policy": "no-referrer",
    }
    expected.update(extra)
    return expected


def not_modified_headers(img: Uploaded) -> dict[str, str]:
    h = image_headers(img, 0)
    del h["content-type"], h["content-length"]
    return h


def error_json(status: int, code: str) -> tuple[int, str]:
    return status, code


# -- the whole body -------------------------------------------------------------------------


def test_get_sends_the_exact_bytes_and_every_header(server: Server, img: Uploaded) -> None:
    resp = get(server, img.path)
    assert resp.status == 200
    assert resp.header_dict() == image_headers(img, len(img.data))
    assert resp.body == img.data


def test_no_server_banner(server: Server, img: Uploaded) -> None:
    for path in (img.path, "/i/img_nope", "/v3/images", "/"):
        assert server.request("GET", path).headers.get("Server") is None


def test_query_strings_other_than_variant_are_ignored(server: Server, img: Uploaded) -> None:
    resp = get(server, img.path + "?utm_source=newsletter")
    assert resp.status == 200
    assert resp.body == img.data


# -- If-None-Match / If-Modified-Since ------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "{etag}",
        "W/{etag}",
        '"other", {etag}',
        '"a",W/{etag} , "b"',
        "*",
    ],
)
def test_if_none_match_that_matches_is_304(server: Server, img: Uploaded, header: str) -> None:
    resp = get(server, img.path, **{"If-None-Match": header.format(etag=img.etag)})
    assert resp.status == 304
    assert resp.header_dict() == not_modified_headers(img)
    assert resp.body == b""


@pytest.mark.parametrize("header", ['"other"', 'W/"other"', "garbage", '"' + "0" * 64 + '"', ""])
def test_if_none_match_that_does_not_match_is_200(
    server: Server, img: Uploaded, header: str
) -> None:
    resp = get(server, img.path, **{"If-None-Match": header})
    assert resp.status == 200
    assert resp.body == img.data


def test_matching_if_none_match_wins_over_range(server: Server, img: Uploaded) -> None:
    resp = get(server, img.path, **{"If-None-Match": img.etag, "Range": "bytes=0-9"})
    assert resp.status == 304
    assert resp.body == b""


def http_date(moment: datetime) -> str:
    return email.utils.format_datetime(moment, usegmt=True)


def test_if_modified_since_now_or_later_is_304(server: Server, img: Uploaded) -> None:
    for value in (img.last_modified, http_date(datetime.now(UTC) + timedelta(days=1))):
        resp = get(server, img.path, **{"If-Modified-Since": value})
        assert resp.status == 304, value
        assert resp.header_dict() == not_modified_headers(img)


def test_if_modified_since_earlier_is_200(server: Server, img: Uploaded) -> None:
    resp = get(server, img.path, **{"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"})
    assert resp.status == 200
    assert resp.body == img.data


def test_if_modified_since_invalid_date_is_ignored(server: Server, img: Uploaded) -> None:
    resp = get(server, img.path, **{"If-Modified-Since": "yesterday-ish"})
    assert resp.status == 200


def test_if_modified_since_is_ignored_when_if_none_match_is_present(
    server: Server, img: Uploaded
) -> None:
    far_future = http_date(datetime.now(UTC) + timedelta(days=1))
    resp = get(server, img.path, **{"If-None-Match": '"other"', "If-Modified-Since": far_future})
    assert resp.status == 200


def test_if_match_mismatch_is_412(server: Server, img: Uploaded) -> None:
    resp = get(server, img.path, **{"If-Match": '"other"'})
    assert resp.status == 412
    assert resp.json()["error"]["code"] == "precondition_failed"
    assert get(server, img.path, **{"If-Match": img.etag}).status == 200
    assert get(server, img.path, **{"If-Match": f"W/{img.etag}"}).status == 412  # strong only


def test_if_unmodified_since_in_the_past_is_412(server: Server, img: Uploaded) -> None:
    resp = get(server, img.path, **{"If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"})
    assert resp.status == 412


# -- Range ------------------------------------------------------------------------------------


def ranged(img: Uploaded, start: int, end: int) -> dict[str, str]:
    return image_headers(
        img, end - start + 1, **{"content-range": f"bytes {start}-{end}/{len(img.data)}"}
    )


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=0-0", 0, 0),
        ("bytes=10-", 10, None),
        ("bytes=-5", -5, None),
        ("bytes=5-999999999", 5, None),  # an end past the size is clamped
        ("bytes=-999999999", 0, None),  # a suffix longer than the body is all of it
        ("BYTES = 3-4", 3, 4),  # the unit is case-insensitive, whitespace is tolerated
        ("bytes=0-1, 999999999-", 0, 1),  # one satisfiable range among unsatisfiable ones
    ],
)
def test_single_range_is_206_with_the_exact_bytes(
    server: Server, img: Uploaded, spec: str, start: int, end: int | None
) -> None:
    size = len(img.data)
    first = start if start >= 0 else size + start
    last = size - 1 if end is None else end
    resp = get(server, img.path, Range=spec)
    assert resp.status == 206
    assert resp.header_dict() == ranged(img, first, last)
    assert resp.body == img.data[first : last + 1]


@pytest.mark.parametrize("spec", ["bytes={size}-", "bytes={size}-{size_plus}", "bytes=-0"])
def test_unsatisfiable_range_is_416(server: Server, img: Uploaded, spec: str) -> None:
    size = len(img.data)
    resp = get(server, img.path, Range=spec.format(size=size, size_plus=size + 5))
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{size}"
    assert resp.json() == {
        "error": {
            "status": 416,
            "code": "range_not_satisfiable",
            "message": f"The range is outside the image's {size} bytes.",
        }
    }


@pytest.mark.parametrize(
    "spec",
    [
        "bytes=abc",
        "bytes=5-2",
        "items=0-5",
        "bytes",
        "bytes=",
        "bytes=--1",
        "bytes=1-2-3",
        "bytes=0-1,4-5",
    ],  # several ranges: answered with the whole body (allowed by RFC 9110)
)
def test_malformed_unknown_or_multiple_ranges_get_the_whole_body(
    server: Server, img: Uploaded, spec: str
) -> None:
    resp = get(server, img.path, Range=spec)
    assert resp.status == 200
    assert resp.header_dict() == image_headers(img, len(img.data))
    assert resp.body == img.data


def test_if_range_with_current_strong_etag_gives_206(server: Server, img: Uploaded) -> None:
    resp = get(server, img.path, Range="bytes=0-3", **{"If-Range": img.etag})
    assert resp.status == 206
    assert resp.body == img.data[:4]


@pytest.mark.parametrize(
    "validator", ['"other"', "W/{etag}", "Sat, 01 Jan 2000 00:00:00 GMT", "not a date"]
)
def test_if_range_with_anything_else_gives_the_whole_body(
    server: Server, img: Uploaded, validator: str
) -> None:
    resp = get(server, img.path, Range="bytes=0-3", **{"If-Range": validator.format(etag=img.etag)})
    assert resp.status == 200
    assert resp.body == img.data


def test_if_range_with_the_last_modified_date_gives_206(server: Server, img: Uploaded) -> None:
    resp = get(server, img.path, Range="bytes=2-5", **{"If-Range": img.last_modified})
    assert resp.status == 206
    assert resp.body == img.data[2:6]


def test_if_range_failing_makes_an_unsatisfiable_range_irrelevant(
    server: Server, img: Uploaded
) -> None:
    resp = get(server, img.path, Range="bytes=999999999-", **{"If-Range": '"old"'})
    assert resp.status == 200


# -- HEAD answers as GET would ------------------------------------------------------------------


def assert_head_parity(server: Server, path: str, headers: dict[str, str]) -> Response:
    got = server.request("GET", path, headers=headers)
    head = server.request("HEAD", path, headers=headers)
    assert head.status == got.status
    assert head.header_dict() == got.header_dict()
    assert head.body == b""
    return got


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("plain", 200),
        ("range", 206),
        ("not_modified", 304),
        ("unsatisfiable", 416),
        ("unknown", 404),
        ("deleted", 410),
        ("bad_variant", 400),
        ("thumbnail", 200),
    ],
)
def test_head_sends_exactly_the_headers_of_get(
    server: Server, img: Uploaded, case: str, status: int
) -> None:
    path, headers = img.path, {}
    if case == "range":
        headers = {"Range": "bytes=1-4"}
    elif case == "not_modified":
        headers = {"If-None-Match": img.etag}
    elif case == "unsatisfiable":
        headers = {"Range": "bytes=999999999-"}
    elif case == "unknown":
        path = "/i/img_doesNotExist0000000000"
    elif case == "deleted":
        assert server.request("DELETE", f"/v3/images/{img.id}").status == 204
    elif case == "bad_variant":
        path += "?variant=huge"
    elif case == "thumbnail":
        path += "?variant=thumbnail"
    got = assert_head_parity(server, path, headers)
    assert got.status == status


# -- 404 and 410 ------------------------------------------------------------------------------


def test_unknown_id_is_404_json(server: Server) -> None:
    resp = get(server, "/i/img_doesNotExist0000000000")
    assert resp.status == 404
    assert resp.json() == {
        "error": {"status": 404, "code": "image_not_found", "message": "No image with this id."}
    }
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_deleted_image_is_410_for_original_and_every_variant_for_ever(
    server: Server, img: Uploaded
) -> None:
    assert get(server, img.path).status == 200  # warm every cache first
    assert get(server, img.path + "?variant=thumbnail").status == 200
    assert server.request("DELETE", f"/v3/images/{img.id}").status == 204
    gone = {"error": {"status": 410, "code": "image_deleted", "message": "This image was deleted."}}
    for path, headers in [
        (img.path, {}),
        (img.path + "?variant=thumbnail", {}),
        (img.path, {"If-None-Match": img.etag}),
        (img.path, {"Range": "bytes=0-1"}),
    ]:
        resp = get(server, path, **headers)
        assert (resp.status, resp.json()) == (410, gone), (path, headers)
    # ... and still after a restart (the tombstone is in the database, not in memory).


def test_gone_survives_a_restart(server_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "lib"
    first = server_factory(data_dir=data_dir)
    image = upload(first, images.png(20, 20))
    assert first.request("DELETE", f"/v3/images/{image.id}").status == 204
    first.stop()
    second = server_factory(data_dir=data_dir)
    assert get(second, image.path).status == 410


def test_unknown_variant_is_400(server: Server, img: Uploaded) -> None:
    for query in ("?variant=huge", "?variant=", "?variant=thumbnail&variant=thumbnail"):
        resp = get(server, img.path + query)
        assert resp.status == 400, query
        assert resp.json()["error"]["code"] == "unknown_variant"


# -- thumbnails -------------------------------------------------------------------------------


def thumb_of(server: Server, data: bytes, name: str, mime: str) -> tuple[Uploaded, Response]:
    image = upload(server, data, name, mime)
    resp = get(server, image.path + "?variant=thumbnail")
    assert resp.status == 200, resp.body
    return image, resp


def test_thumbnail_headers_and_size_limit(server: Server) -> None:
    image, resp = thumb_of(server, images.jpeg(1200, 900), "big.jpg", "image/jpeg")
    etag = resp.headers["ETag"]
    assert etag != image.etag and etag.startswith('"') and etag.endswith('"')
    assert resp.header_dict() == {
        **image_headers(image, len(resp.body)),
        "etag": etag,
    }
    with Image.open(io.BytesIO(resp.body)) as thumb:
        assert thumb.format == "JPEG"
        assert thumb.size == (320, 240)
    # its own ETag answers its own conditional requests
    again = get(server, image.path + "?variant=thumbnail", **{"If-None-Match": etag})
    assert again.status == 304
    assert get(server, image.path + "?variant=thumbnail", Range="bytes=0-9").body == resp.body[:10]


def test_thumbnail_never_upscales(server: Server) -> None:
    _, resp = thumb_of(server, images.png(10, 7), "tiny.png", "image/png")
    with Image.open(io.BytesIO(resp.body)) as thumb:
        assert thumb.size == (10, 7)


def test_thumbnail_applies_exif_orientation(server: Server) -> None:
    # Stored landscape 800x400 with orientation 6 (rotate 90° clockwise to display).
    _, resp = thumb_of(server, images.jpeg(800, 400, orientation=6), "o6.jpg", "image/jpeg")
    with Image.open(io.BytesIO(resp.body)) as thumb:
        assert thumb.size == (160, 320)
        assert 0x0112 not in thumb.getexif()  # metadata stripped: no second rotation


def test_thumbnail_keeps_transparency(server: Server) -> None:
    _, resp = thumb_of(server, images.png(640, 480, mode="RGBA"), "alpha.png", "image/png")
    with Image.open(io.BytesIO(resp.body)) as thumb:
        assert thumb.format == "PNG"
        assert thumb.mode == "RGBA"
        assert thumb.size == (320, 240)
        assert thumb.getextrema()[3][0] < 50  # still has (nearly) transparent pixels


def test_thumbnail_converts_cmyk_to_rgb(server: Server) -> None:
    data = images.jpeg(400, 300, mode="CMYK")
    _, resp = thumb_of(server, data, "cmyk.jpg", "image/jpeg")
    with Image.open(io.BytesIO(resp.body)) as thumb:
        assert thumb.mode == "RGB"
        with Image.open(io.BytesIO(data)) as original:
            # Same colour within JPEG and profile tolerance, not inverted.
            want = original.convert("RGB").resize(thumb.size).getpixel((150, 100))
        have = thumb.getpixel((150, 100))
        assert all(abs(a - b) < 40 for a, b in zip(have, want, strict=True)), (have, want)


def test_thumbnail_of_16_bit_png_is_8_bit(server: Server) -> None:
    _, resp = thumb_of(server, images.png16(400, 200), "deep.png", "image/png")
    with Image.open(io.BytesIO(resp.body)) as thumb:
        assert thumb.mode == "RGB"
        assert thumb.size == (320, 160)


@pytest.mark.parametrize(
    ("data", "name", "mime", "fmt"),
    [
        (images.gif(400, 300, frames=6), "a.gif", "image/gif", "GIF"),
        (images.animated_webp(400, 300, frames=4), "a.webp", "image/webp", "WEBP"),
    ],
)
def test_animated_thumbnails_stay_animated(
    server: Server, data: bytes, name: str, mime: str, fmt: str
) -> None:
    _, resp = thumb_of(server, data, name, mime)
    with Image.open(io.BytesIO(resp.body)) as thumb:
        assert thumb.format == fmt
        assert thumb.size == (320, 240)
        assert getattr(thumb, "n_frames", 1) > 1


def test_webp_thumbnail_is_webp(server: Server) -> None:
    _, resp = thumb_of(server, images.webp(800, 800), "w.webp", "image/webp")
    with Image.open(io.BytesIO(resp.body)) as thumb:
        assert (thumb.format, thumb.size) == ("WEBP", (320, 320))


def test_thumbnail_is_deterministic_and_remade_when_missing(server_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "lib"
    first_server = server_factory(data_dir=data_dir)
    image, first = thumb_of(first_server, images.jpeg(900, 600), "d.jpg", "image/jpeg")
    for sha, variant in first_server.derived():  # as if the thumbnail had been lost
        first_server.call(first_server.app.library.blobs.delete_derived(sha, variant))
    first_server.stop()
    server = server_factory(data_dir=data_dir)
    results: list[Response] = []

    def fetch() -> None:
        results.append(get(server, image.path + "?variant=thumbnail"))

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {(r.status, r.body, r.headers["ETag"]) for r in results} == {
        (200, first.body, first.headers["ETag"])
    }
    assert server.derived() == [(image.json["sha256"], "thumbnail")]


# -- streaming --------------------------------------------------------------------------------


def raw_get(server: Server, path: str) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def read_response(sock: socket.socket, first: bytes = b"") -> tuple[bytes, bytes]:
    data = first
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def test_deleting_while_a_body_streams_does_not_corrupt_it(server: Server) -> None:
    image = upload(server, images.padded_png(6 << 20))
    sock = raw_get(server, image.path)
    try:
        first = sock.recv(4096)  # headers and the start of the body; the rest waits on us
        assert first.startswith(b"HTTP/1.1 200")
        assert server.request("DELETE", f"/v3/images/{image.id}").status == 204
        # The blob is gone (an object store keeps it a while, for streams like this one)...
        kept = server.app.library.blobs.readers_survive_delete is False
        assert server.originals() == ([image.json["sha256"]] if kept else [])
        _, body = read_response(sock, first)
        assert body == image.data  # ...and the client still gets every byte
    finally:
        sock.close()
    assert get(server, image.path).status == 410


def test_a_client_hanging_up_mid_body_costs_nothing(server: Server) -> None:
    image = upload(server, images.padded_png(6 << 20))
    for _ in range(5):
        sock = raw_get(server, image.path)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.close()
    resp = get(server, image.path)
    assert resp.status == 200
    assert resp.body == image.data
    assert not list((server.data_dir / "tmp").iterdir())


def test_one_keep_alive_connection_serves_request_after_request(
    server: Server, img: Uploaded
) -> None:
    conn = server.connection()
    conn.connect()
    sock = conn.sock
    for method, headers, status in [
        ("GET", {}, 200),
        ("HEAD", {}, 200),
        ("GET", {"If-None-Match": img.etag}, 304),
        ("GET", {"Range": "bytes=0-0"}, 206),
        ("GET", {}, 200),
    ]:
        conn.request(method, img.path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == status
        assert resp.getheader("Connection") is None  # not "close"
    assert conn.sock is sock  # never reconnected
    conn.close()


def test_pipelined_requests_are_all_answered(server: Server, img: Uploaded) -> None:
    sock = socket.create_connection((server.host, server.port), timeout=10)
    request = f"GET {img.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    sock.sendall(request * 3)
    rest = b""
    for _ in range(3):
        head, body = read_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 200")
        rest = body[len(img.data) :]
        assert body[: len(img.data)] == img.data
    sock.close()


@pytest.mark.embedded_only
def test_thumbnails_of_another_version_are_dropped_at_start(server_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "lib"
    first = server_factory(data_dir=data_dir)
    image, thumb = thumb_of(first, images.jpeg(900, 600), "v.jpg", "image/jpeg")
    first.stop()
    [kept] = list((data_dir / "derived").glob("*/*"))
    kept.write_bytes(b"made by an older version")  # what an upgrade must not serve
    with sqlite3.connect(data_dir / "pictor.db") as db:  # as if an older version made it
        db.execute("UPDATE appliance_state SET value = '0' WHERE name = 'thumbnail_version'")
    db.close()
    second = server_factory(data_dir=data_dir)
    assert not list((data_dir / "derived").glob("*/*"))
    again = get(second, image.path + "?variant=thumbnail")
    assert (again.status, again.body, again.headers["ETag"]) == (
        200,
        thumb.body,
        thumb.headers["ETag"],
    )
    # The same version at the next start keeps its thumbnails.
    second.stop()
    third = server_factory(data_dir=data_dir)
    assert [p.read_bytes() for p in (data_dir / "derived").glob("*/*")] == [thumb.body]
    assert get(third, image.path + "?variant=thumbnail").body == thumb.body
