"""Test images, made in memory with Pillow (not the code under test)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from tests.encoding import png_chunk


def _save(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def gradient(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A picture with real content (so encoders do not collapse it to nothing)."""
    img = Image.linear_gradient("L").resize((width, height))
    if mode == "L":
        return img
    rgb = Image.merge("RGB", (img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), img))
    if mode == "RGBA":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(img)
        return rgba
    return rgb.convert(mode)


def png(width: int = 64, height: int = 48, mode: str = "RGB") -> bytes:
    return _save(gradient(width, height, mode), "PNG")


def jpeg(
    width: int = 64,
    height: int = 48,
    *,
    orientation: int | None = None,
    mode: str = "RGB",
    quality: int = 90,
) -> bytes:
    img = gradient(width, height, "RGB").convert(mode)
    kwargs: dict[str, object] = {"quality": quality}
    if orientation is not None:
        exif = img.getexif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    return _save(img, "JPEG", **kwargs)


def webp(width: int = 64, height: int = 48, mode: str = "RGB") -> bytes:
    return _save(gradient(width, height, mode), "WEBP", quality=80)


def gif(width: int = 64, height: int = 48, frames: int = 1) -> bytes:
    imgs = [
        Image.new("RGB", (width, height), ((i * 37) % 256, 255 - (i * 53) % 256, (i * 91) % 256))
        for i in range(frames)
    ]
    return _save(imgs[0], "GIF", save_all=frames > 1, append_images=imgs[1:], duration=80, loop=0)


def animated_webp(width: int = 64, height: int = 48, frames: int = 3) -> bytes:
    imgs = [
        Image.new("RGBA", (width, height), ((i * 60) % 256, 100, 200, 128 + i))
        for i in range(frames)
    ]
    return _save(imgs[0], "WEBP", save_all=True, append_images=imgs[1:], duration=80, loop=0)


def png16(width: int = 64, height: int = 48) -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow cannot write RGB16)."""
    raw = b"".join(
        b"\x00"
        + b"".join(
            struct.pack(">HHH", x * 1000 % 65536, y * 1000 % 65536, 40000) for x in range(width)
        )
        for y in range(height)
    )
    return _png_chunks(width, height, bit_depth=16, color_type=2, raw=raw)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny IDAT: a decompression bomb's
    header, refused before any pixel is decoded."""
    return _png_chunks(width, height, bit_depth=8, color_type=2, raw=b"\x00\x00\x00\x00")


def _png_chunks(width: int, height: int, *, bit_depth: int, color_type: int, raw: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def padded_png(total_size: int) -> bytes:
    """A valid PNG of exactly `total_size` bytes (an ancillary chunk carries the padding)."""
    base = png(16, 16)
    iend = base[-12:]
    body = base[:-12]
    pad = total_size - len(base) - 12
    if pad < 0:
        raise ValueError("too small")
    # zzPd: an ancillary, private, safe-to-copy chunk that decoders skip
    out = body + png_chunk(b"zzPd", b"\0" * pad) + iend
    assert len(out) == total_size
    return out
