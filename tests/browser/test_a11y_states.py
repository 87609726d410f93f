"""Every state of the gallery, in light and dark mode: axe-core finds no violation in any of
them, and a screenshot of each goes to tests/artifacts/ for people to look at."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import ConsoleLog, Gallery, axe_violations, make_context, scene
from .test_gallery import ALL_THUMBNAILS_LOADED, _seed_showcase


def _state_main(g: Gallery, tmp: Path) -> None:
    expect(g.names).to_have_count(7)
    g.page.wait_for_function(ALL_THUMBNAILS_LOADED)


def _state_selection(g: Gallery, tmp: Path) -> None:
    g.card("summer-hero.png").locator(".card-check").check()
    g.card("logo-square.png").locator(".card-button").click(modifiers=["Control"])
    expect(g.page.locator("#bulk-bar")).to_contain_text("2 selected")


def _state_details(g: Gallery, tmp: Path) -> None:
    dialog = g.open_details("summer-hero.png")
    expect(dialog.locator("#details-image")).to_have_js_property("complete", True)
    dialog.get_by_role("button", name="Copy <img> for email").click()
    expect(dialog.locator("#copy-status")).not_to_be_empty()


def _state_unsaved(g: Gallery, tmp: Path) -> None:
    dialog = g.open_details("autumn-sale.jpg")
    dialog.get_by_label("Alt text").fill("Autumn leaves, 30% off")
    g.page.keyboard.press("Escape")
    expect(g.page.locator("#ask-dialog")).to_be_visible()


def _state_confirm_bulk(g: Gallery, tmp: Path) -> None:
    _state_selection(g, tmp)
    g.page.locator("#bulk-bar").get_by_role("button", name="Delete 2 images…").click()
    expect(g.page.locator("#confirm-dialog")).to_be_visible()


def _state_undo(g: Gallery, tmp: Path) -> None:
    g.card("team-offsite.png").locator(".card-button").focus()
    g.page.keyboard.press("Delete")
    g.page.locator("#confirm-dialog").get_by_role("button", name="Delete image").click()
    expect(g.page.locator("#toasts").get_by_role("button", name="Undo")).to_be_visible()


def _state_move(g: Gallery, tmp: Path) -> None:
    _state_selection(g, tmp)
    g.page.locator("#bulk-bar").get_by_role("button", name="Move 2 images to a folder…").click()
    g.page.locator("#move-folder").fill("archive")


def _state_upload(g: Gallery, tmp: Path) -> None:
    good = tmp / "holiday-card.png"
    good.write_bytes(scene(900, 600, (230, 120, 140), (120, 60, 90), (255, 230, 150)))
    notes = tmp / "meeting-notes.txt"
    notes.write_bytes(b"not an image\n" * 10)
    empty = tmp / "empty.png"
    empty.write_bytes(b"")
    g.page.set_input_files("#file-input", [str(good), str(notes), str(empty)])
    dialog = g.page.locator("#upload-dialog")
    dialog.get_by_label("Alt text for holiday-card.png").fill("Pink holiday card")
    expect(dialog.locator(".upload-row[data-state=refused]")).to_have_count(2)


def _state_folder(g: Gallery, tmp: Path) -> None:
    g.page.locator("#folder-list").get_by_role("button", name="newsletters").click()
    expect(g.names).to_have_count(3)
    g.page.get_by_role("button", name="Rename folder…").click()
    g.page.locator("#folder-name").fill("branding")
    expect(g.page.locator("#folder-submit")).to_have_text("Merge folders")


def _state_missing_alt(g: Gallery, tmp: Path) -> None:
    g.page.locator("#missing-alt").click()
    expect(g.names).to_have_count(3)


def _state_empty_search(g: Gallery, tmp: Path) -> None:
    g.page.get_by_label("Search images by filename or alt text").fill("no-such-image")
    expect(g.page.locator("#empty-state")).to_be_visible()


STATES: dict[str, Callable[[Gallery, Path], None]] = {
    "main": _state_main,
    "selection": _state_selection,
    "details": _state_details,
    "unsaved-edits": _state_unsaved,
    "confirm-bulk-delete": _state_confirm_bulk,
    "undo-toast": _state_undo,
    "move": _state_move,
    "upload-refused": _state_upload,
    "folder-merge": _state_folder,
    "missing-alt": _state_missing_alt,
    "empty-search": _state_empty_search,
}


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_state_has_no_axe_violation(
    browser: Browser, server: Any, artifacts: Path, tmp_path: Path, axe_source: str, scheme: str
) -> None:
    _seed_showcase(server)
    suffix = "" if scheme == "light" else "-dark"
    found: dict[str, list[str]] = {}
    context = make_context(browser, server.base_url, scheme)
    try:
        page = context.new_page()
        console = ConsoleLog()
        page.on("console", console.on_console)
        gallery = Gallery(page, server)
        gallery.open()
        expect(page.get_by_label("API key")).to_be_focused()
        found["signin"] = axe_violations(page, axe_source)
        page.screenshot(path=str(artifacts / f"state-signin{suffix}.png"))
        gallery.sign_in()
        for name, reach in STATES.items():
            page.goto("/")  # each state from a fresh page (the key stays in sessionStorage)
            expect(page.locator("#app-view")).to_be_visible()
            expect(gallery.names).not_to_have_count(0)
            reach(gallery, tmp_path)
            page.mouse.move(1279, 859)
            found[name] = axe_violations(page, axe_source)
            page.screenshot(path=str(artifacts / f"state-{name}{suffix}.png"))
        assert console.page_errors == []
    finally:
        context.close()
    assert {k: v for k, v in found.items() if v} == {}
    assert len(found) == len(STATES) + 1


def test_phone_width_has_no_axe_violation(
    browser: Browser, server: Any, artifacts: Path, axe_source: str
) -> None:
    _seed_showcase(server)
    for scheme, suffix in (("light", ""), ("dark", "-dark")):
        context = browser.new_context(
            base_url=server.base_url, viewport={"width": 390, "height": 844},
            color_scheme=scheme,  # type: ignore[arg-type]
            has_touch=True, is_mobile=True, device_scale_factor=2, reduced_motion="reduce",
        )
        try:
            page: Page = context.new_page()
            gallery = Gallery(page, server)
            gallery.sign_in()
            expect(gallery.names).to_have_count(7)
            page.wait_for_function(ALL_THUMBNAILS_LOADED)
            assert axe_violations(page, axe_source) == []
            page.screenshot(path=str(artifacts / f"state-phone{suffix}.png"))
            gallery.open_details("summer-hero.png")
            assert axe_violations(page, axe_source) == []
            page.screenshot(path=str(artifacts / f"state-phone-details{suffix}.png"))
        finally:
            context.close()
