"""POST /v3/images against hostile input: the type from the bytes, the size limit, bombs,
broken multipart, path-like names, and one blob per content (CONTRACT.md: Upload, Storage)."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import re
import socket
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests import images
from tests.api_helpers import (
    assert_error,
    assert_image,
    list_images,
    tmp_files,
    uploaded,
    wait_until,
)
from tests.conftest import Response, Server, multipart

LIMIT = 10 * 1024 * 1024  # 10,485,760 bytes: accepted; one more is 413


def assert_nothing_stored(server: Server) -> None:
    """A refused upload leaves no image, no blob, no thumbnail and (soon) no temp file."""
    assert list_images(server)["total"] == 0
    assert server.originals() == []
    assert server.derived() == []
    assert wait_until(lambda: tmp_files(server.data_dir) == []), tmp_files(server.data_dir)


def post(server: Server, body: bytes, content_type: str | None) -> Response:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return server.request("POST", "/v3/images", body=body, headers=headers)


def raw_exchange(
    server: Server, head: str, body: bytes = b"", timeout: float = 10
) -> tuple[http.client.HTTPResponse, bytes]:
    """Send a request head (and maybe a partial body) over a bare socket; read one answer."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    try:
        sock.sendall(head.encode("latin-1") + body)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp, resp.read()
    finally:
        sock.close()


def sof_patched_jpeg(width: int, height: int) -> bytes:
    """A real JPEG whose frame header claims width x height (a bomb's header)."""
    data = bytearray(images.jpeg(64, 48))
    at = re.search(rb"\xff[\xc0-\xc2]", bytes(data))
    assert at is not None
    struct.pack_into(">HH", data, at.start() + 5, height, width)
    return bytes(data)


def other_format(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, fmt)
    return buf.getvalue()


def gif_single(width: int = 200, height: int = 150) -> bytes:
    buf = io.BytesIO()
    images.gradient(width, height).save(buf, "GIF")
    return buf.getvalue()


def corrupt_middle(data: bytes, fill: bytes = b"\0") -> bytes:
    out = bytearray(data)
    mid = len(out) // 2
    out[mid : mid + 64] = fill * 64
    return bytes(out)


# -- the type is decided from the bytes --------------------------------------------------


@pytest.mark.parametrize(
    ("data", "filename", "ctype"),
    [
        (b"hello, I am text pretending to be a picture\n" * 10, "photo.png", "image/png"),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            b'<script>alert(1)</script><rect width="10" height="10"/></svg>',
            "logo.svg",
            "image/svg+xml",
        ),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
            "logo.png",
            "image/png",
        ),
        (b"<!DOCTYPE html><html><script>alert(1)</script></html>", "a.html", "text/html"),
        (b"<html><body>hi</body></html>", "a.gif", "image/gif"),
        (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "doc.jpg", "image/jpeg"),
        (other_format("BMP"), "a.bmp", "image/bmp"),
        (other_format("TIFF"), "a.png", "image/png"),
        (other_format("ICO"), "favicon.png", "image/png"),
        (b"\x00" * 1000, "zeros.png", "image/png"),
        (b"x", "one.png", "image/png"),
        # Magic numbers that stop short of an image: not enough bytes to be one.
        (b"GIF89a", "short.gif", "image/gif"),
        (b"\xff\xd8\xff", "short.jpg", "image/jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBP", "short.webp", "image/webp"),
    ],
)
def test_not_a_supported_image_is_400(
    server: Server, data: bytes, filename: str, ctype: str
) -> None:
    resp = server.upload(data, filename, content_type=ctype)
    error = assert_error(resp, 400)
    assert error["code"] in ("unsupported_media_type", "malformed_image")
    if not data.startswith((b"GIF8", b"\xff\xd8\xff", b"RIFF", b"\x89PNG")):
        assert error["code"] == "unsupported_media_type"
    assert_nothing_stored(server)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("png cut in half", images.png(400, 300)[: len(images.png(400, 300)) // 2]),
        ("jpeg cut in half", images.jpeg(400, 300)[: len(images.jpeg(400, 300)) // 2]),
        ("jpeg without its end", images.jpeg(400, 300)[:-200]),
        ("gif cut in half", gif_single()[: len(gif_single()) // 2]),
        ("webp cut in half", images.webp(400, 300)[: len(images.webp(400, 300)) // 2]),
        ("png corrupt middle", corrupt_middle(images.png(400, 300))),
        ("png magic then html", b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>"),
        ("jpeg magic then text", b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20),
        ("gif magic then text", b"GIF89a" + b"not really a gif" * 20),
        ("webp magic then text", b"RIFF\x40\x00\x00\x00WEBPVP8 " + b"nope" * 20),
        ("png header only", images.png(64, 48)[:33]),
    ],
)
def test_broken_images_are_400(server: Server, name: str, data: bytes) -> None:
    resp = server.upload(data, "broken.png")
    error = assert_error(resp, 400)
    assert error["code"] in ("malformed_image", "unsupported_media_type"), name
    assert_nothing_stored(server)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("png 50000x50000", images.png_header_only(50_000, 50_000)),
        ("png 12000x12000 (144 MP)", images.png_header_only(12_000, 12_000)),
        ("png 40000x10", images.png_header_only(40_000, 10)),
        ("jpeg 60000x60000", sof_patched_jpeg(60_000, 60_000)),
        ("jpeg 20000x20000 (400 MP)", sof_patched_jpeg(20_000, 20_000)),
    ],
)
def test_decompression_bombs_are_400(server: Server, name: str, data: bytes) -> None:
    resp = server.upload(data, "bomb.png")
    assert_error(resp, 400, "image_too_large")
    assert_nothing_stored(server)


def test_large_but_reasonable_dimensions_are_accepted(server: Server) -> None:
    data = images.png(4000, 3000)
    image = uploaded(server, data, "big.png")
    assert (image["width"], image["height"]) == (4000, 3000)


# -- the size limit ----------------------------------------------------------------------


def test_exactly_ten_megabytes_is_accepted_byte_exact(server: Server) -> None:
    data = images.padded_png(LIMIT)
    resp = server.upload(data, "limit.png")
    assert resp.status == 201, resp.body
    image = resp.json()
    assert_image(image)
    assert image["size_bytes"] == LIMIT
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    served = server.request("GET", f"/i/{image['id']}")
    assert served.status == 200
    assert served.headers["Content-Length"] == str(LIMIT)
    assert served.body == data
    assert server.originals() == [image["sha256"]]
    assert server.blob_bytes(image["sha256"]) == data


def test_one_byte_over_ten_megabytes_is_413(server: Server) -> None:
    resp = server.upload(images.padded_png(LIMIT + 1), "over.png")
    assert_error(resp, 413, "file_too_large")
    assert_nothing_stored(server)
    # The server is fine afterwards.
    assert server.upload(images.png(), "next.png").status == 201


def test_far_over_the_limit_without_content_length_is_413(server: Server) -> None:
    """Chunked transfer: no declared length, the limit holds while streaming."""
    body, ctype = multipart([("file", images.padded_png(LIMIT + 4096), "chunked.png", None)])

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 256 * 1024):
            yield body[i : i + 256 * 1024]

    conn = server.connection()
    headers = {
        "Content-Type": ctype,
        "Authorization": f"Bearer {server.api_key}",
        "Transfer-Encoding": "chunked",
    }
    try:
        conn.request("POST", "/v3/images", body=chunks(), headers=headers, encode_chunked=True)
        raw = conn.getresponse()
        resp = Response(raw.status, raw.reason, raw.headers, raw.read())
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server hung up instead of answering 413")
    finally:
        conn.close()
    assert_error(resp, 413, "file_too_large")
    assert_nothing_stored(server)


@pytest.mark.parametrize("declared", [10 * 1024**3, 2 * LIMIT, LIMIT + 1024 * 1024])
def test_huge_declared_length_is_refused_before_the_body(server: Server, declared: int) -> None:
    _, ctype = multipart([("file", b"", "x.png", None)])
    head = (
        "POST /v3/images HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {server.api_key}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    # No body is sent: an answer can only come if the server refuses without reading it.
    resp, body = raw_exchange(server, head, timeout=10)
    assert resp.status == 413
    error = Response(resp.status, resp.reason, resp.headers, body)
    assert_error(error, 413, "file_too_large")
    assert_nothing_stored(server)


def test_huge_declared_length_with_expect_continue_gets_no_continue(server: Server) -> None:
    _, ctype = multipart([("file", b"", "x.png", None)])
    head = (
        "POST /v3/images HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {server.api_key}\r\n"
        f"Content-Type: {ctype}\r\n"
        "Expect: 100-continue\r\n"
        f"Content-Length: {10 * 1024**3}\r\n\r\n"
    )
    resp, body = raw_exchange(server, head, timeout=10)
    assert resp.status == 413
    assert_error(Response(resp.status, resp.reason, resp.headers, body), 413)


def test_expect_continue_upload_works(server: Server) -> None:
    """curl sends `Expect: 100-continue` for larger bodies."""
    data = images.png(300, 200)
    body, ctype = multipart([("file", data, "curl.png", "image/png")])
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(
            (
                "POST /v3/images HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{server.port}\r\n"
                f"Authorization: Bearer {server.api_key}\r\n"
                f"Content-Type: {ctype}\r\n"
                "Expect: 100-continue\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
        )
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(body)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 201
        image = json.loads(resp.read())
    finally:
        sock.close()
    assert server.request("GET", f"/i/{image['id']}").body == data


# -- the multipart form ------------------------------------------------------------------


def test_missing_file_part_is_400(server: Server) -> None:
    body, ctype = multipart([("alt_text", "no file here", None, None)])
    assert_error(post(server, body, ctype), 400, "invalid_form")
    body, ctype = multipart([("image", images.png(), "a.png", "image/png")])
    assert_error(post(server, body, ctype), 400, "invalid_form")
    assert_nothing_stored(server)


def test_two_file_parts_are_400(server: Server) -> None:
    body, ctype = multipart(
        [
            ("file", images.png(), "a.png", "image/png"),
            ("file", images.gif(), "b.gif", "image/gif"),
        ]
    )
    assert_error(post(server, body, ctype), 400, "invalid_form")
    assert_nothing_stored(server)


def test_empty_file_is_400(server: Server) -> None:
    assert_error(server.upload(b"", "empty.png"), 400)
    assert_nothing_stored(server)


@pytest.mark.parametrize(
    "ctype",
    [
        None,
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "image/png",
        "multipart/mixed; boundary=abc",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; charset=utf-8",
        "multipart/form-data; boundary=" + "b" * 300,
    ],
)
def test_not_a_multipart_form_is_400(server: Server, ctype: str | None) -> None:
    body, _ = multipart([("file", images.png(), "a.png", "image/png")], boundary="abc")
    assert_error(post(server, body, ctype), 400, "invalid_content_type")
    assert_nothing_stored(server)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda b: b[: b.rindex(b"--abc--")], id="no closing boundary"),
        pytest.param(lambda b: b[: len(b) // 2], id="cut in the file part"),
        pytest.param(lambda b: b.replace(b"--abc", b"--xyz"), id="other boundary"),
        pytest.param(lambda b: b"", id="empty body"),
        pytest.param(lambda b: b"just some bytes, no parts at all", id="no parts"),
        pytest.param(
            lambda b: b.replace(b"Content-Disposition: form-data; ", b"Content-Disposition: "),
            id="disposition without form-data",
        ),
        pytest.param(
            lambda b: b.replace(b"Content-Disposition", b"X-Nothing"), id="no disposition"
        ),
        pytest.param(
            lambda b: b.replace(b"\r\n\r\n", b"\r\n" + b"X-Pad: " + b"p" * 20_000 + b"\r\n\r\n"),
            id="huge part header",
        ),
    ],
)
def test_malformed_multipart_is_400(server: Server, mangle: Any) -> None:
    body, ctype = multipart([("file", images.png(), "a.png", "image/png")], boundary="abc")
    assert_error(post(server, mangle(body), ctype), 400)
    assert_nothing_stored(server)


def test_thousands_of_parts_are_400(server: Server) -> None:
    parts: list[tuple[str, str | bytes, str | None, str | None]] = [
        (f"f{i}", "x", None, None) for i in range(5000)
    ]
    parts.append(("file", images.png(), "a.png", "image/png"))
    body, ctype = multipart(parts)
    assert_error(post(server, body, ctype), 400)
    assert_nothing_stored(server)


def test_a_text_field_given_twice_is_400(server: Server) -> None:
    body, ctype = multipart(
        [
            ("file", images.png(), "a.png", "image/png"),
            ("folder", "one", None, None),
            ("folder", "two", None, None),
        ]
    )
    assert_error(post(server, body, ctype), 400)
    assert_nothing_stored(server)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("alt_text", "a" * 1001),
        ("alt_text", "é" * 1001),
        ("alt_text", "x" * 50_000),
        ("folder", "f" * 101),
        ("folder", "a\nb"),
        ("folder", "a\rb"),
        ("folder", "a\x00b"),
        ("folder", "tab\t"),
        ("folder", "esc\x1b[31m"),
        ("folder", "del\x7f"),
        ("alt_text", b"\xff\xfe not utf-8"),
        ("folder", b"caf\xe9"),
    ],
)
def test_bad_form_fields_are_400(server: Server, field: str, value: str | bytes) -> None:
    body, ctype = multipart(
        [("file", images.png(), "a.png", "image/png"), (field, value, None, None)]
    )
    assert_error(post(server, body, ctype), 400, "invalid_field")
    assert_nothing_stored(server)


def test_field_limits_are_inclusive_and_in_characters(server: Server) -> None:
    alt = "😀" * 1000
    folder = "é" * 100
    image = uploaded(server, images.png(), alt_text=alt, folder=folder)
    assert (image["alt_text"], image["folder"]) == (alt, folder)


def test_empty_folder_means_no_folder(server: Server) -> None:
    image = uploaded(server, images.png(), folder="")
    assert image["folder"] is None
    assert server.request("GET", "/v3/images/folders").json() == {"folders": []}


# -- names are labels, never paths -------------------------------------------------------

ALLOWED_FILES = re.compile(
    r"^(pictor\.db(-wal|-shm|-journal)?"
    r"|blobs/[0-9a-f]{2}/[0-9a-f]{64}"
    r"|derived/[0-9a-f]{2}/[0-9a-f]{64}\.[a-z0-9]+)$"
)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("../../etc/passwd.png", "passwd.png"),
        ("..\\..\\windows\\win.ini.png", "win.ini.png"),
        ("C:\\x\\y.png", "y.png"),
        ("a/b/c.png", "c.png"),
        ("/abs/path.png", "path.png"),
        ("dir/", "image.png"),
        ("..", "image.png"),
        ("", "image.png"),
        ("a\x00b.png", "ab.png"),
        ("bell\x07.png", "bell.png"),
        ("été 日本.png", "été 日本.png"),
        ("x.php", "x.php"),
    ],
)
def test_filename_is_the_last_path_component(
    server: Server, tmp_path: Path, sent: str, stored: str
) -> None:
    data = images.png()
    image = uploaded(server, data, sent)
    assert image["filename"] == stored
    assert server.request("GET", f"/v3/images/{image['id']}").json()["filename"] == stored
    # Nothing was written outside the data directory, nor under a user-supplied name.
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and server.data_dir not in p.parents]
    assert outside == []
    for p in server.data_dir.rglob("*"):
        if p.is_file():
            rel = p.relative_to(server.data_dir).as_posix()
            assert ALLOWED_FILES.match(rel), rel
    assert server.request("GET", f"/i/{image['id']}").body == data


def test_filename_with_raw_cr_lf_cannot_inject_headers(server: Server) -> None:
    body, ctype = multipart(
        [("file", images.png(), 'a.png"\r\nContent-Type: text/html\r\nX: "', "image/png")]
    )
    resp = post(server, body, ctype)
    if resp.status == 201:
        name = resp.json()["filename"]
        assert "\r" not in name and "\n" not in name
    else:
        assert_error(resp, 400, "malformed_multipart")
    body, ctype = multipart([("file", images.png(), "a\r\nb.png", "image/png")])
    resp = post(server, body, ctype)
    if resp.status == 201:
        assert resp.json()["filename"] == "ab.png"
    else:
        assert_error(resp, 400, "malformed_multipart")


@pytest.mark.embedded_only
def test_folder_is_a_label_never_a_path(server: Server, tmp_path: Path) -> None:
    image = uploaded(server, images.png(), folder="../../escape")
    assert image["folder"] == "../../escape"
    assert not (tmp_path / "escape").exists()
    assert not (server.data_dir / "escape").exists()
    assert sorted(p.name for p in server.data_dir.iterdir()) == sorted(
        ["blobs", "derived", "tmp", "pictor.db", "pictor.db-wal", "pictor.db-shm"]
    )
    body = list_images(server, "folder=..%2F..%2Fescape")
    assert [i["id"] for i in body["images"]] == [image["id"]]


# -- one blob per content ----------------------------------------------------------------


def test_same_bytes_twice_are_two_images_over_one_blob(server: Server) -> None:
    data = images.jpeg(200, 150)
    first = uploaded(server, data, "one.jpg", alt_text="first", folder="a")
    second = uploaded(server, data, "two.jpg", alt_text="second", folder="b")
    assert first["id"] != second["id"]
    assert first["sha256"] == second["sha256"] == hashlib.sha256(data).hexdigest()
    assert (first["filename"], first["alt_text"], first["folder"]) == ("one.jpg", "first", "a")
    assert (second["filename"], second["alt_text"], second["folder"]) == ("two.jpg", "second", "b")
    assert server.originals() == [first["sha256"]]
    assert server.blob_bytes(first["sha256"]) == data
    thumb_before = server.request("GET", f"/i/{second['id']}?variant=thumbnail")
    assert thumb_before.status == 200

    assert server.request("DELETE", f"/v3/images/{first['id']}").status == 204
    assert server.originals() == [first["sha256"]]
    served = server.request("GET", f"/i/{second['id']}")
    assert served.status == 200
    assert served.body == data
    thumb = server.request("GET", f"/i/{second['id']}?variant=thumbnail")
    assert thumb.status == 200
    assert thumb.body == thumb_before.body
    assert server.request("GET", f"/i/{first['id']}").status == 410
    assert server.request("GET", f"/v3/images/{second['id']}").json() == second

    assert server.request("DELETE", f"/v3/images/{second['id']}").status == 204
    server.settle()
    assert server.originals() == []
    assert server.derived() == []
    assert server.request("GET", f"/i/{second['id']}").status == 410


def test_same_bytes_from_two_tenants_share_a_blob_but_not_metadata(server: Server) -> None:
    data = images.webp(80, 60)
    other = server.new_key("other")
    mine = uploaded(server, data, "mine.webp", folder="mine")
    theirs = uploaded(server, data, "theirs.webp", folder="theirs", key=other)
    assert len(server.originals()) == 1
    assert server.request("DELETE", f"/v3/images/{mine['id']}").status == 204
    assert server.request("GET", f"/i/{theirs['id']}").body == data
    assert server.request("GET", "/v3/images/folders", key=other).json() == {"folders": ["theirs"]}
    assert len(server.originals()) == 1


def test_concurrent_uploads_and_deletes_of_the_same_bytes(server: Server) -> None:
    data = images.png(150, 100)
    with ThreadPoolExecutor(max_workers=8) as pool:
        created = list(pool.map(lambda n: server.upload(data, f"c{n}.png"), range(12)))
    assert [r.status for r in created] == [201] * 12
    ids = [r.json()["id"] for r in created]
    assert len(set(ids)) == 12
    assert len(server.originals()) == 1
    keep, doomed = ids[0], ids[1:]
    with ThreadPoolExecutor(max_workers=8) as pool:
        deleted = list(pool.map(lambda i: server.request("DELETE", f"/v3/images/{i}"), doomed))
    assert [r.status for r in deleted] == [204] * 11
    assert server.request("GET", f"/i/{keep}").body == data
    assert len(server.originals()) == 1
    assert server.request("DELETE", f"/v3/images/{keep}").status == 204
    server.settle()
    assert server.originals() == []
    assert wait_until(lambda: tmp_files(server.data_dir) == [])
