"""Widths, formats and their path forms on the public proxy (CONTRACT.md, "Variants and URL
forms"): decoded pixels, byte-equality of the query and path forms, the proxy's headers,
HEAD, conditionals and ranges on every form, 410 after a delete, never upscaled, never more
bytes than the original, rendered once however many ask at once, and 503 past the queue.

Every test runs against the plain handler and against the fast lane (appliance/fastpath.py);
with the fast lane, `fetch` asks twice, so that the second answer comes from memory, and
holds both answers to the same status, headers and bytes.
"""

from __future__ import annotations

import hashlib
import io
import logging
import sqlite3
import threading
import time
from typing import Any

import pytest
from PIL import Image, ImageDraw

from appliance import variants
from tests import images
from tests.conftest import Response, Server
from tests.test_proxy import CACHE, CSP, Uploaded, upload

WIDTHS = (160, 320, 480, 600, 800, 1200, 1600, 2000)
GONE = {"error": {"status": 410, "code": "image_deleted", "message": "This image was deleted."}}
GONE_CACHE = "public, max-age=86400"


@pytest.fixture(params=["handler", "fast"])
def server(request: pytest.FixtureRequest, server_factory: Any) -> Server:
    srv: Server = server_factory(fast_path=request.param == "fast")
    srv.mode = request.param  # type: ignore[attr-defined]
    return srv


def fetch(server: Server, path: str, method: str = "GET", **headers: str) -> Response:
    resp = server.request(method, path, headers=headers)
    if server.mode == "fast":  # type: ignore[attr-defined]
        again = server.request(method, path, headers=headers)
        assert (again.status, again.header_dict(), again.body) == (
            resp.status,
            resp.header_dict(),
            resp.body,
        ), path
    return resp


def decoded(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rendered_etag(image: Uploaded, name: str) -> str:
    return f'"{sha(image.data)[:32]}-{name}-r{variants.RENDER_VERSION}"'


def headers_of(image: Uploaded, body: bytes, mime: str, etag: str) -> dict[str, str]:
    return {
        "content-type": mime,
        "content-length": str(len(body)),
        "etag": etag,
        "last-modified": image.last_modified,
        "cache-control": CACHE,
        "accept-ranges": "bytes",
        "x-content-type-options": "nosniff",
        "content-security-policy": CSP,
        "cross-origin-resource-policy": "cross-origin",
        "referrer-policy": "no-referrer",
    }


def photo(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Gradient plus noise: compresses like a photograph, not like a test card."""
    base = images.gradient(width, height, "RGB")
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    out = Image.blend(base, noise, 0.25)
    if mode == "RGBA":
        out = out.convert("RGBA")
        out.putalpha(images.gradient(width, height, "L"))
    return out


def encoded(img: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def flat_png(width: int = 800, height: int = 400) -> bytes:
    """A flat graphic, palette PNG: its downscaled edges cost more bytes than it has."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((100, 100, 300, 300), fill=(200, 30, 30))
    draw.ellipse((400, 50, 700, 350), fill=(30, 30, 200))
    return encoded(img.quantize(16), "PNG")


# -- widths -----------------------------------------------------------------------------------


def test_every_width_of_the_ladder_with_the_proxy_headers(server: Server) -> None:
    image = upload(server, encoded(photo(2100, 1400), "JPEG", quality=90), "p.jpg", "image/jpeg")
    for width in WIDTHS:
        resp = fetch(server, f"{image.path}?w={width}")
        assert resp.status == 200, width
        etag = rendered_etag(image, f"w{width}-jpeg")
        assert resp.header_dict() == headers_of(image, resp.body, "image/jpeg", etag)
        with decoded(resp.body) as got:
            assert (got.format, got.mode, got.size) == (
                "JPEG",
                "RGB",
                (width, round(width * 2 / 3)),
            )
        assert len(resp.body) < len(image.data), width


def test_a_width_at_or_above_the_image_is_the_original(server: Server) -> None:
    image = upload(server, encoded(photo(600, 400), "PNG"), "p.png")
    for query in ("?w=600", "?w=800", "?w=2000", "?w=2000&format=png", "?format=png"):
        resp = fetch(server, image.path + query)
        assert resp.status == 200, query
        assert resp.header_dict() == headers_of(image, image.data, "image/png", image.etag)
        assert resp.body == image.data, query
    # In another format it is the image at its own size: never upscaled.
    big = fetch(server, image.path + "?w=2000&format=webp")
    assert big.body == fetch(server, image.path + "?format=webp").body
    assert big.headers["ETag"] == rendered_etag(image, "webp")
    with decoded(big.body) as got:
        assert (got.format, got.size) == ("WEBP", (600, 400))
    smaller = fetch(server, image.path + "?w=480")
    with decoded(smaller.body) as got:
        assert (got.format, got.size) == ("PNG", (480, 320))


def test_widths_are_of_the_image_as_shown_after_exif_orientation(server: Server) -> None:
    # Stored 800x400 with orientation 6: shown 400 wide and 800 high.
    image = upload(server, images.jpeg(800, 400, orientation=6), "o6.jpg", "image/jpeg")
    resp = fetch(server, image.path + "?w=320")
    with decoded(resp.body) as got:
        assert got.size == (320, 640)
        assert 0x0112 not in got.getexif()  # metadata stripped: no second rotation
    # 600 is wider than it is shown: the original, as stored.
    assert fetch(server, image.path + "?w=600").body == image.data
    png = fetch(server, image.path + "?w=600&format=png")
    with decoded(png.body) as got:
        assert (got.format, got.size) == ("PNG", (400, 800))
        # Rotated 90 degrees clockwise: the stored top row (dark) is the right column.
        assert got.getpixel((5, 400))[0] > 200
        assert got.getpixel((394, 400))[0] < 60


# -- formats ----------------------------------------------------------------------------------


def test_jpeg_of_a_transparent_png_is_flattened_onto_white(server: Server) -> None:
    img = Image.new("RGBA", (400, 300), (0, 0, 0, 0))
    ImageDraw.Draw(img).rectangle((100, 100, 299, 199), fill=(200, 0, 0, 255))
    image = upload(server, encoded(img, "PNG"), "t.png")
    resp = fetch(server, image.path + "?format=jpeg")
    assert resp.header_dict() == headers_of(
        image, resp.body, "image/jpeg", rendered_etag(image, "jpeg")
    )
    with decoded(resp.body) as got:
        assert (got.format, got.mode, got.size) == ("JPEG", "RGB", (400, 300))
        assert all(c >= 250 for c in got.getpixel((10, 10)))  # transparent -> white
        red = got.getpixel((200, 150))
        assert red[0] > 180 and red[1] < 40 and red[2] < 40


def test_webp_and_png_keep_transparency(server: Server) -> None:
    image = upload(server, encoded(photo(800, 600, "RGBA"), "PNG"), "a.png")
    for query, fmt in (("?format=webp", "WEBP"), ("?w=320&format=webp", "WEBP"), ("?w=320", "PNG")):
        resp = fetch(server, image.path + query)
        with decoded(resp.body) as got:
            assert got.format == fmt, query
            assert got.mode == "RGBA", query
            assert got.getextrema()[3][0] < 50, query  # (nearly) transparent pixels kept
            assert got.getextrema()[3][1] > 200, query
        assert len(resp.body) < len(image.data), query


def test_cmyk_and_16_bit_become_8_bit_srgb(server: Server) -> None:
    cmyk = upload(server, images.jpeg(400, 300, mode="CMYK"), "c.jpg", "image/jpeg")
    resp = fetch(server, cmyk.path + "?w=160")
    with decoded(resp.body) as got:
        assert (got.mode, got.size) == ("RGB", (160, 120))
    deep = upload(server, images.png16(400, 200), "d.png")
    resp = fetch(server, deep.path + "?w=160&format=webp")
    with decoded(resp.body) as got:
        assert (got.format, got.mode, got.size) == ("WEBP", "RGB", (160, 80))


@pytest.mark.parametrize(
    ("query", "fmt", "frames"),
    [
        ("?w=320", "GIF", 6),
        ("?w=320&format=webp", "WEBP", 6),
        ("?format=webp", "WEBP", 6),
        ("?format=png", "PNG", 1),
        ("?w=160&format=jpeg", "JPEG", 1),
    ],
)
def test_animations_stay_animated_in_gif_and_webp_only(
    server: Server, query: str, fmt: str, frames: int
) -> None:
    image = upload(server, images.gif(400, 300, frames=6), "a.gif", "image/gif")
    resp = fetch(server, image.path + query)
    assert resp.status == 200
    with decoded(resp.body) as got:
        assert got.format == fmt
        assert getattr(got, "n_frames", 1) == frames
        assert got.size[0] == (400 if "w=" not in query else int(query[3:6]))


def test_an_animated_webp_stays_animated_and_frames_are_capped(server: Server) -> None:
    webp = upload(server, images.animated_webp(400, 300, frames=4), "a.webp", "image/webp")
    with decoded(fetch(server, webp.path + "?w=160").body) as got:
        assert (got.format, got.size, got.n_frames) == ("WEBP", (160, 120), 4)
    many = upload(server, images.gif(200, 150, frames=60), "many.gif", "image/gif")
    with decoded(fetch(server, many.path + "?w=160").body) as got:
        assert (got.format, got.size, got.n_frames) == ("GIF", (160, 120), 50)


# -- never larger ---------------------------------------------------------------------------


def test_never_upscaled_and_never_more_bytes_than_the_original(server: Server) -> None:
    cases = [
        (encoded(photo(300, 200), "JPEG", quality=60), "image/jpeg", "s.jpg"),
        (encoded(photo(900, 600), "JPEG", quality=40), "image/jpeg", "q.jpg"),
        (flat_png(), "image/png", "flat.png"),
        (images.png(800, 400), "image/png", "g.png"),
        (images.gif(400, 300, frames=6), "image/gif", "a.gif"),
        (images.webp(700, 500), "image/webp", "w.webp"),
    ]
    for data, mime, name in cases:
        image = upload(server, data, name, mime)
        own = variants.EXTENSIONS[name.rsplit(".", 1)[1]]
        for suffix in [f"/w{w}.{name.rsplit('.', 1)[1]}" for w in WIDTHS] + ["/thumbnail." + own]:
            resp = fetch(server, image.path + suffix)
            assert resp.status == 200, (name, suffix)
            assert resp.headers["Content-Type"] == mime
            assert len(resp.body) <= len(data), (name, suffix, len(resp.body), len(data))
            if len(resp.body) == len(data):
                assert (resp.body, resp.headers["ETag"]) == (data, image.etag), (name, suffix)
            with Image.open(io.BytesIO(data)) as original, decoded(resp.body) as got:
                assert got.size[0] <= original.size[0], (name, suffix)


def test_a_thumbnail_that_would_be_larger_is_the_original(server: Server) -> None:
    data = flat_png()
    image = upload(server, data, "flat.png")
    for path in (image.path + "?variant=thumbnail", image.path + "/thumbnail.png"):
        resp = fetch(server, path)
        assert resp.header_dict() == headers_of(image, data, "image/png", image.etag)
        assert resp.body == data


# -- URL forms --------------------------------------------------------------------------------


def form_pairs(image: Uploaded, family: str) -> list[tuple[str, str]]:
    ext = {"jpeg": "jpg", "png": "png", "gif": "gif", "webp": "webp"}[family]
    return [
        (f"{image.path}?format={family}" if family != "gif" else image.path, f"{image.path}.{ext}"),
        (f"{image.path}?w=600", f"{image.path}/w600.{ext}"),
        (f"{image.path}?w=600&format=webp", f"{image.path}/w600.webp"),
        (f"{image.path}?format=jpeg&w=320", f"{image.path}/w320.jpeg"),
        (f"{image.path}?w=160&format=png", f"{image.path}/w160.png"),
        (f"{image.path}?format=webp", f"{image.path}.webp"),
        (f"{image.path}?variant=thumbnail", f"{image.path}/thumbnail.{ext}"),
    ]


@pytest.mark.parametrize("family", ["jpeg", "png", "gif", "webp"])
def test_path_forms_are_their_query_forms_byte_for_byte(server: Server, family: str) -> None:
    data = {
        "jpeg": images.jpeg(1000, 700),
        "png": encoded(photo(1000, 700), "PNG"),
        "gif": images.gif(1000, 700, frames=3),
        "webp": images.webp(1000, 700),
    }[family]
    image = upload(server, data, "x." + family, variants.MIME_TYPES[family])
    for query_form, path_form in form_pairs(image, family):
        by_query = fetch(server, query_form)
        by_path = fetch(server, path_form)
        assert by_query.status == 200, query_form
        assert (by_path.status, by_path.header_dict(), by_path.body) == (
            200,
            by_query.header_dict(),
            by_query.body,
        ), (query_form, path_form)
    # The original's own format is the original, whichever way it is named.
    ext = {"jpeg": "jpg", "png": "png", "gif": "gif", "webp": "webp"}[family]
    resp = fetch(server, f"{image.path}.{ext}")
    assert (resp.body, resp.headers["ETag"]) == (data, image.etag)
    if family == "jpeg":
        assert fetch(server, image.path + ".jpeg").body == data


def test_other_paths_under_i_are_404(server: Server) -> None:
    png = upload(server, images.png(400, 300))
    not_found = {
        "error": {
            "status": 404,
            "code": "not_found",
            "message": "There is nothing at this address.",
        }
    }
    for path in (
        f"{png.path}.gif",  # GIF only for GIF originals
        f"{png.path}/w600.gif",
        f"{png.path}/thumbnail.jpg",  # the thumbnail of a PNG is a PNG
        f"{png.path}/thumbnail.gif",
        f"{png.path}.bmp",
        f"{png.path}.",
        f"{png.path}/",
        f"{png.path}/w601.png",
        f"{png.path}/w0600.png",
        f"{png.path}/w600",
        f"{png.path}/W600.png",
        f"{png.path}/w600.PNG",
        f"{png.path}/original.png",
        f"{png.path}/w600.png/more",
        f"{png.path}/thumbnail",
        "/i/",
        "/i/.png",
    ):
        resp = fetch(server, path)
        assert (resp.status, resp.json()) == (404, not_found), path
        assert resp.headers["Cache-Control"] == "no-store", path
    unknown = {
        "error": {"status": 404, "code": "image_not_found", "message": "No image with this id."}
    }
    for path in ("/i/img_nope.jpg", "/i/img_nope/w600.png", "/i/img_nope/thumbnail.png"):
        resp = fetch(server, path)
        assert (resp.status, resp.json()) == (404, unknown), path


@pytest.mark.parametrize(
    ("query", "code", "message"),
    [
        ("w=601", "invalid_width", "Unknown width '601'; 'w' is one of {widths}."),
        ("w=", "invalid_width", "Unknown width ''; 'w' is one of {widths}."),
        ("w=0600", "invalid_width", "Unknown width '0600'; 'w' is one of {widths}."),
        ("w=-600", "invalid_width", "Unknown width '-600'; 'w' is one of {widths}."),
        ("w=6e2", "invalid_width", "Unknown width '6e2'; 'w' is one of {widths}."),
        ("w=600&w=800", "invalid_parameter", "Give 'w' once."),
        (
            "format=gif",
            "invalid_format",
            "Unknown format 'gif'; 'format' is one of jpeg, png, webp.",
        ),
        (
            "format=JPEG",
            "invalid_format",
            "Unknown format 'JPEG'; 'format' is one of jpeg, png, webp.",
        ),
        (
            "format=jpg",
            "invalid_format",
            "Unknown format 'jpg'; 'format' is one of jpeg, png, webp.",
        ),
        (
            "variant=thumbnail&w=600",
            "invalid_parameter",
            "'variant=thumbnail' combines with neither 'w' nor 'format'.",
        ),
        (
            "variant=thumbnail&format=png",
            "invalid_parameter",
            "'variant=thumbnail' combines with neither 'w' nor 'format'.",
        ),
    ],
)
def test_bad_query_values_are_400(server: Server, query: str, code: str, message: str) -> None:
    image = upload(server, images.png(400, 300))
    resp = fetch(server, f"{image.path}?{query}")
    widths = ", ".join(map(str, WIDTHS))
    assert resp.status == 400
    assert resp.json() == {
        "error": {"status": 400, "code": code, "message": message.format(widths=widths)}
    }
    assert resp.headers["Cache-Control"] == "no-store"


def test_a_width_in_percent_encoding_is_the_same_width(server: Server) -> None:
    image = upload(server, images.jpeg(1000, 700), "p.jpg", "image/jpeg")
    plain = fetch(server, image.path + "?w=600")
    encoded_form = fetch(server, image.path + "?w=%36%30%30&utm_source=mail")
    assert (encoded_form.header_dict(), encoded_form.body) == (plain.header_dict(), plain.body)


# -- HTTP on every form -------------------------------------------------------------------------


def every_form(image: Uploaded) -> list[str]:
    return [
        image.path + "?w=600",
        image.path + "/w600.jpg",
        image.path + "?format=webp",
        image.path + ".webp",
        image.path + "?w=320&format=png",
        image.path + "/w320.png",
        image.path + ".jpg",
        image.path + "/thumbnail.jpg",
    ]


def test_head_conditionals_and_ranges_on_every_form(server: Server) -> None:
    image = upload(server, images.jpeg(1000, 700), "p.jpg", "image/jpeg")
    for path in every_form(image):
        whole = fetch(server, path)
        assert whole.status == 200, path
        etag = whole.headers["ETag"]
        for method in ("GET", "HEAD"):
            head = fetch(server, path, method)
            if method == "HEAD":
                assert (head.status, head.header_dict(), head.body) == (
                    200,
                    whole.header_dict(),
                    b"",
                )
            for headers, status in [
                ({"If-None-Match": etag}, 304),
                ({"If-None-Match": f'"x", W/{etag}'}, 304),
                ({"If-Modified-Since": image.last_modified}, 304),
                ({"If-Match": '"other"'}, 412),
                ({"Range": "bytes=0-9"}, 206),
                ({"Range": "bytes=-4", "If-Range": etag}, 206),
                ({"Range": "bytes=0-9", "If-Range": '"old"'}, 200),
                ({"Range": f"bytes={len(whole.body)}-"}, 416),
            ]:
                got = fetch(server, path, "GET", **headers)
                assert got.status == status, (path, headers)
                if method == "HEAD":
                    head = fetch(server, path, "HEAD", **headers)
                    assert (head.status, head.header_dict(), head.body) == (
                        status,
                        got.header_dict(),
                        b"",
                    ), (path, headers)
                if status == 304:
                    expected = headers_of(image, whole.body, "", etag)
                    del expected["content-type"], expected["content-length"]
                    assert got.header_dict() == expected
                elif status == 206:
                    part = whole.body[:10] if "0-9" in headers["Range"] else whole.body[-4:]
                    assert got.body == part
                    start = 0 if "0-9" in headers["Range"] else len(whole.body) - 4
                    assert got.headers["Content-Range"] == (
                        f"bytes {start}-{start + len(part) - 1}/{len(whole.body)}"
                    )
                elif status == 416:
                    assert got.headers["Content-Range"] == f"bytes */{len(whole.body)}"


def test_a_large_rendering_streams_with_ranges_like_an_original(server: Server) -> None:
    """Over 1 MiB, a rendering is not kept in memory: it streams from the blob store."""
    image = upload(server, encoded(photo(2100, 1400), "PNG"), "big.png")
    whole = fetch(server, image.path + "/w2000.png")
    assert whole.status == 200
    assert len(whole.body) > 1 << 20
    assert whole.header_dict() == headers_of(
        image, whole.body, "image/png", rendered_etag(image, "w2000-png")
    )
    with decoded(whole.body) as got:
        assert got.size == (2000, round(1400 * 2000 / 2100))
    middle = fetch(server, image.path + "?w=2000", Range="bytes=1000000-1000099")
    assert (middle.status, middle.body) == (206, whole.body[1_000_000:1_000_100])
    head = fetch(server, image.path + "/w2000.png", "HEAD")
    assert (head.status, head.header_dict(), head.body) == (200, whole.header_dict(), b"")


def test_every_form_is_410_after_a_delete(server: Server) -> None:
    image = upload(server, images.jpeg(1000, 700), "p.jpg", "image/jpeg")
    paths = [image.path, image.path + "?variant=thumbnail", *every_form(image)]
    paths += [image.path + "?w=800", image.path + ".png", image.path + ".gif"]
    etags = {}
    for path in paths[:-1]:  # warm every cache first
        resp = fetch(server, path)
        assert resp.status == 200, path
        etags[path] = resp.headers["ETag"]
    assert server.request("DELETE", f"/v3/images/{image.id}").status == 204
    for path in paths:
        for headers in ({}, {"If-None-Match": etags.get(path, "*")}, {"Range": "bytes=0-1"}):
            resp = fetch(server, path, **headers)
            assert (resp.status, resp.json()) == (410, GONE), (path, headers)
            assert resp.header_dict() == {
                "content-type": "application/json; charset=UTF-8",
                "content-length": str(len(resp.body)),
                "cache-control": GONE_CACHE,
                "x-content-type-options": "nosniff",
                "content-security-policy": CSP,
                "cross-origin-resource-policy": "cross-origin",
                "referrer-policy": "no-referrer",
            }, path
            head = fetch(server, path, "HEAD", **headers)
            assert (head.status, head.header_dict(), head.body) == (
                410,
                resp.header_dict(),
                b"",
            )
    server.settle()  # an object store removes an unused original after a delay
    assert server.call(server.app.library.blobs.list_blobs()) == []


def test_410s_of_a_known_deletion_never_reach_the_application(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """With the fast lane, a burst for a deleted image is answered from memory: the
    application (which logs every 4xx) never sees it. The plain handler is the control."""
    image = upload(server, images.jpeg(1000, 700), "p.jpg", "image/jpeg")
    assert fetch(server, image.path + "?w=600").status == 200
    assert server.request("DELETE", f"/v3/images/{image.id}").status == 204
    paths = [image.path, image.path + "?w=600", image.path + "/w600.jpg", image.path + ".png"]
    with caplog.at_level(logging.INFO, logger="tornado.access"):
        for path in paths:
            assert server.request("GET", path).status == 410
        server.request("GET", "/v3/images/folders")  # the log lines above are out by now
    logged = [r for r in caplog.records if r.name == "tornado.access" and " /i/" in r.message]
    assert len(logged) == (0 if server.mode == "fast" else len(paths))  # type: ignore[attr-defined]


# -- rendering once, storing, limits ----------------------------------------------------------


def derived_names(server: Server) -> set[str]:
    return {b.variant for b in server.call(server.app.library.blobs.list_blobs()) if b.variant}


def test_concurrent_first_requests_render_once(server: Server) -> None:
    image = upload(server, encoded(photo(1600, 1200), "JPEG", quality=90), "p.jpg", "image/jpeg")
    before = server.app.library.renders
    results: list[Response] = []
    paths = [image.path + "?w=800&format=webp", image.path + "/w800.webp"] * 6
    threads = [threading.Thread(target=lambda p=p: results.append(fetch(server, p))) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.app.library.renders == before + 1
    assert {(r.status, r.body, r.headers["ETag"]) for r in results} == {
        (200, results[0].body, rendered_etag(image, "w800-webp"))
    }
    assert derived_names(server) == {"thumbnail", "w800-webp"}
    # Asked again, it is served as it was stored: no second rendering.
    assert fetch(server, image.path + "/w800.webp").body == results[0].body
    assert server.app.library.renders == before + 1


@pytest.mark.embedded_only  # sets the version in the SQLite database by hand
def test_renderings_are_deterministic_and_survive_a_restart(server_factory: Any, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "lib"
    first = server_factory(data_dir=data_dir)
    image = upload(first, images.jpeg(1200, 800), "p.jpg", "image/jpeg")
    made = {p: first.request("GET", image.path + p) for p in ("?w=600", "/w320.webp", ".png")}
    first.stop()
    second = server_factory(data_dir=data_dir)
    assert second.app.library.renders == 0
    for p, resp in made.items():  # kept: the same bytes and ETags, with nothing rendered
        again = second.request("GET", image.path + p)
        assert (again.status, again.header_dict(), again.body) == (
            200,
            resp.header_dict(),
            resp.body,
        )
    assert second.app.library.renders == 0
    for blob in second.call(second.app.library.blobs.list_blobs()):
        assert blob.variant in (None, "thumbnail", "w600-jpeg", "w320-webp", "png")
    second.stop()
    # Made again from nothing (as on another node): the same bytes and ETags.
    with sqlite3.connect(data_dir / "pictor.db") as db:
        db.execute("UPDATE appliance_state SET value = 'old' WHERE name = 'thumbnail_version'")
    db.close()
    third = server_factory(data_dir=data_dir)
    assert derived_names(third) == set()  # renderings of another version are dropped
    for p, resp in made.items():
        again = third.request("GET", image.path + p)
        assert (again.header_dict(), again.body) == (resp.header_dict(), resp.body)
    assert third.app.library.renders == 3


def test_renderings_are_removed_with_the_image(server: Server) -> None:
    data = images.jpeg(1000, 700)
    image = upload(server, data, "p.jpg", "image/jpeg")
    twin = upload(server, data, "twin.jpg", "image/jpeg")  # the same bytes, another image
    for p in ("?w=600", "/w320.webp", ".png"):
        assert fetch(server, image.path + p).status == 200
    assert derived_names(server) == {"thumbnail", "w600-jpeg", "w320-webp", "png"}
    assert server.request("DELETE", f"/v3/images/{image.id}").status == 204
    assert derived_names(server) == {"thumbnail", "w600-jpeg", "w320-webp", "png"}  # twin's
    assert fetch(server, twin.path + "?w=600").status == 200
    assert server.request("DELETE", f"/v3/images/{twin.id}").status == 204
    server.settle()  # an object store removes an unused original after a delay
    assert server.call(server.app.library.blobs.list_blobs()) == []


def test_past_the_render_queue_the_answer_is_503(server_factory: Any) -> None:
    server = server_factory(render_concurrency=1, render_queue=1)
    image = upload(server, images.jpeg(1000, 700), "p.jpg", "image/jpeg")
    library = server.app.library
    release = threading.Event()
    # Occupy the imaging threads, so that the first rendering holds its slot until released.
    blockers = [library.imaging_pool.submit(release.wait) for _ in range(2)]
    results: dict[str, Response] = {}

    def ask(query: str) -> None:
        results[query] = server.request("GET", image.path + query)

    def wait_until(condition: Any) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, "the server never got there"
            time.sleep(0.01)

    first = threading.Thread(target=ask, args=("?w=160",))
    first.start()
    wait_until(lambda: library.renders_running == 1)
    second = threading.Thread(target=ask, args=("?w=320",))
    second.start()
    wait_until(lambda: library.renders_waiting == 1)
    try:
        over = server.request("GET", image.path + "?w=480")
        head = server.request("HEAD", image.path + "/w480.jpg")
    finally:
        release.set()
    first.join()
    second.join()
    for b in blockers:
        b.result()
    assert over.status == 503
    assert over.headers["Retry-After"] == "2"
    assert over.headers["Cache-Control"] == "no-store"
    assert over.json() == {
        "error": {
            "status": 503,
            "code": "busy_rendering",
            "message": "Too many images are being rendered; try again in 2 seconds.",
        }
    }
    assert (head.status, head.headers["Retry-After"], head.body) == (503, "2", b"")
    assert results["?w=160"].status == 200
    assert results["?w=320"].status == 200
    # Once the queue drains, the same request is served.
    assert server.request("GET", image.path + "?w=480").status == 200
