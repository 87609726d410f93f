"""Photo-like test images, made fresh each run with pyvips and Pillow (not with the code under
test): several octaves of Perlin noise per channel, a gradient and film grain, so that JPEG
and WebP sizes and decode times look like a camera's, not like a flat test card."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import pyvips
from PIL import Image

MAX_UPLOAD = 10 * 1024 * 1024  # the contract's limit: 10,485,760 bytes is accepted


def photo(width: int, height: int, *, seed: int = 1, grain: float = 6.0) -> pyvips.Image:
    """An 8-bit sRGB image with structure at several scales and fine grain."""
    side = max(width, height)
    bands = []
    for b in range(3):
        channel = pyvips.Image.black(width, height).cast("float")
        for octave, (cells, amplitude) in enumerate(((2, 220.0), (8, 110.0), (40, 45.0))):
            cell = max(4, side // cells)
            noise = pyvips.Image.perlin(
                width, height, cell_size=cell, seed=seed * 31 + b * 7 + octave
            )
            channel = channel + noise * amplitude
        bands.append(channel)
    image = bands[0].bandjoin(bands[1:])
    ramp = pyvips.Image.xyz(width, height)[0].cast("float") * (60.0 / width) - 30.0
    image = image + 128 + ramp
    if grain > 0:
        image = image + pyvips.Image.gaussnoise(width, height, sigma=grain, mean=0, seed=seed)
    return image.cast("uchar").copy(interpretation="srgb")


def _jpeg(image: pyvips.Image, quality: int) -> bytes:
    return bytes(image.jpegsave_buffer(Q=quality, keep="none"))


def jpeg_near(target: int, width: int, height: int, *, seed: int) -> bytes:
    """A JPEG of the given size whose quality is chosen to land near `target` bytes
    (never above it)."""
    image = photo(width, height, seed=seed)
    best = _jpeg(image, 50)
    lo, hi = 50, 98
    while lo <= hi:
        q = (lo + hi) // 2
        data = _jpeg(image, q)
        if len(data) <= target:
            best, lo = data, q + 1
        else:
            hi = q - 1
    return best


def big_jpeg(target: int, *, seed: int) -> bytes:
    """A real camera-sized JPEG just under `target` bytes (the upload limit)."""
    width, height = 5200, 3900
    data = b""
    for _ in range(5):
        data = _jpeg(photo(width, height, seed=seed, grain=10.0), 95)
        if 0.93 * target <= len(data) <= target:
            return data
        scale = math.sqrt(0.965 * target / len(data))
        width, height = int(width * scale) // 8 * 8, int(height * scale) // 8 * 8
    if len(data) > target:
        raise RuntimeError(f"could not make a JPEG under {target} bytes")
    return data


def animated_gif(width: int = 480, height: int = 360, frames: int = 24, *, seed: int) -> bytes:
    """A pan across a photo, as an animated GIF (Pillow's palette quantiser)."""
    scene = photo(width * 2, height, seed=seed, grain=3.0)
    step = width // frames
    imgs = []
    for i in range(frames):
        crop = scene.crop(i * step, 0, width, height)
        rgb = Image.frombytes("RGB", (width, height), crop.write_to_memory())
        imgs.append(rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT))
    out = io.BytesIO()
    imgs[0].save(out, "GIF", save_all=True, append_images=imgs[1:], duration=80, loop=0)
    return out.getvalue()


def unique_jpeg(data: bytes, tag: bytes) -> bytes:
    """The same JPEG with a comment segment after SOI: different bytes, so a different blob."""
    assert data[:2] == b"\xff\xd8"
    segment = b"\xff\xfe" + (len(tag) + 2).to_bytes(2, "big") + tag
    return data[:2] + segment + data[2:]


@dataclass(frozen=True)
class Media:
    """Every test file, written under one directory."""

    jpeg_200k: Path
    jpeg_10m: Path
    jpeg_12mp: Path
    png: Path
    webp: Path
    gif: Path

    def describe(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for name, path in vars(self).items():
            header = pyvips.Image.new_from_file(str(path))
            pages = header.get("n-pages") if header.get_typeof("n-pages") else 1
            out[name] = {
                "bytes": path.stat().st_size,
                "width": header.width,
                "height": header.height,
                "pages": pages,
            }
        return out


def make_media(root: Path) -> Media:
    root.mkdir(parents=True, exist_ok=True)

    def write(name: str, data: bytes) -> Path:
        path = root / name
        path.write_bytes(data)
        return path

    jpeg_200k = write("photo-200k.jpg", jpeg_near(200_000, 1200, 800, seed=2))
    jpeg_10m = write("photo-10m.jpg", big_jpeg(MAX_UPLOAD - 4096, seed=3))
    jpeg_12mp = write("photo-12mp.jpg", _jpeg(photo(4000, 3000, seed=4), 90))
    png = write(
        "photo-1600x1200.png",
        bytes(photo(1600, 1200, seed=5, grain=3.0).pngsave_buffer(compression=6)),
    )
    webp = write("photo-2000x1500.webp", bytes(photo(2000, 1500, seed=6).webpsave_buffer(Q=80)))
    gif = write("pan-480x360x24.gif", animated_gif(seed=7))
    return Media(jpeg_200k, jpeg_10m, jpeg_12mp, png, webp, gif)
