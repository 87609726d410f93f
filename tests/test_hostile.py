"""Hostile input, each case with the answer it must get: non-images and image/HTML
polyglots, decompression bombs in every format, animations with thousands of frames, huge
metadata, truncated and corrupt files, malformed multipart, path-like names, odd numbers
and headers, and raw HTTP garbage. Never a 500, never a hang, memory bounded (CONTRACT.md:
Upload, Errors, Storage; tests/test_upload.py has the basics, this file the nastier cases).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import re
import resource
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from PIL import Image

from appliance import imaging
from tests import images
from tests.api_helpers import assert_error, blob_files, list_images, tmp_files, wait_until
from tests.conftest import Response, Server, multipart, run_server
from tests.encoding import png_chunk

FAST = 5.0  # seconds: a bomb is refused from its header, never decoded
MAX_GROWTH_MB = 150  # peak RSS growth of the process (server included) per hostile upload
IMAGE_CSP = "default-src 'none'; sandbox"
MIME = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}


def start(tmp_path_factory: pytest.TempPathFactory, fast_path: bool = True) -> Server:
    data_dir = tmp_path_factory.mktemp("hostile") / "data"
    app, loop, thread = run_server(data_dir, fast_path=fast_path)
    srv = Server(app=app, loop=loop, data_dir=data_dir, api_key="", thread=thread)
    srv.api_key = srv.new_key("default")
    return srv


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the many upload cases (each checks that it left nothing behind)."""
    srv = start(tmp_path_factory)
    yield srv
    srv.stop()


@pytest.fixture(scope="module", params=["fast", "handler"])
def lanes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    srv = start(tmp_path_factory, fast_path=request.param == "fast")
    yield srv
    srv.stop()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def state(srv: Server) -> tuple[int, list[str]]:
    return list_images(srv)["total"], [p.name for p in blob_files(srv.data_dir)]


def refused(
    srv: Server, data: bytes, code: str, filename: str = "x.png", ctype: str = "image/png"
) -> dict[str, Any]:
    """Answered 400 with `code`, fast, within bounded memory, and nothing kept."""
    before, peak = state(srv), peak_rss_mb()
    started = time.monotonic()
    resp = srv.upload(data, filename, content_type=ctype)
    elapsed = time.monotonic() - started
    error = assert_error(resp, 400, code)
    assert elapsed < FAST, f"{elapsed:.1f} s"
    assert peak_rss_mb() - peak < MAX_GROWTH_MB
    assert state(srv) == before
    assert wait_until(lambda: tmp_files(srv.data_dir) == []), tmp_files(srv.data_dir)
    return error


def accepted(srv: Server, data: bytes, family: str, filename: str = "x.bin") -> dict[str, Any]:
    """Answered 201 and served back exactly, only ever as an image: the right image type,
    never sniffed, sandboxed, on both lanes of the proxy; its thumbnail renders."""
    peak = peak_rss_mb()
    started = time.monotonic()
    resp = srv.upload(data, filename, content_type="text/html")
    assert resp.status == 201, resp.body[:300]
    assert time.monotonic() - started < FAST
    image: dict[str, Any] = resp.json()
    assert image["mime_type"] == MIME[family]
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    for _ in range(2):  # the handler, then (cached) the fast lane
        served = srv.request("GET", f"/i/{image['id']}")
        assert served.status == 200
        assert served.body == data
        assert served.headers["Content-Type"] == MIME[family]
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        assert served.headers["Content-Security-Policy"] == IMAGE_CSP
    thumb = srv.request("GET", f"/i/{image['id']}?variant=thumbnail")
    assert thumb.status == 200
    assert thumb.headers["Content-Type"] == MIME[family]
    assert thumb.headers["Content-Security-Policy"] == IMAGE_CSP
    assert peak_rss_mb() - peak < MAX_GROWTH_MB
    image["thumbnail"] = thumb.body
    return image


# -- crafted files ------------------------------------------------------------------------


def png_with_chunk(kind: bytes, data: bytes) -> bytes:
    """A real 16x16 PNG with one more chunk right after IHDR."""
    base = images.png(16, 16)
    return base[:33] + png_chunk(kind, data) + base[33:]


@functools.cache
def deflated(size: int) -> bytes:
    """`size` zero bytes, zlib-compressed (about 1000:1)."""
    comp = zlib.compressobj(9)
    block = b"\0" * (1 << 20)
    return b"".join(comp.compress(block) for _ in range(size >> 20)) + comp.flush()


def gif(
    frames: int, width: int = 1, height: int = 1, screen: tuple[int, int] | None = None
) -> bytes:
    """A GIF89a built by hand: `frames` frames of width x height (a 1x1 frame is three LZW
    codes), on a logical screen that may claim more."""
    sw, sh = screen or (width, height)
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", sw, sh, 0xF1, 0, 0))
    out += bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])  # four-colour table
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop for ever
    for i in range(frames):
        out += b"\x21\xf9\x04" + struct.pack("<BHB", 0x04, 2, 0) + b"\x00"  # 20 ms
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
        codes = 4 | ((i % 4) << 3) | (5 << 6)  # clear, colour i % 4, end (3 bits each)
        out += b"\x02\x02" + struct.pack("<H", codes) + b"\x00"
    return bytes(out + b"\x3b")


def gif_with_comment(comment: bytes) -> bytes:
    data = images.gif(32, 24)
    return data[:-1] + b"\x21\xfe" + bytes([len(comment)]) + comment + b"\x00\x3b"


def jpeg_sof(width: int, height: int, marker: int = 0xC0) -> bytes:
    """A real JPEG whose frame header (SOF0 baseline or SOF2 progressive) claims more."""
    data = bytearray(images.jpeg(16, 16))
    at = re.search(rb"\xff[\xc0-\xc2]", bytes(data))
    assert at is not None
    data[at.start() + 1] = marker
    struct.pack_into(">HH", data, at.start() + 5, height, width)
    return bytes(data)


def jpeg_segments(count: int, marker: int, payload: bytes = b"") -> bytes:
    """A real JPEG with `count` extra segments (64 KB each) after SOI."""
    base = images.jpeg(16, 16)
    out = bytearray(base[:2])
    for i in range(count):
        body = payload.replace(b"#", bytes([i + 1])).replace(b"$", bytes([count]))
        body += b"C" * (65533 - len(body))
        out += bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body
    return bytes(out) + base[2:]


def riff(chunks: bytes) -> bytes:
    body = b"WEBP" + chunks
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def vp8x(width: int, height: int, flags: int) -> bytes:
    dims = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return webp_chunk(b"VP8X", bytes([flags, 0, 0, 0]) + dims)


def tiny_vp8() -> bytes:
    """The VP8 chunk of a real 1x1 lossy WebP."""
    return images.webp(1, 1)[12:]


def webp_canvas(width: int, height: int, animated: bool) -> bytes:
    """A big VP8X canvas over a 1x1 image: still, or as one frame of an animation."""
    if not animated:
        return riff(vp8x(width, height, 0) + tiny_vp8())
    frame = bytes(12) + (100).to_bytes(3, "little") + b"\x00" + tiny_vp8()
    anim = webp_chunk(b"ANIM", struct.pack("<IH", 0, 0))
    return riff(vp8x(width, height, 0x02) + anim + webp_chunk(b"ANMF", frame))


def webp_vp8_header(width: int, height: int) -> bytes:
    """A lossy key frame header claiming width x height, and no real data."""
    tag = (0 | (1 << 4) | (100 << 5)).to_bytes(3, "little")
    return riff(
        webp_chunk(b"VP8 ", tag + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + bytes(100))
    )


def webp_vp8l_header(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    return riff(webp_chunk(b"VP8L", b"\x2f" + struct.pack("<I", bits) + bytes(64)))


def webp_with(kind: bytes, flag: int, data: bytes) -> bytes:
    """A real 16x16 WebP with a metadata chunk (EXIF or XMP) under a VP8X header."""
    return riff(vp8x(16, 16, flag) + images.webp(16, 16)[12:] + webp_chunk(kind, data))


def real_png_bomb() -> bytes:
    """20000 x 20000 black pixels: 400 megapixels in a few hundred KB."""
    import pyvips

    data = bytes(pyvips.Image.black(20_000, 20_000).pngsave_buffer(compression=9))
    assert len(data) < 10 * 1024 * 1024
    return data


# -- not images ---------------------------------------------------------------------------

SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


@pytest.mark.parametrize(
    ("data", "filename", "ctype"),
    [
        pytest.param(b"\xef\xbb\xbf" + SVG, "logo.png", "image/png", id="svg with a BOM"),
        pytest.param(gzip.compress(SVG), "logo.svgz", "image/svg+xml", id="svgz"),
        pytest.param(b"  \n\t<html><script>alert(1)</script>", "a.jpg", "image/jpeg", id="html"),
        pytest.param(
            b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml">'
            b"<script>alert(1)</script></html>",
            "a.webp",
            "image/webp",
            id="xhtml",
        ),
        pytest.param(b"alert(document.cookie)//", "a.gif", "image/gif", id="javascript"),
        pytest.param(b"PK\x03\x04" + bytes(60), "a.webp", "image/webp", id="zip"),
        pytest.param(b"MZ\x90\x00" + bytes(60), "a.gif", "image/gif", id="exe"),
        pytest.param(
            struct.pack(">I", 28) + b"ftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(40),
            "a.avif",
            "image/avif",
            id="avif",
        ),
        pytest.param(
            struct.pack(">I", 24) + b"ftypheic\x00\x00\x00\x00mif1heic" + bytes(40),
            "a.heic",
            "image/heic",
            id="heic",
        ),
        pytest.param(b"\xff\x0a" + bytes(60), "a.jxl", "image/jxl", id="jpeg xl"),
        pytest.param(b"8BPS\x00\x01" + bytes(60), "a.png", "image/png", id="psd"),
        pytest.param(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40), "a.webp", "image/webp", id="wav"),
        pytest.param(b"\x00\x00\x01\x00\x01\x00" + bytes(60), "favicon.png", "image/png", id="ico"),
    ],
)
def test_non_images_are_400_whatever_their_name_and_type(
    shared: Server, data: bytes, filename: str, ctype: str
) -> None:
    refused(shared, data, "unsupported_media_type", filename, ctype)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GIF89a/*\x00\x00\xf0\x00\x00*/=1;alert(1);//" + bytes(40), id="gif-js"),
        pytest.param(
            images.png(8, 8)[:33] + png_chunk(b"tEXt", b"x\x00<script>alert(1)</script>"),
            id="png header then script, no pixels",
        ),
        pytest.param(
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
            b"<html><script>alert(1)</script></html>",
            id="jpeg header then html",
        ),
        pytest.param(riff(b"<html><script>alert(1)</script></html>"), id="webp header then html"),
    ],
)
def test_polyglots_that_do_not_decode_are_400(shared: Server, data: bytes) -> None:
    refused(shared, data, "malformed_image")


@pytest.mark.parametrize(
    ("data", "family"),
    [
        pytest.param(
            gif_with_comment(b"<html><script>alert(1)</script></html>"), "gif", id="gif comment"
        ),
        pytest.param(
            png_with_chunk(b"tEXt", b"Comment\x00<html><script>alert(1)</script></html>"),
            "png",
            id="png tEXt",
        ),
        pytest.param(
            images.png(16, 16) + b"<html><script>alert(1)</script></html>",
            "png",
            id="png with html after IEND",
        ),
        pytest.param(
            jpeg_segments(1, 0xFE, b"<html><script>alert(1)</script></html>"),
            "jpeg",
            id="jpeg comment",
        ),
        pytest.param(
            webp_with(b"XMP ", 0x04, b"<x:xmpmeta><script>alert(1)</script></x:xmpmeta>"),
            "webp",
            id="webp xmp",
        ),
    ],
)
def test_polyglots_that_decode_are_only_ever_served_as_images(
    shared: Server, data: bytes, family: str
) -> None:
    image = accepted(shared, data, family, filename="page.html")
    assert image["filename"] == "page.html"  # a label; the type came from the bytes
    assert b"<script" not in image["thumbnail"]  # thumbnails carry no metadata


# -- decompression bombs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(images.png_header_only(100_000, 100_000), "image_too_large", id="png"),
        pytest.param(gif(1, screen=(65535, 65535)), "image_too_large", id="gif screen"),
        pytest.param(gif(1, 65535, 65535), "image_too_large", id="gif frame"),
        pytest.param(jpeg_sof(65000, 65000), "image_too_large", id="jpeg baseline"),
        pytest.param(jpeg_sof(65000, 65000, 0xC2), "image_too_large", id="jpeg progressive"),
        pytest.param(webp_vp8_header(16383, 16383), "image_too_large", id="webp lossy"),
        pytest.param(webp_canvas(16383, 16383, animated=True), "image_too_large", id="webp anim"),
        # libwebp itself refuses these two headers: they never parse.
        pytest.param(webp_canvas(16383, 16383, animated=False), "malformed_image", id="webp vp8x"),
        pytest.param(webp_vp8l_header(16384, 16384), "malformed_image", id="webp lossless"),
    ],
)
def test_decompression_bombs_by_header_are_400_fast(shared: Server, data: bytes, code: str) -> None:
    error = refused(shared, data, code)
    if code == "image_too_large":
        assert "Scale it down" in error["message"]


def test_a_real_decompression_bomb_is_400_fast(shared: Server) -> None:
    bomb = real_png_bomb()
    error = refused(shared, bomb, "image_too_large")
    assert "20000x20000" in error["message"]


# -- animations ----------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [imaging.MAX_FRAMES + 1, 3000])
def test_gifs_with_too_many_frames_are_400(shared: Server, frames: int) -> None:
    error = refused(shared, gif(frames), "image_too_large")
    assert f"in {frames} frames" in error["message"]


def test_gif_at_the_frame_limit_is_accepted(shared: Server) -> None:
    accepted(shared, gif(imaging.MAX_FRAMES), "gif")


def test_gif_with_900_frames_keeps_an_animated_thumbnail_of_at_most_50(shared: Server) -> None:
    image = accepted(shared, gif(900), "gif")
    thumb = Image.open(io.BytesIO(image["thumbnail"]))
    assert thumb.format == "GIF"
    assert 1 < thumb.n_frames <= imaging.THUMBNAIL_FRAMES


# -- huge metadata: accepted, stored exactly, never decoded into memory or the thumbnail ----

BIG = 9 * 1024 * 1024


INFLATED = 512 * 1024 * 1024  # what the compressed chunks below would inflate to

# Made when the test runs (deflating 512 MB of zeros takes a second), not at collection.
METADATA: dict[str, tuple[Callable[[], bytes], str]] = {
    "png tEXt 9MB": (lambda: png_with_chunk(b"tEXt", b"k\x00" + b"A" * BIG), "png"),
    "png zTXt 512MB": (lambda: png_with_chunk(b"zTXt", b"k\x00\x00" + deflated(INFLATED)), "png"),
    "png iTXt 512MB": (
        lambda: png_with_chunk(b"iTXt", b"k\x00\x01\x00\x00\x00" + deflated(INFLATED)),
        "png",
    ),
    "png iCCP 512MB": (lambda: png_with_chunk(b"iCCP", b"icc\x00\x00" + deflated(INFLATED)), "png"),
    "jpeg 140 COM": (lambda: jpeg_segments(140, 0xFE), "jpeg"),
    "jpeg 140 APP1": (lambda: jpeg_segments(140, 0xE1, b"Exif\x00\x00"), "jpeg"),
    "jpeg ICC in 140 chunks": (lambda: jpeg_segments(140, 0xE2, b"ICC_PROFILE\x00#$"), "jpeg"),
    "webp EXIF 9MB": (lambda: webp_with(b"EXIF", 0x08, b"E" * BIG), "webp"),
}


@pytest.mark.parametrize("case", METADATA)
def test_huge_metadata_is_stored_but_never_kept_in_thumbnails(shared: Server, case: str) -> None:
    make, family = METADATA[case]
    image = accepted(shared, make(), family)
    assert (image["width"], image["height"]) == (16, 16)
    assert len(image["thumbnail"]) < 16 * 1024


# -- truncated and corrupt files -------------------------------------------------------------


def zero_tail(data: bytes) -> bytes:
    return data[: len(data) // 2] + bytes(len(data) - len(data) // 2)


def progressive_jpeg() -> bytes:
    return images._save(images.gradient(200, 150), "JPEG", progressive=True)


def lossless_webp() -> bytes:
    return images._save(images.gradient(200, 150), "WEBP", lossless=True)


def damaged() -> Iterator[Any]:
    """(name, bytes, expected): 'malformed_image', or 'accepted' where every pixel (or every
    frame kept) is still there to decode."""
    files = {
        "png": images.png(200, 150),
        "jpeg": images.jpeg(200, 150),
        "progressive jpeg": progressive_jpeg(),
        "gif": images.gif(200, 150, frames=3),
        "webp": images.webp(200, 150),
        "lossless webp": lossless_webp(),
        "animated webp": images.animated_webp(200, 150, 3),
    }
    for name, data in files.items():
        yield pytest.param(data[:30], "malformed_image", id=f"{name} header only")
        yield pytest.param(data[: len(data) // 4], "malformed_image", id=f"{name} quarter")
        if name != "gif":  # the GIF's first frame is whole by half-way: see below
            yield pytest.param(data[: len(data) // 2], "malformed_image", id=f"{name} half")
            yield pytest.param(zero_tail(data), "malformed_image", id=f"{name} zeroed tail")
    png, jpeg, gif_ = files["png"], files["jpeg"], files["gif"]
    # Only the end marker or its checksum is missing: every pixel is there.
    yield pytest.param(png[:-1], "accepted", id="png without the last CRC byte")
    yield pytest.param(jpeg[:-2], "malformed_image", id="jpeg without EOI")
    # A GIF cut after whole frames shows those frames, in browsers as here.
    yield pytest.param(gif_[:-1], "accepted", id="gif without its trailer")
    yield pytest.param(gif_[: len(gif_) // 2], "accepted", id="gif cut between frames")
    # Corrupt compressed data: PNG and GIF decoders notice, JPEG's only warns (and decodes).
    flip = bytes(b ^ 0x55 for b in png[len(png) // 2 : len(png) // 2 + 32])
    yield pytest.param(
        png[: len(png) // 2] + flip + png[len(png) // 2 + 32 :], "malformed_image", id="png flip"
    )
    flip = bytes(b ^ 0x55 for b in jpeg[len(jpeg) // 2 : len(jpeg) // 2 + 32])
    yield pytest.param(
        jpeg[: len(jpeg) // 2] + flip + jpeg[len(jpeg) // 2 + 32 :], "accepted", id="jpeg flip"
    )
    mid = len(gif_) // 2
    flip = bytes(b ^ 0x55 for b in gif_[mid : mid + 32])
    yield pytest.param(gif_[:mid] + flip + gif_[mid + 32 :], "malformed_image", id="gif flip")


def family_of(data: bytes) -> str:
    mime = imaging.sniff(data[:64])
    assert mime is not None
    return {v: k for k, v in MIME.items()}[mime]


@pytest.mark.parametrize(("data", "expected"), list(damaged()))
def test_truncated_and_corrupt_files(shared: Server, data: bytes, expected: str) -> None:
    if expected == "accepted":
        accepted(shared, data, family_of(data))
    else:
        refused(shared, data, expected)


# -- malformed multipart ---------------------------------------------------------------------


def raw_post(srv: Server, body: bytes, boundary: str = "abc") -> Response:
    return srv.request(
        "POST",
        "/v3/images",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )


def part(disposition: bytes, value: bytes, extra: bytes = b"") -> bytes:
    return (
        b"--abc\r\nContent-Disposition: "
        + disposition
        + b"\r\n"
        + extra
        + b"\r\n"
        + value
        + b"\r\n"
    )


PNG = images.png(20, 10)
END = b"--abc--\r\n"


@pytest.mark.parametrize(
    ("body", "filename"),
    [
        pytest.param(
            part(b'form-data; name="file"; filename="caf\xe9.png"', PNG) + END,
            "caf\ufffd.png",
            id="latin-1 byte in filename",
        ),
        pytest.param(
            part(b'form-data; name="file"; filename="\xff\xfe\x00.png"', PNG) + END,
            "\ufffd\ufffd.png",
            id="invalid utf-8 and NUL",
        ),
        pytest.param(
            part(b'form-data; name="file"; filename="/etc/passwd"', PNG) + END,
            "passwd",
            id="absolute path",
        ),
        pytest.param(
            part(b"form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC.png", PNG) + END,
            "image.png",
            id="RFC 5987 filename is not used",
        ),
        pytest.param(part(b'form-data; name="file"', PNG) + END, "image.png", id="no filename"),
        pytest.param(
            part(b'form-data; name="file"; filename="e.png"', PNG) + END + b"epilogue" * 100,
            "e.png",
            id="epilogue",
        ),
        pytest.param(
            part(b'form-data; name="file"; filename="n.png"', PNG) + b"--abc--",
            "n.png",
            id="no CRLF after the closing boundary",
        ),
        pytest.param(
            part(b'form-data; name="file"; filename="h.png"', PNG, b"Content-Type: text/html\r\n")
            + END,
            "h.png",
            id="declared text/html",
        ),
        pytest.param(
            part(b'form-data; name="comment"', b"x" * 5_000_000)
            + part(b'form-data; name="file"; filename="u.png"', PNG)
            + END,
            "u.png",
            id="5 MB unknown field is read past",
        ),
    ],
)
def test_odd_but_parseable_forms_are_accepted(shared: Server, body: bytes, filename: str) -> None:
    resp = raw_post(shared, body)
    assert resp.status == 201, resp.body[:300]
    image = resp.json()
    assert image["filename"] == filename
    assert shared.request("GET", f"/i/{image['id']}").body == PNG


def test_boundary_lookalikes_inside_the_file_are_file_bytes(shared: Server) -> None:
    """The streaming parser must not cut the file at a partial or unanchored boundary."""
    tricky = b"--abc not at a line start\r\n--ab\r\n--abc-\r\n\r\n--abcX"
    data = PNG[:-12] + png_chunk(b"zzPd", tricky * 2000) + PNG[-12:]
    body = part(b'form-data; name="file"; filename="t.png"', data) + END
    resp = raw_post(shared, body)
    assert resp.status == 201, resp.body
    assert shared.request("GET", f"/i/{resp.json()['id']}").body == data


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(part(b"form-data", PNG) + END, "malformed_multipart", id="part without name"),
        pytest.param(
            part(b'form-data; name="file"; filename="a\rb.png"', PNG) + END,
            "malformed_multipart",
            id="raw CR in the filename",
        ),
        # RFC 2046 allows a preamble; python-multipart does not, and no browser sends one.
        pytest.param(
            b"preamble\r\n" + part(b'form-data; name="file"; filename="p.png"', PNG) + END,
            "malformed_multipart",
            id="preamble",
        ),
        pytest.param(
            b"--abc\r\nNo colon in this header line\r\n\r\n" + PNG + b"\r\n" + END,
            "malformed_multipart",
            id="header without colon",
        ),
        pytest.param(
            part(b'attachment; name="file"; filename="a.png"', PNG) + END,
            "malformed_multipart",
            id="attachment disposition",
        ),
        pytest.param(
            b"".join(part(f'form-data; name="f{i}"'.encode(), b"x") for i in range(16))
            + part(b'form-data; name="file"; filename="a.png"', PNG)
            + END,
            "invalid_form",
            id="17 parts",
        ),
        pytest.param(
            part(b'form-data; name="file"; filename="a.png"', PNG)
            + part(b'form-data; name="alt_text"', b"a" * (8 * 1024 + 1))
            + END,
            "invalid_field",
            id="alt_text over 8 KiB",
        ),
        pytest.param(
            part(b'form-data; name="file"; filename="a.png"', PNG).replace(b"\r\n", b"\n") + END,
            "malformed_multipart",
            id="LF line endings",
        ),
    ],
)
def test_malformed_forms_are_400(shared: Server, body: bytes, code: str) -> None:
    before = state(shared)
    assert_error(raw_post(shared, body), 400, code)
    assert state(shared) == before
    assert wait_until(lambda: tmp_files(shared.data_dir) == [])


def test_a_form_with_exactly_sixteen_parts_is_accepted(shared: Server) -> None:
    body = (
        b"".join(part(f'form-data; name="f{i}"'.encode(), b"x") for i in range(15))
        + part(b'form-data; name="file"; filename="a.png"', PNG)
        + END
    )
    assert raw_post(shared, body).status == 201


# -- folder names that look like paths are labels ----------------------------------------------


@pytest.mark.parametrize(
    "folder",
    [
        "../../etc",
        "/abs",
        "C:\\x",
        "..\\..\\windows",
        "%2e%2e%2f",
        "~root/.ssh",
        "\\\\srv\\share",
        ".",
        "..",
        "con",
        "nul:",
        "a/../../b",
        "é/日本",
    ],
)
def test_path_like_folders_are_stored_as_labels(shared: Server, folder: str) -> None:
    root = shared.data_dir.parent.parent
    outside_before = sorted(p for p in root.rglob("*") if shared.data_dir not in (p, *p.parents))
    image = shared.upload(images.png(), "f.png", folder=folder).json()
    assert image["folder"] == folder
    patched = shared.request(
        "PATCH", f"/v3/images/{image['id']}", json_body={"folder": folder + "2"}
    )
    assert patched.json()["folder"] == folder + "2"
    assert folder + "2" in shared.request("GET", "/v3/images/folders").json()["folders"]
    listed = list_images(shared, f"folder={quote(folder + '2', safe='')}")
    assert [i["id"] for i in listed["images"]] == [image["id"]]
    # Nothing appeared outside the data directory, nor under a user-supplied name inside it.
    outside_after = sorted(p for p in root.rglob("*") if shared.data_dir not in (p, *p.parents))
    assert outside_after == outside_before
    for p in shared.data_dir.rglob("*"):
        rel = p.relative_to(shared.data_dir).as_posix()
        assert re.fullmatch(
            r"pictor\.db(-wal|-shm)?|blobs|derived|tmp|(blobs|derived)/[0-9a-f]{2}"
            r"|blobs/[0-9a-f]{2}/[0-9a-f]{64}|derived/[0-9a-f]{2}/[0-9a-f]{64}\.thumbnail",
            rel,
        ), rel


# -- numbers SQLite cannot hold ----------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "page_size=1e3",
        "page_size=0x10",
        "page_size=9223372036854775808",
        "page=18446744073709551616",
        "page=%D9%A1",  # ARABIC-INDIC DIGIT ONE: isdigit(), but not ASCII
        "page=%C2%B9",  # SUPERSCRIPT ONE
        "page=1%00",
        "page=%00",
        "page=-0",
        "page=1_000",
        "page=1%20",
        "page_size=" + "9" * 5000,
    ],
)
def test_numbers_too_large_or_odd_are_400(shared: Server, query: str) -> None:
    assert_error(shared.request("GET", f"/v3/images?{query}"), 400, "invalid_parameter")


@pytest.mark.parametrize("search", ["%00", "abc%00def", "%00%00%00", "%1B%5B31m", "x%7F"])
def test_control_characters_in_search_are_400_not_a_database_error(
    shared: Server, search: str
) -> None:
    """A NUL once reached SQLite's FTS5 query parser ("unterminated string": a 500)."""
    assert_error(shared.request("GET", f"/v3/images?search={search}"), 400, "invalid_parameter")
    assert list_images(shared, "search=%09tab%0Aline")["images"] == []  # whitespace is text


def test_the_last_possible_page_is_an_empty_page_not_an_overflow(shared: Server) -> None:
    body = list_images(shared, "page=1000000000&page_size=100")
    assert (body["images"], body["page"], body["page_size"]) == ([], 1_000_000_000, 100)


# -- odd Range and conditional headers on /i/ (both lanes) -----------------------------------


def raw_exchange(srv: Server, data: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes; read until the server closes (requests say Connection: close)."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    try:
        # Refused before we finished sending? What it answered is read below.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out
    finally:
        sock.close()


def statuses(answer: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)]


@pytest.fixture(scope="module")
def served(lanes: Server) -> tuple[Server, str, bytes]:
    data = images.png(64, 48)
    image = lanes.upload(data).json()
    assert lanes.request("GET", f"/i/{image['id']}").status == 200  # now hot
    return lanes, f"/i/{image['id']}", data


THOUSAND_RANGES = b"bytes=" + b",".join(b"%d-%d" % (i, i) for i in range(1000))
WHOLE = 200


@pytest.mark.parametrize(
    ("name", "value", "status"),
    [
        (b"Range", b"", WHOLE),
        (b"Range", b"x" * 8192, WHOLE),
        (b"Range", b"bytes=0-0" + b" " * 8000, 206),
        (b"Range", "bytes=\xe9-".encode("latin-1"), WHOLE),
        (b"Range", "bytes=0-1€".encode(), WHOLE),
        (b"Range", b"bytes=-", WHOLE),
        (b"Range", b"bytes=1-0", WHOLE),
        (b"Range", b"bytes=0-0,-0", 206),  # the unsatisfiable -0 is dropped
        (b"Range", THOUSAND_RANGES, WHOLE),
        (b"Range", b"bytes=99999999999999999999999-", 416),
        (b"Range", b"bytes=-99999999999999999999999", 206),  # a suffix longer than the file
        (b"Range", b"\x00", 400),  # Tornado refuses NUL in a header before we see it
        (b"If-None-Match", b"", WHOLE),
        (b"If-None-Match", b"x" * 8192, WHOLE),
        (b"If-None-Match", b"W/", WHOLE),
        (b"If-None-Match", b'"unterminated', WHOLE),
        (b"If-None-Match", b"\xff\xfe", WHOLE),
        (b"If-None-Match", '"é"'.encode(), WHOLE),
        (b"If-None-Match", b"*, *", WHOLE),
        (b"If-None-Match", b",,,,", WHOLE),
        (b"If-None-Match", b'W/"' + b"a" * 8000 + b'"', WHOLE),
        (b"If-Range", b"\xff", WHOLE),
        (b"If-Range", b'"x', WHOLE),
        (b"If-Modified-Since", b"Mon, 32 Jan 99999 00:00:00 GMT", WHOLE),
        (b"If-Modified-Since", b"0" * 8000, WHOLE),
        (b"If-Modified-Since", b"\xff", WHOLE),
        (b"If-Match", b"\xff", 412),
        (b"If-Match", b'"x', 412),
        (b"If-Unmodified-Since", b"\xff", WHOLE),
    ],
)
def test_odd_range_and_conditional_headers(
    served: tuple[Server, str, bytes], name: bytes, value: bytes, status: int
) -> None:
    srv, path, data = served
    head = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if name == b"If-Range":
        head += b"Range: bytes=0-9\r\n"  # If-Range only matters with a Range
    answer = raw_exchange(srv, head + name + b": " + value + b"\r\n\r\n")
    assert statuses(answer) == [status], answer[:300]
    body = answer.partition(b"\r\n\r\n")[2]
    if status == WHOLE:
        assert body == data
    elif status == 206:
        match = re.search(rb"Content-Range: bytes (\d+)-(\d+)/(\d+)", answer)
        assert match is not None, answer[:300]
        first, last = int(match.group(1)), int(match.group(2))
        assert body == data[first : last + 1]
    # and it still answers, on the same lane
    assert srv.request("GET", path).body == data


# -- raw HTTP garbage ------------------------------------------------------------------------


def assert_up(srv: Server) -> None:
    assert srv.request("GET", "/v3/images").status == 200


H = b"Host: x\r\nConnection: close\r\n"


@pytest.mark.parametrize(
    ("raw", "allowed"),
    [
        pytest.param(
            b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n" + H + b"\r\n",
            [[]],
            id="100 KB request line",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\n"
            + H
            + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 90) for i in range(1100))
            + b"\r\n",
            [[]],
            id="100 KB of headers",
        ),
        pytest.param(b"FOO / HTTP/1.1\r\n" + H + b"\r\n", [[405]], id="unknown method"),
        pytest.param(b"GET /\r\n\r\n", [[400]], id="HTTP/0.9"),
        pytest.param(b"GET / HTTP/2.0\r\n" + H + b"\r\n", [[400]], id="HTTP/2.0 line"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", [[400]], id="h2 preface"),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + H + b"NoColonHere\r\n\r\n", [[400]], id="header without colon"
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + H + b"X-A : b\r\n\r\n", [[400]], id="space before colon"
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + H + b"X-A: b\r\n c\r\n\r\n", [[400]], id="obsolete folding"
        ),
        pytest.param(b"GET /i/\x00 HTTP/1.1\r\n" + H + b"\r\n", [[400]], id="NUL in path"),
        pytest.param(b"GET /i/\xe9 HTTP/1.1\r\n" + H + b"\r\n", [[404]], id="latin-1 in path"),
        pytest.param(
            b"GET /i/%zz%ff HTTP/1.1\r\n" + H + b"\r\n", [[400]], id="bad percent escapes"
        ),
        pytest.param(b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", [[404]], id="asterisk form"),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999\r\n\r\n",
            [[400]],
            id="absurd length on GET",
        ),
        pytest.param(
            b"GET /v3/images HTTP/1.1\r\n" + H + b"Authorization: Bearer \xff\xfe\r\n\r\n",
            [[401]],
            id="binary bearer",
        ),
        pytest.param(
            b"GET /v3/images HTTP/1.1\r\n"
            + H
            + b"Authorization: Bearer "
            + b"k" * 30_000
            + b"\r\n\r\n",
            [[401]],
            id="30 KB bearer",
        ),
    ],
)
def test_http_garbage_gets_a_4xx_or_a_closed_connection(
    shared: Server, raw: bytes, allowed: list[list[int]]
) -> None:
    answer = raw_exchange(shared, raw)
    assert statuses(answer) in allowed, answer[:300]
    assert_up(shared)


def authed_post(srv: Server, framing: bytes, body: bytes = b"") -> bytes:
    head = (
        b"POST /v3/images HTTP/1.1\r\n"
        + H
        + b"Authorization: Bearer "
        + srv.api_key.encode()
        + b"\r\nContent-Type: multipart/form-data; boundary=abc\r\n"
    )
    return raw_exchange(srv, head + framing + b"\r\n" + body)


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(b"Content-Length: -5\r\n", id="negative length"),
        pytest.param(b"Content-Length: 1e3\r\n", id="length 1e3"),
        pytest.param(b"Content-Length: +5\r\n", id="length +5"),
        pytest.param(b"Content-Length: 5\r\nContent-Length: 6\r\n", id="two lengths"),
        pytest.param(
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", id="length and chunked"
        ),
        pytest.param(b"Transfer-Encoding: gzip\r\n", id="unknown transfer coding"),
    ],
)
def test_ambiguous_body_framing_is_400(shared: Server, framing: bytes) -> None:
    assert statuses(authed_post(shared, framing, b"0\r\n\r\n")) == [400]
    assert_up(shared)


@pytest.mark.parametrize("size_line", [b"zz", b"ffffffffffffffffff", b"-1"])
def test_bad_chunk_sizes_are_400(shared: Server, size_line: bytes) -> None:
    answer = authed_post(
        shared, b"Transfer-Encoding: chunked\r\n", size_line + b"\r\nhello\r\n0\r\n\r\n"
    )
    assert statuses(answer) == [400]
    assert wait_until(lambda: tmp_files(shared.data_dir) == [])
    assert_up(shared)


def test_a_header_block_that_never_ends_blocks_no_one(shared: Server) -> None:
    hold = socket.create_connection(("127.0.0.1", shared.port), timeout=5)
    try:
        hold.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n")  # no blank line, ever
        for _ in range(3):
            assert_up(shared)  # others are served meanwhile
        hold.settimeout(1.0)
        with pytest.raises(TimeoutError):
            hold.recv(1)  # and the server waits, answering nothing half-read
    finally:
        hold.close()
    assert_up(shared)


def test_binary_garbage_and_tls_hellos_are_not_answered_and_harm_nothing(shared: Server) -> None:
    socks = []
    for garbage in (
        bytes(range(256)) * 4,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100),
    ):
        sock = socket.create_connection(("127.0.0.1", shared.port), timeout=1)
        sock.sendall(garbage)
        socks.append(sock)
    try:
        assert_up(shared)
        for sock in socks:
            with contextlib.suppress(TimeoutError):  # waiting for an end of headers
                assert statuses(sock.recv(1024)) == []
    finally:
        for sock in socks:
            sock.close()
    assert_up(shared)


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\n\r\nhello",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
)
def test_a_body_on_get_is_read_and_dropped_keeping_the_connection_in_step(
    served: tuple[Server, str, bytes], framing: bytes
) -> None:
    srv, path, data = served
    first = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + framing
    second = b"GET " + path.encode() + b" HTTP/1.1\r\n" + H + b"\r\n"
    answer = raw_exchange(srv, first + second)
    assert statuses(answer) == [200, 200], answer[:300]
    assert answer.count(data) == 2


def test_an_upload_cut_off_mid_body_leaves_nothing(shared: Server) -> None:
    before = state(shared)
    body, ctype = multipart([("file", images.padded_png(2_000_000), "cut.png", "image/png")])
    sock = socket.create_connection(("127.0.0.1", shared.port), timeout=5)
    try:
        sock.sendall(
            b"POST /v3/images HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + shared.api_key.encode()
            + f"\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        time.sleep(0.2)  # the server is streaming it to a temp file
    finally:
        sock.close()
    assert wait_until(lambda: tmp_files(shared.data_dir) == []), tmp_files(shared.data_dir)
    assert state(shared) == before
    assert_up(shared)


def test_many_idle_connections_do_not_stop_the_server(shared: Server) -> None:
    idle = [socket.create_connection(("127.0.0.1", shared.port), timeout=5) for _ in range(200)]
    try:
        assert_up(shared)
        image = shared.upload(images.png(30, 30)).json()
        assert shared.request("GET", f"/i/{image['id']}").status == 200
    finally:
        for sock in idle:
            sock.close()
