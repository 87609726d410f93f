"""Everything that looks inside image bytes: sniffing, header probes, limits, thumbnails.

All functions here block; callers run them in the imaging executor. `pyvips.Error` never
leaves this module: it becomes an `ImageRejected` with a sentence a person can act on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import pyvips

from appliance.errors import ImagingUnavailable

# Decompression-bomb limits, checked on the header before any pixel is decoded.
MAX_FRAME_PIXELS = 100_000_000  # 100 megapixels: any camera's full frame
MAX_DIMENSION = 30_000  # pixels on either side
MAX_TOTAL_PIXELS = 400_000_000  # all frames of an animation together
MAX_FRAMES = 1_000

THUMBNAIL_SIZE = 320
THUMBNAIL_FRAMES = 50  # animated thumbnails keep at most this many frames
# Part of the thumbnail's ETag; bump when the output changes. 2: palette PNG sources give
# palette PNG thumbnails (smaller, and as faithful as the source).
THUMBNAIL_VERSION = "2"

_ALLOWED_LOADERS = (
    "VipsForeignLoadJpeg",
    "VipsForeignLoadPng",
    "VipsForeignLoadNsgif",
    "VipsForeignLoadWebp",
)

# The family of each type, as libvips names its loader ("jpegload", "pngload", ...).
FAMILIES = {"image/jpeg": "jpeg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}


class ImageRejected(Exception):
    """The bytes are not an image we accept; `code` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    mime_type: str
    width: int
    height: int  # of one frame
    pages: int
    orientation: int = 1  # EXIF orientation, 1-8; 5-8 swap the sides as shown
    palette: bool = False  # a palette (indexed colour) PNG or a GIF

    @property
    def shown(self) -> tuple[int, int]:
        """Width and height as shown, after EXIF orientation."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


def init_pyvips() -> str:
    """Lock libvips down before any image is touched; returns a line for the start-up log.

    Only the JPEG, PNG, GIF and WebP loaders may ever run: every other loader (SVG, PDF,
    TIFF, HEIF, magick, ...) is blocked, and so is anything libvips marks untrusted.
    """
    if not pyvips.API_mode:
        raise ImagingUnavailable(
            "pyvips is running in ABI mode: the libvips of the pyvips-binary wheel was not "
            "loaded. Reinstall pyvips-binary (and do not strip a packaged executable)."
        )
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoad", True)
    for loader in _ALLOWED_LOADERS:
        pyvips.operation_block_set(loader, False)
    pyvips.cache_set_max(0)  # we never reopen the same file soon; do not pin memory
    pyvips.concurrency_set(1)  # parallelism comes from the executor, one image per thread
    version = ".".join(str(pyvips.version(i)) for i in range(3))
    return f"libvips {version} (API mode)"


def sniff(head: bytes) -> str | None:
    """The MIME type from the magic numbers, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _describe(exc: pyvips.Error) -> str:
    detail = " ".join(str(exc.detail or "").split())
    return detail[:200] or "it could not be decoded"


def _gif_screen(path: str) -> tuple[int, int]:
    """The logical screen size a GIF's header declares."""
    with open(path, "rb") as f:
        head = f.read(10)
    if len(head) < 10:
        return 0, 0
    width, height = struct.unpack("<HH", head[6:10])
    return int(width), int(height)


def probe(path: str, mime_type: str) -> ImageInfo:
    """Read the header with the loader of the sniffed type only, and apply the bomb limits."""
    family = FAMILIES[mime_type]
    loader = getattr(pyvips.Image, family + "load")
    try:
        image = loader(path, access="sequential", fail_on="error")
        loaded_by = str(image.get("vips-loader"))
        pages = int(image.get("n-pages")) if image.get_typeof("n-pages") else 1
        orientation = int(image.get("orientation")) if image.get_typeof("orientation") else 1
        palette = bool(image.get("palette")) if image.get_typeof("palette") else False
    except pyvips.Error as exc:
        raise ImageRejected(
            "malformed_image",
            f"The file is not a readable {family.upper()} image: {_describe(exc)}.",
        ) from exc
    if not loaded_by.startswith(family):
        raise ImageRejected(
            "unsupported_media_type", "The file's content is not a supported image."
        )
    width, height = image.width, image.height
    # Browsers and mail clients size a GIF by its logical screen; libnsgif ignores an absurd
    # one (it decodes at the frames' size), so the header's claim is checked as well.
    screen_w, screen_h = _gif_screen(path) if family == "gif" else (0, 0)
    side_w, side_h = max(width, screen_w), max(height, screen_h)
    if (
        side_w > MAX_DIMENSION
        or side_h > MAX_DIMENSION
        or side_w * side_h > MAX_FRAME_PIXELS
        or pages > MAX_FRAMES
        or side_w * side_h * pages > MAX_TOTAL_PIXELS
    ):
        raise ImageRejected(
            "image_too_large",
            f"The image is {side_w}x{side_h} pixels"
            + (f" in {pages} frames" if pages > 1 else "")
            + f"; the limit is {MAX_DIMENSION} pixels a side, {MAX_FRAME_PIXELS // 1_000_000} "
            f"megapixels a frame and {MAX_FRAMES} frames. Scale it down and upload it again.",
        )
    return ImageInfo(
        mime_type=mime_type,
        width=width,
        height=height,
        pages=max(pages, 1),
        orientation=orientation if 1 <= orientation <= 8 else 1,
        palette=palette or family == "gif",
    )


def thumbnail(path: str, info: ImageInfo) -> bytes:
    """A thumbnail at most 320x320, never upscaled, EXIF orientation applied, sRGB, 8 bit,
    metadata stripped, in the original's format family; animations stay animated.

    It decodes the whole file (at the reduced scale where the format allows shrink-on-load),
    so it also proves that the image is complete: truncated or corrupt files raise
    `ImageRejected`.
    """
    family = FAMILIES[info.mime_type]
    kwargs: dict[str, Any] = {"height": THUMBNAIL_SIZE, "size": "down", "fail_on": "error"}
    if family in ("gif", "webp") and info.pages > 1:
        # Loader options ride on the file name; our paths end in a hex digest, never in "]".
        path = f"{path}[n={min(info.pages, THUMBNAIL_FRAMES)}]"
    try:
        if family == "jpeg":
            fit = min(THUMBNAIL_SIZE / info.width, THUMBNAIL_SIZE / info.height, 1.0)
            width, height = info.shown
            image = jpeg_scaled(path, info, max(1, round(width * fit)), max(1, round(height * fit)))
        else:
            image = pyvips.Image.thumbnail(path, THUMBNAIL_SIZE, **kwargs)
        image = to_srgb8(image)
        return encode(image, family, palette=info.palette)
    except pyvips.Error as exc:
        raise ImageRejected(
            "malformed_image",
            f"The file is damaged or incomplete and cannot be decoded: {_describe(exc)}.",
        ) from exc


def jpeg_scaled(path: str, info: ImageInfo, width: int, height: int) -> pyvips.Image:
    """A JPEG at `width` x `height` as shown (never more than its own size): `thumbnail`'s
    steps spelled out. libjpeg's DCT scaling (shrink-on-load by 1/2, 1/4 or 1/8, staying at
    least as large as the result), then EXIF rotation, the embedded ICC profile to sRGB, and
    a Lanczos resize. Measured by `make bench` on a 12 MP photo, this is about 15% less work
    than `thumbnail`, which opens the file twice."""
    shown_w, shown_h = info.shown
    fit = max(width / shown_w, height / shown_h)
    shrink = next(s for s in (8, 4, 2, 1) if s * fit <= 1.0)
    image = pyvips.Image.jpegload(path, shrink=shrink, access="sequential", fail_on="error")
    orientation = image.get("orientation") if image.get_typeof("orientation") else 1
    if orientation != 1:
        image = image.copy_memory().autorot()  # small by now; rotation needs random access
    if image.get_typeof("icc-profile-data"):
        image = image.icc_transform("srgb", embedded=True, intent="perceptual")
    if (image.width, image.height) != (width, height):
        image = image.resize(width / image.width, vscale=height / image.height)
    return image


def to_srgb8(image: pyvips.Image) -> pyvips.Image:
    """CMYK, Lab, 16-bit and float images become 8-bit sRGB (or 8-bit grey)."""
    interpretation = str(image.interpretation)
    target = "b-w" if interpretation in ("b-w", "grey16") else "srgb"
    if interpretation != target or image.format != "uchar":
        image = image.colourspace(target)
    if image.format != "uchar":
        image = image.cast("uchar")
    return image


def encode(image: pyvips.Image, family: str, *, palette: bool = False) -> bytes:
    """The settings of every rendering (README, "Image quality"): JPEG quality 85 with
    optimised Huffman tables, transparency flattened onto white; PNG zlib level 6, as a
    palette image when the source was one; GIF at effort 1; WebP quality 80. Metadata is
    stripped; animation (page height, delays, loop) is kept where the format has it."""
    if family == "jpeg":
        if image.hasalpha():
            image = image.flatten(background=[255])
        data = image.jpegsave_buffer(Q=85, optimize_coding=True, keep="none")
    elif family == "png":
        # A palette source drawn again with libimagequant at its best: anti-aliased edges
        # of a downscaled flat graphic would otherwise double its size in truecolour.
        extra = {"palette": True, "Q": 100, "effort": 10} if palette else {}
        data = image.pngsave_buffer(compression=6, filter="all", keep="none", **extra)
    elif family == "gif":
        # effort=1: palette quantisation at a sixth of the default's time (3.3 s -> 0.6 s
        # for 24 frames of 320x240, make bench), for about 15% larger files.
        data = image.gifsave_buffer(keep="none", effort=1)
    else:
        data = image.webpsave_buffer(Q=80, keep="none")
    return bytes(data)
