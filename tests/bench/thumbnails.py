"""Thumbnails: the appliance's first thumbnail of a file against the best of pyvips and
Pillow doing the same job (decode at reduced scale, resize to fit 320x320, encode in the same
format) on the same file, in the same process, on the same core.

Two appliance figures: its own code path in-process (`imaging.probe` + `imaging.thumbnail`,
after `imaging.init_pyvips()`), and the first `GET /i/{id}?variant=thumbnail` over HTTP on a
running server after its derived files were deleted (the executor hops, the disk write and
the HTTP answer included).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyvips
from PIL import Image, ImageSequence

from appliance import imaging
from tests.bench.common import (
    CLIENT_CORE,
    SERVER_CORE,
    Client,
    Context,
    Row,
    fmt_ms,
    median,
    pin_self,
    ratio,
)
from tests.bench.media import Media
from tests.bench.servers import Appliance

TRIALS = 7  # at most; at least MIN_TRIALS, and no more once a file has used TRIAL_BUDGET
MIN_TRIALS = 3
TRIAL_BUDGET = 8.0  # seconds per file
HTTP_TRIALS = 5  # 3 for files whose thumbnail takes over a second
SIZE = imaging.THUMBNAIL_SIZE
TARGET_JPEG = 1.10  # appliance / best library call, 12 MP JPEG


def _files(media: Media) -> list[tuple[str, str, Path, str]]:
    """(key, label, path, mime type)"""
    return [
        ("jpeg_12mp", "12 MP JPEG 4000x3000", media.jpeg_12mp, "image/jpeg"),
        ("png", "PNG 1600x1200", media.png, "image/png"),
        ("webp", "WebP 2000x1500", media.webp, "image/webp"),
        ("gif", "animated GIF 480x360x24", media.gif, "image/gif"),
    ]


def appliance_code(path: Path, mime: str) -> bytes:
    info = imaging.probe(str(path), mime)
    return imaging.thumbnail(str(path), info)


def pyvips_thumbnail(path: Path, mime: str) -> bytes:
    # All frames of an animation (ours have fewer than the appliance's cap of 50).
    name = f"{path}[n=-1]" if mime in ("image/gif", "image/webp") else str(path)
    image = pyvips.Image.thumbnail(name, SIZE, height=SIZE, size="down")
    if mime == "image/jpeg":
        return bytes(image.jpegsave_buffer(Q=85, optimize_coding=True, keep="none"))
    if mime == "image/png":
        return bytes(image.pngsave_buffer(compression=6, keep="none"))
    if mime == "image/gif":
        return bytes(image.gifsave_buffer(keep="none"))
    return bytes(image.webpsave_buffer(Q=80, keep="none"))


def pillow_thumbnail(path: Path, mime: str) -> bytes:
    out = io.BytesIO()
    with Image.open(path) as im:
        if getattr(im, "is_animated", False):
            frames = []
            for i, frame in enumerate(ImageSequence.Iterator(im)):
                if i >= imaging.THUMBNAIL_FRAMES:
                    break
                small = frame.convert("RGB")
                small.thumbnail((SIZE, SIZE))
                frames.append(small)
            fmt = "GIF" if mime == "image/gif" else "WEBP"
            frames[0].save(out, fmt, save_all=True, append_images=frames[1:], loop=0)
            return out.getvalue()
        im.draft("RGB", (SIZE, SIZE))  # JPEG: DCT scaling on load; others: no-op
        small = im.convert("RGB") if im.mode not in ("RGB", "RGBA", "L") else im
        small.thumbnail((SIZE, SIZE))
        if mime == "image/jpeg":
            small.save(out, "JPEG", quality=85, optimize=True)
        elif mime == "image/png":
            small.save(out, "PNG", compress_level=6)
        else:
            small.save(out, "WEBP", quality=80)
    return out.getvalue()


def _time(fn: Callable[[Path, str], bytes], path: Path, mime: str) -> float:
    started = time.perf_counter()
    data = fn(path, mime)
    elapsed = time.perf_counter() - started
    assert data, fn
    return elapsed


def run(ctx: Context, media: Media) -> tuple[list[Row], dict[str, Any]]:
    files = _files(media)
    in_process = _in_process(ctx, files)
    slow = {key for key, t in in_process.items() if median(t["appliance"]) > 1.0}
    over_http = _over_http(ctx, files, slow)
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    for key, label, _path, _mime in files:
        times = in_process[key]
        med = {name: median(values) for name, values in times.items()}
        best_name = min(("pyvips", "pillow"), key=lambda n: med[n])
        best = med[best_name]
        ref = f"{best_name} {fmt_ms(best)} ms (other {fmt_ms(max(med['pyvips'], med['pillow']))})"
        q = ratio(med["appliance"], best)
        is_target = key == "jpeg_12mp"
        rows.append(
            Row(
                section="thumbnails",
                figure=f"thumbnail: first, {label}, code path",
                appliance=f"{fmt_ms(med['appliance'])} ms",
                reference=ref,
                ratio=q,
                target=f"<= {TARGET_JPEG:.2f}" if is_target else "",
                passed=(q is not None and q <= TARGET_JPEG) if is_target else None,
                data={"seconds": times, "median": med, "best": best_name},
            )
        )
        http_med = median(over_http[key])
        rows.append(
            Row(
                section="thumbnails",
                figure=f"thumbnail: first, {label}, GET over HTTP",
                appliance=f"{fmt_ms(http_med)} ms",
                reference=f"{best_name} {fmt_ms(best)} ms",
                ratio=ratio(http_med, best),
                data={"seconds": over_http[key], "median": http_med},
            )
        )
        raw[key] = {"in_process": times, "over_http": over_http[key]}
        ctx.note(
            f"{label}: appliance {fmt_ms(med['appliance'])} ms, pyvips "
            f"{fmt_ms(med['pyvips'])} ms, Pillow {fmt_ms(med['pillow'])} ms, "
            f"first GET {fmt_ms(http_med)} ms"
        )
    return rows, raw


def _in_process(
    ctx: Context, files: list[tuple[str, str, Path, str]]
) -> dict[str, dict[str, list[float]]]:
    """Each function on each file, interleaved so that drift hits all three alike; on the
    server core, with libvips set up exactly as the appliance sets it up."""
    imaging.init_pyvips()
    pin_self(SERVER_CORE)
    functions: dict[str, Callable[[Path, str], bytes]] = {
        "appliance": appliance_code,
        "pyvips": pyvips_thumbnail,
        "pillow": pillow_thumbnail,
    }
    times: dict[str, dict[str, list[float]]] = {
        key: {name: [] for name in functions} for key, *_ in files
    }
    try:
        for _key, _label, path, mime in files:  # untimed: load codecs, fill the page cache
            if mime != "image/gif":  # seconds long: its own first trial is warm enough
                for fn in functions.values():
                    fn(path, mime)
        for key, _label, path, mime in files:
            started = time.perf_counter()
            for trial in range(TRIALS):
                if trial >= MIN_TRIALS and time.perf_counter() - started > TRIAL_BUDGET:
                    break
                order = list(functions.items())
                order = order[trial % 3 :] + order[: trial % 3]
                for name, fn in order:
                    times[key][name].append(_time(fn, path, mime))
    finally:
        pin_self(CLIENT_CORE)
    return times


def _over_http(
    ctx: Context, files: list[tuple[str, str, Path, str]], slow: set[str]
) -> dict[str, list[float]]:
    """Upload each file HTTP_TRIALS times (one blob, several ids), then time the first
    thumbnail GET of each id with the derived files deleted just before."""
    data_dir = ctx.subdir("thumbnails") / "data"
    app = Appliance.start(ctx, data_dir)
    results: dict[str, list[float]] = {}
    try:
        client = Client(app.port)
        for key, _label, path, _mime in files:
            data = path.read_bytes()
            trials = 3 if key in slow else HTTP_TRIALS
            ids = [app.upload(data, path.name, client=client)["id"] for _ in range(trials)]
            results[key] = []
            for image_id in ids:
                for derived in (data_dir / "derived").glob("*/*"):
                    os.unlink(derived)
                started = time.perf_counter()
                answer = client.request("GET", f"/i/{image_id}?variant=thumbnail")
                elapsed = time.perf_counter() - started
                if answer.status != 200:
                    raise RuntimeError(f"thumbnail of {path.name}: {answer.status}")
                results[key].append(elapsed)
    finally:
        app.stop()
    return results
