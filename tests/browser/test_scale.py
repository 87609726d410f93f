"""A library of 10,000 images: scrolled to the end, the grid loads pages as it goes and keeps
the DOM bounded; a reload returns to the same place. DOM node counts and scroll frame times
are recorded (tests/artifacts/scale-10k.json), never asserted as timings."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from appliance.store import NewImage

from .conftest import Gallery, png
from .test_gallery import seed

COUNT = 10_000


async def _seed_rows(app: Any, key: str, first: dict[str, Any], n: int) -> None:
    """n more rows over the first image's blob, in one transaction through the store."""
    tenant = await app.metadata.keys.authenticate(key)
    async with app.metadata.images.locked(first["sha256"]) as tx:
        for i in range(1, n + 1):
            await tx.insert(
                NewImage(
                    tenant_id=tenant.id,
                    filename=f"bulk-{i:05d}.png",
                    alt_text="" if i % 4 else f"Picture number {i}",
                    folder=None if i % 3 else "thirds",
                    mime_type=first["mime_type"],
                    size_bytes=first["size_bytes"],
                    width=first["width"],
                    height=first["height"],
                    sha256=first["sha256"],
                )
            )


SCROLL_TO_END = """async (count) => {
    const frames = [];
    let nodesMax = 0, cardsMax = 0, last = performance.now(), frame = 0;
    const started = performance.now();
    const lastCard = () => {
        const cards = document.querySelectorAll('#grid .card');
        return cards.length ? Number(cards[cards.length - 1].getAttribute('aria-posinset')) : 0;
    };
    return await new Promise((resolve) => {
        const step = (now) => {
            frames.push(now - last);
            last = now;
            frame += 1;
            nodesMax = Math.max(nodesMax, document.getElementsByTagName('*').length);
            cardsMax = Math.max(cardsMax, document.querySelectorAll('#grid .card').length);
            if (lastCard() >= count || frame > 60000) {
                resolve({frames, nodesMax, cardsMax, seconds: (performance.now() - started) / 1000,
                         nodesAtEnd: document.getElementsByTagName('*').length,
                         lastPosition: lastCard()});
                return;
            }
            window.scrollBy(0, 1200);
            requestAnimationFrame(step);
        };
        requestAnimationFrame(step);
    });
}"""


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def test_ten_thousand_images_scroll_to_the_end_and_back_after_reload(
    gallery: Gallery, server: Any, artifacts: Path
) -> None:
    page = gallery.page
    first = seed(server, png(400, 300, (90, 120, 200)), "bulk-00000.png")
    started = time.perf_counter()
    server.call(_seed_rows(server.app, server.api_key, first, COUNT - 1))
    seed_seconds = time.perf_counter() - started
    lists: list[str] = []
    page.on("request", lambda r: lists.append(r.url) if "/v3/images?" in r.url else None)

    gallery.sign_in()
    expect(page.locator("#library-count")).to_have_text("10,000 images")
    expect(gallery.names.first).to_have_text(f"bulk-{COUNT - 1:05d}.png")
    first_pages = len(lists)
    result = page.evaluate(SCROLL_TO_END, COUNT)
    expect(gallery.names.last).to_have_text("bulk-00000.png")
    pages = [u for u in lists if "missing_alt_text" not in u]
    frames = result.pop("frames")[1:]

    # Bounded DOM: a few screens of cards, whatever the size of the library.
    assert result["cardsMax"] <= 80, result
    assert result["nodesMax"] < 2_500, result
    assert result["lastPosition"] == COUNT
    # Pages were fetched as the grid scrolled, not all at the start.
    assert first_pages <= 3 and len(pages) >= COUNT // 100, (first_pages, len(pages))

    # Back to the middle, reload: the same cards are in view.
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight / 2)")
    page.wait_for_timeout(600)  # the place is saved 150 ms after scrolling stops
    before = page.evaluate(FIRST_VISIBLE)
    reload_started = time.perf_counter()
    page.reload()
    expect(page.locator("#library-count")).to_have_text("10,000 images")
    page.wait_for_function(f"() => ({FIRST_VISIBLE})() >= {before - 8}", timeout=60_000)
    restore_seconds = time.perf_counter() - reload_started
    after = page.evaluate(FIRST_VISIBLE)
    assert abs(after - before) <= 4, (before, after)  # within one row of 4

    figures = {
        "images": COUNT,
        "seed_seconds": round(seed_seconds, 2),
        "scroll_to_end_seconds": round(result["seconds"], 2),
        "list_requests": len(pages),
        "frames": len(frames),
        "frame_ms_p50": round(_percentile(frames, 0.5), 1),
        "frame_ms_p95": round(_percentile(frames, 0.95), 1),
        "frame_ms_max": round(max(frames), 1),
        "dom_nodes_max": result["nodesMax"],
        "dom_nodes_at_end": result["nodesAtEnd"],
        "cards_in_dom_max": result["cardsMax"],
        "restore_after_reload_seconds": round(restore_seconds, 2),
        "first_visible_before_reload": before,
        "first_visible_after_reload": after,
    }
    (artifacts / "scale-10k.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("\n10,000 images:", json.dumps(figures))
    page.screenshot(path=str(artifacts / "state-10k-restored.png"))


FIRST_VISIBLE = """() => {
    const header = document.getElementById('topbar').getBoundingClientRect().bottom;
    const cards = [...document.querySelectorAll('#grid .card')]
        .filter(li => li.getBoundingClientRect().bottom > header + 1);
    return cards.length ? Number(cards[0].dataset.index) : -1;
}"""
