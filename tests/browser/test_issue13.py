"""Issue 13: the nine defects (one test each, each failing without its fix) and the features a
team spends its day in: bulk work, folders, never losing input, undo, finding things, copy for
email, keyboard and screen readers. Real server, real browser; what a person sees and what the
API then holds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from .conftest import Gallery, make_context, png, scene
from .test_gallery import api_images, scroll_through, seed

VIEWPORT_CARDS = "#grid .card"


def card_button(gallery: Gallery, name: str) -> Any:
    return gallery.card(name).locator(".card-button")


def focused_card_name(page: Page) -> str | None:
    return page.evaluate(  # type: ignore[no-any-return]
        "document.activeElement.closest('.card')?.querySelector('.card-name').textContent ?? null"
    )


# ------------------------------------------------------------------------------------------
# The nine defects


def test_defect1_no_grid_image_is_cropped(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    shapes = {
        "portrait.png": (600, 900),
        "banner-tall.png": (250, 1200),
        "wide.png": (1200, 300),
        "square.png": (500, 500),
        "tiny.png": (40, 30),
    }
    for name, (w, hgt) in shapes.items():
        seed(server, png(w, hgt), name)
    gallery.sign_in()
    expect(gallery.names).to_have_count(len(shapes))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth)"
    )
    boxes = page.evaluate(
        """[...document.querySelectorAll('#grid .card')].map(li => {
            const img = li.querySelector('img'), box = li.querySelector('.thumb');
            const r = img.getBoundingClientRect(), b = box.getBoundingClientRect();
            return {name: li.querySelector('.card-name').textContent,
                    img: [r.left, r.top, r.right, r.bottom],
                    box: [b.left, b.top, b.right, b.bottom]};
        })"""
    )
    for item in boxes:
        w, hgt = shapes[item["name"]]
        left, top, right, bottom = item["img"]
        bl, bt, br, bb = item["box"]
        # The rendered image lies wholly inside its (clipping) box ...
        assert left >= bl - 0.5 and top >= bt - 0.5, item
        assert right <= br + 0.5 and bottom <= bb + 0.5, item
        # ... and holds the image's whole aspect ratio: nothing is cut off.
        assert (right - left) / (bottom - top) == pytest.approx(w / hgt, rel=0.03), item


def test_defect2_a_failed_folder_refresh_keeps_the_sidebar(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    image = seed(server, png(), "a.png", folder="newsletters")
    seed(server, png(), "b.png", folder="branding")
    gallery.sign_in()
    folders = page.locator("#folder-list .folder-name")
    expect(folders).to_have_text(["All images", "branding", "newsletters"])
    page.route("**/v3/folders", lambda route: route.abort())
    dialog = gallery.open_details("a.png")
    dialog.get_by_label("Alt text").fill("Now described")
    dialog.get_by_role("button", name="Save changes").click()  # saving refreshes the folders
    expect(page.locator("#folder-error")).to_contain_text("The folder list could not be refreshed.")
    expect(folders).to_have_text(["All images", "branding", "newsletters"])
    page.keyboard.press("Escape")
    page.unroute("**/v3/folders")
    page.locator("#folder-error").get_by_role("button", name="Retry").click()
    expect(page.locator("#folder-error")).to_be_hidden()
    expect(folders).to_have_text(["All images", "branding", "newsletters"])
    assert server.request("GET", f"/v3/images/{image['id']}").json()["alt_text"] == "Now described"


def test_defect3_failed_upload_keeps_alt_text_retry_remove_retry_all(
    gallery: Gallery, server: Any, tmp_path: Path
) -> None:
    page = gallery.page
    files = []
    for i, name in enumerate(["one.png", "two.png", "three.png"]):
        path = tmp_path / name
        path.write_bytes(png(30 + i, 20))
        files.append(str(path))
    gallery.sign_in()
    # The network drops every upload for now (the server never sees them).
    page.route("**/v3/images", lambda route: route.abort() if route.request.method == "POST"
               else route.continue_())
    page.set_input_files("#file-input", files)
    dialog = page.locator("#upload-dialog")
    for name in ["one.png", "two.png", "three.png"]:
        dialog.get_by_label(f"Alt text for {name}").fill(f"Alt of {name}")
    dialog.get_by_role("button", name="Upload 3 images").click()
    expect(dialog.locator("#upload-title")).to_have_text("0 uploaded, 3 failed")
    rows = dialog.locator(".upload-row")
    for name in ["one.png", "two.png", "three.png"]:
        row = rows.filter(has_text=name)
        expect(row).to_have_attribute("data-state", "failed")
        expect(row.get_by_role("alert")).to_have_text(
            "The upload was interrupted. Check the connection and try again."
        )
        # The alt text typed for it is still there, and still editable.
        expect(row.get_by_label(f"Alt text for {name}")).to_be_visible()
        expect(row.get_by_label(f"Alt text for {name}")).to_have_value(f"Alt of {name}")
    page.unroute("**/v3/images")

    # Remove one, retry one, then retry all the rest.
    rows.filter(has_text="three.png").get_by_role("button", name="Remove three.png").click()
    expect(rows).to_have_count(2)
    rows.filter(has_text="one.png").get_by_role("button", name="Retry one.png").click()
    expect(rows.filter(has_text="one.png")).to_have_attribute("data-state", "done")
    dialog.get_by_label("Alt text for two.png").fill("Edited alt of two.png")
    dialog.get_by_role("button", name="Retry failed").click()
    expect(rows.filter(has_text="two.png")).to_have_attribute("data-state", "done")
    expect(dialog.locator("#upload-title")).to_have_text("2 uploaded")
    got = {i["filename"]: i["alt_text"] for i in api_images(server)["images"]}
    assert got == {"one.png": "Alt of one.png", "two.png": "Edited alt of two.png"}


def test_defect4_focus_stays_on_a_card_after_an_image_leaves_the_view(
    gallery: Gallery, server: Any
) -> None:
    page = gallery.page
    for name in ["c.png", "b.png", "a.png"]:
        seed(server, png(), name, folder="news")
    gallery.sign_in()
    page.locator("#folder-list").get_by_role("button", name="news").click()
    expect(gallery.names).to_have_text(["a.png", "b.png", "c.png"])
    dialog = gallery.open_details("b.png")
    dialog.get_by_label("Folder", exact=True).fill("elsewhere")
    dialog.get_by_role("button", name="Save changes").click()
    expect(dialog.locator("#details-status")).to_have_text("Saved. It has left this view.")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(gallery.names).to_have_text(["a.png", "c.png"])
    # Focus is on the card that took its place, never on <body>.
    expect(card_button(gallery, "c.png")).to_be_focused()
    assert page.evaluate("document.activeElement !== document.body")


def test_defect5_back_closes_the_details_dialog(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    seed(server, png(), "spring.png", folder="news")
    seed(server, png(), "logo.png", folder="brand")
    gallery.sign_in()
    page.locator("#folder-list").get_by_role("button", name="news").click()
    expect(gallery.names).to_have_text(["spring.png"])
    dialog = gallery.open_details("spring.png")
    assert re.search(r"#folder=news&image=img_\w+$", page.url), page.url
    page.go_back()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("heading", level=1)).to_have_text("news")
    expect(gallery.names).to_have_text(["spring.png"])
    assert page.url.endswith("#folder=news")
    page.go_back()
    expect(page.get_by_role("heading", level=1)).to_have_text("All images")
    expect(dialog).to_be_hidden()
    expect(gallery.names).to_have_count(2)
    page.go_forward()
    page.go_forward()  # forward onto the dialog's entry opens it again
    expect(dialog).to_be_visible()
    expect(dialog.locator("#details-title")).to_have_text("spring.png")


def test_defect6_a_long_search_is_capped_and_never_widens_the_page(
    gallery: Gallery, server: Any
) -> None:
    page = gallery.page
    seed(server, png(), "x" * 210 + ".png")
    long = "x" * 250
    page.goto(f"/#search={long}")  # a bookmark or pasted link with an over-long search
    page.get_by_label("API key").fill(server.api_key)
    page.get_by_role("button", name="Sign in").click()
    search = page.get_by_label("Search images by filename or alt text")
    expect(search).to_have_value("x" * 200)
    expect(gallery.names).to_have_count(1)
    expect(page.locator("#load-error")).to_be_hidden()
    search.fill("")
    search.press_sequentially("y" * 230, delay=0)
    expect(search).to_have_value("y" * 200)
    expect(page.locator("#empty-state")).to_be_visible()
    expect(page.locator("#load-error")).to_be_hidden()
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width


def test_defect7_closing_details_with_unsaved_edits_asks_first(
    gallery: Gallery, server: Any
) -> None:
    page = gallery.page
    image = seed(server, png(), "a.png", alt_text="Old words")
    gallery.sign_in()
    dialog = gallery.open_details("a.png")
    dialog.get_by_label("Alt text").fill("New words, not saved")
    ask = page.locator("#ask-dialog")
    page.keyboard.press("Escape")
    expect(ask).to_be_visible()
    expect(ask).to_contain_text("Discard your changes?")
    ask.get_by_role("button", name="Keep editing").click()
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Alt text")).to_have_value("New words, not saved")
    page.mouse.click(5, 5)  # the backdrop
    expect(ask).to_be_visible()
    ask.get_by_role("button", name="Keep editing").click()
    dialog.get_by_role("button", name="Close").click()
    expect(ask).to_be_visible()
    ask.get_by_role("button", name="Discard changes").click()
    expect(dialog).to_be_hidden()
    assert server.request("GET", f"/v3/images/{image['id']}").json()["alt_text"] == "Old words"
    # Without edits, Escape closes at once.
    gallery.open_details("a.png")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(ask).to_be_hidden()


def test_defect8_an_empty_file_is_refused_in_our_words(
    gallery: Gallery, server: Any, tmp_path: Path
) -> None:
    page = gallery.page
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    gallery.sign_in()
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.set_input_files("#file-input", [str(empty)])
    row = page.locator("#upload-dialog .upload-row")
    expect(row).to_have_attribute("data-state", "refused")
    expect(row.get_by_role("alert")).to_have_text(
        "“empty.png” is empty (0 bytes). Choose the file again, or another one."
    )
    expect(page.locator("#upload-start")).to_be_hidden()  # nothing left to send
    assert posts == []


def contrast(page: Page, fg: str, bg: str) -> float:
    return float(
        page.evaluate(
            """([fg, bg]) => {
                const lum = (css) => {
                    const probe = document.createElement('i');
                    probe.style.color = css; document.body.append(probe);
                    const [r, g, b] = getComputedStyle(probe).color.match(/[\\d.]+/g).map(Number);
                    probe.remove();
                    const f = c => {
                        c /= 255;
                        return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
                    };
                    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
                };
                const root = getComputedStyle(document.documentElement);
                const [a, b] = [lum(root.getPropertyValue(fg)), lum(root.getPropertyValue(bg))];
                return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
            }""",
            [fg, bg],
        )
    )


def test_defect9_grey_text_meets_wcag_aa_in_light_and_dark(browser: Browser, server: Any) -> None:
    for scheme in ("light", "dark"):
        context = make_context(browser, server.base_url, scheme)
        try:
            page = context.new_page()
            page.goto("/")
            for bg in ("--surface-2", "--surface", "--bg", "--surface-3"):
                ratio = contrast(page, "--text-3", bg)
                assert ratio >= 4.5, (scheme, bg, ratio)
        finally:
            context.close()


# ------------------------------------------------------------------------------------------
# Bulk work


def test_bulk_select_move_with_a_partial_failure(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    images = {n: seed(server, png(20 + i, 20), f"{n}.png") for i, n in enumerate("abcdef")}
    gallery.sign_in()
    expect(gallery.names).to_have_text([f"{n}.png" for n in "fedcba"])
    bar = page.locator("#bulk-bar")
    # A checkbox, then Shift-click: a range.
    gallery.card("e.png").locator(".card-check").check()
    expect(bar).to_contain_text("1 selected")
    card_button(gallery, "b.png").click(modifiers=["Shift"])
    expect(bar).to_contain_text("4 selected")
    expect(page.locator("#grid .card.selected .card-name")).to_have_text(
        ["e.png", "d.png", "c.png", "b.png"]
    )
    # While selecting, a plain click adds or removes.
    card_button(gallery, "c.png").click()
    expect(bar).to_contain_text("3 selected")
    page.keyboard.press("Escape")
    expect(bar).to_be_hidden()
    # Ctrl+A: everything in the view.
    page.locator("#library").focus()
    page.keyboard.press("Control+a")
    expect(bar).to_contain_text("6 selected")
    page.keyboard.press("Escape")
    # Ctrl-click two; one of them is deleted behind the gallery's back.
    card_button(gallery, "a.png").click(modifiers=["Control"])
    card_button(gallery, "f.png").click(modifiers=["Control"])
    expect(bar).to_contain_text("2 selected")
    assert server.request("DELETE", f"/v3/images/{images['a']['id']}").status == 204
    bar.get_by_role("button", name="Move 2 images to a folder…").click()
    move = page.locator("#move-dialog")
    move.get_by_label("Folder").fill("archive")
    move.get_by_role("button", name="Move", exact=True).click()
    expect(move.locator("#move-status")).to_have_text(
        "Moved 1 of 2 to “archive”; 1 could not be moved:"
    )
    expect(move.locator("#move-failures")).to_have_text(
        "a.png: it is no longer in the library (deleted meanwhile)."
    )
    expect(move.locator("#move-progress")).to_have_attribute("value", "100")
    move.get_by_role("button", name="Cancel").click()
    assert server.request("GET", f"/v3/images/{images['f']['id']}").json()["folder"] == "archive"
    expect(page.locator("#folder-list")).to_contain_text("archive")
    expect(gallery.names).to_have_text([f"{n}.png" for n in "fedcb"])


def test_bulk_delete_one_confirmation_then_undo_window(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    images = [seed(server, png(20 + i, 20), f"{n}.png") for i, n in enumerate("abc")]
    gallery.sign_in()
    page.locator("#library").focus()
    page.keyboard.press("Control+a")
    card_button(gallery, "a.png").click()  # unselect one: two left
    page.locator("#bulk-bar").get_by_role("button", name="Delete 2 images…").click()
    confirm = page.locator("#confirm-dialog")
    expect(confirm.get_by_role("heading")).to_have_text("Delete 2 images?")
    expect(confirm).to_contain_text("Emails that were already sent with these images")
    # How many of them were fetched lately (the gallery's own loads count too).
    expect(confirm.locator("#confirm-stats")).to_have_text(
        re.compile(r"^(None of them was fetched in the last 30 days\.|\d+ (was|were) fetched "
                   r"in the last 30 days \(\d+ times? in all, last .+ ago\): emails that show "
                   r"them will show a broken image\.)$")
    )
    deletes: list[tuple[str, int]] = []
    page.on("response", lambda r: deletes.append((r.url, r.status))
            if r.request.method == "DELETE" else None)
    confirm.get_by_role("button", name="Delete 2 images").click()
    expect(page.locator("#toasts")).to_contain_text("Deleted 2 images.")
    expect(gallery.names).to_have_text(["a.png"])
    page.wait_for_timeout(5_000)
    assert deletes == []  # held back for the undo window
    page.wait_for_timeout(6_500)
    assert sorted(deletes) == sorted(
        (f"{server.base_url}/v3/images/{i['id']}", 204) for i in images[1:]
    )
    assert [i["filename"] for i in api_images(server)["images"]] == ["a.png"]


def test_delete_confirmation_names_recent_fetches(
    browser: Browser, server_factory: Any
) -> None:
    server = server_factory(flush_interval=0.1)  # fetch counts written at once
    image = seed(server, png(), "popular.png")
    quiet = seed(server, png(9, 9), "quiet.png")
    for _ in range(3):
        assert server.request("GET", f"/i/{image['id']}").status == 200
    context = make_context(browser, server.base_url)
    try:
        page = context.new_page()
        gallery = Gallery(page, server)
        gallery.sign_in()
        page.wait_for_timeout(400)  # the counts are flushed every 0.1 s here
        dialog = gallery.open_details("popular.png")
        # The details show the statistics too.
        expect(dialog.locator("#details-stats")).to_be_visible()
        expect(dialog.locator("#details-stats")).to_contain_text("Last 30 days")
        dialog.get_by_role("button", name="Delete image…").click()
        stats = page.locator("#confirm-stats")
        expect(stats).to_have_text(
            re.compile(r"^Fetched \d+ times in the last 30 days, last a few seconds ago: "
                       r"emails that show it will show a broken image\.$")
        )
        fetched = int(re.findall(r"\d+", stats.inner_text())[0])
        assert fetched >= 3  # ours, and the gallery's own loads of the image
        assert server.request("GET", f"/v3/images/{quiet['id']}").status == 200
    finally:
        context.close()


# ------------------------------------------------------------------------------------------
# Undo a delete


def test_undo_a_delete_and_nothing_is_deleted_when_the_page_closes(
    browser: Browser, server: Any
) -> None:
    image = seed(server, png(), "precious.png")
    seed(server, png(), "other.png")
    context = make_context(browser, server.base_url)
    page = context.new_page()
    gallery = Gallery(page, server)
    gallery.sign_in()
    deletes: list[str] = []
    page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)
    for attempt in range(2):
        card_button(gallery, "precious.png").focus()
        page.keyboard.press("Delete")
        page.locator("#confirm-dialog").get_by_role("button", name="Delete image").click()
        expect(gallery.names).to_have_text(["other.png"])
        undo = page.locator("#toasts").get_by_role("button", name="Undo")
        expect(undo).to_be_visible()
        if attempt == 0:
            undo.click()
            expect(gallery.names).to_have_text(["other.png", "precious.png"])
            expect(page.locator("#toasts")).to_contain_text("Kept “precious.png”.")
    # The page is closed inside the window: no DELETE ever goes.
    context.close()
    assert deletes == []
    assert server.request("GET", f"/v3/images/{image['id']}").status == 200
    assert server.request("GET", f"/i/{image['id']}").status == 200


# ------------------------------------------------------------------------------------------
# Folders


def test_folders_create_rename_merge_delete_with_counts(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    seed(server, png(), "a.png", folder="news")
    seed(server, png(), "b.png", folder="news")
    seed(server, png(), "c.png", folder="newsletters")
    seed(server, png(), "d.png")
    gallery.sign_in()
    sidebar = page.locator("#folder-list")
    expect(sidebar.get_by_role("button")).to_have_text(
        ["All images4 images", "news2 images", "newsletters1 image"]
    )
    # Create an empty folder: it is selected and stays in the list.
    page.get_by_role("button", name="New folder").click()
    folder_dialog = page.locator("#folder-dialog")
    folder_dialog.get_by_label("Folder name").fill("Drafts")
    folder_dialog.get_by_role("button", name="Create folder").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Drafts")
    expect(page.locator("#empty-state")).to_contain_text("This folder is empty")
    expect(sidebar.get_by_role("button", name="Drafts")).to_contain_text("0")
    # Rename "news" onto "newsletters": a merge, said so before it is done.
    sidebar.get_by_role("button", name="news", exact=False).first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("news")
    page.get_by_role("button", name="Rename folder…").click()
    folder_dialog.get_by_label("Folder name").fill("newsletters")
    expect(folder_dialog.locator("#folder-name-help")).to_have_text(
        "“newsletters” already exists. Its 1 and these 2 images will be together in “newsletters”."
    )
    folder_dialog.get_by_role("button", name="Merge folders").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("newsletters")
    expect(gallery.names).to_have_text(["c.png", "b.png", "a.png"])
    expect(sidebar.get_by_role("button")).to_have_text(
        ["All images4 images", "Drafts0 images", "newsletters3 images"]
    )
    assert server.request("GET", "/v3/images/folders").json() == {"folders": ["newsletters"]}
    # Delete it: the images stay, without a folder.
    page.get_by_role("button", name="Delete folder…").click()
    ask = page.locator("#ask-dialog")
    expect(ask).to_contain_text("Its 3 images stay in the library, without a folder.")
    ask.get_by_role("button", name="Delete folder").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("All images")
    expect(gallery.names).to_have_count(4)
    assert [i["folder"] for i in api_images(server)["images"]] == [None] * 4


def test_sidebar_stays_in_view_while_the_grid_scrolls(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    for i in range(40):
        seed(server, png(8, 8), f"img-{i:02d}.png", folder="f" if i % 2 else "g")
    gallery.sign_in()
    expect(gallery.names.first).to_be_visible()
    page.mouse.wheel(0, 2500)
    page.wait_for_function("() => window.scrollY > 1500")
    header = page.locator("#topbar").bounding_box()
    side = page.locator(".sidebar").bounding_box()
    assert header and side
    assert side["y"] == pytest.approx(header["y"] + header["height"], abs=2)
    all_images = page.locator("#folder-list").get_by_role("button", name="All images")
    expect(all_images).to_be_in_viewport()


# ------------------------------------------------------------------------------------------
# Finding things


def test_sort_and_the_missing_alt_text_filter(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    seed(server, png(90, 90), "beta.png", alt_text="B")
    seed(server, png(8, 8), "alpha.png")
    seed(server, png(40, 40), "gamma.png")
    gallery.sign_in()
    expect(gallery.names).to_have_text(["gamma.png", "alpha.png", "beta.png"])
    sort = page.get_by_label("Sort")
    sort.select_option("name")
    expect(gallery.names).to_have_text(["alpha.png", "beta.png", "gamma.png"])
    assert page.url.endswith("#sort=name")
    sort.select_option("size")
    expect(gallery.names).to_have_text(["beta.png", "gamma.png", "alpha.png"])
    sort.select_option("oldest")
    expect(gallery.names).to_have_text(["beta.png", "alpha.png", "gamma.png"])
    page.reload()
    expect(sort).to_have_value("oldest")
    expect(gallery.names).to_have_text(["beta.png", "alpha.png", "gamma.png"])

    missing = page.get_by_role("button", name="Missing alt text (2)")
    missing.click()
    expect(missing).to_have_attribute("aria-pressed", "true")
    expect(gallery.names).to_have_text(["alpha.png", "gamma.png"])
    expect(page.locator("#library-count")).to_have_text("2 images without alt text")
    dialog = gallery.open_details("alpha.png")
    dialog.get_by_label("Alt text").fill("A small red square")
    dialog.get_by_role("button", name="Save changes").click()
    expect(dialog.locator("#details-status")).to_have_text("Saved. It has left this view.")
    page.keyboard.press("Escape")
    expect(gallery.names).to_have_text(["gamma.png"])
    expect(page.get_by_role("button", name="Missing alt text (1)")).to_be_visible()


def test_duplicate_warning_at_upload(gallery: Gallery, server: Any, tmp_path: Path) -> None:
    page = gallery.page
    data = png(33, 22, (10, 200, 10))
    seed(server, data, "original.png", folder="branding")
    again = tmp_path / "copy-of-original.png"
    again.write_bytes(data)
    fresh = tmp_path / "new.png"
    fresh.write_bytes(png(34, 22))
    gallery.sign_in()
    page.set_input_files("#file-input", [str(again), str(fresh)])
    rows = page.locator("#upload-dialog .upload-row")
    expect(rows.filter(has_text="copy-of-original.png").locator(".upload-duplicate")).to_have_text(
        "Already in the library as “original.png” in “branding”. Uploading it again makes a "
        "second image. Open it"
    )
    expect(rows.filter(has_text="new.png").locator(".upload-duplicate")).to_be_hidden()


def test_details_previous_next_and_a_link_to_one_image(
    browser: Browser, gallery: Gallery, server: Any
) -> None:
    page = gallery.page
    for name in ["c.png", "b.png", "a.png"]:
        seed(server, png(), name, alt_text=f"Alt {name}")
    gallery.sign_in()
    dialog = gallery.open_details("b.png")
    expect(dialog.locator("#details-position")).to_have_text("2 of 3")
    dialog.locator("#details-facts").click()  # out of the text fields: arrows step
    page.keyboard.press("ArrowRight")
    expect(dialog.locator("#details-title")).to_have_text("c.png")
    expect(dialog.get_by_role("button", name="Next image")).to_be_disabled()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(dialog.locator("#details-title")).to_have_text("a.png")
    dialog.get_by_role("button", name="Next image").click()
    expect(dialog.locator("#details-title")).to_have_text("b.png")
    b_id = page.url.rsplit("image=", 1)[1]
    dialog.get_by_role("button", name="Copy link to this page").click()
    link = gallery.clipboard()
    assert link == f"{server.base_url}/#image={b_id}"
    # A teammate opens the link (signing in first): the same image's details.
    other = make_context(browser, server.base_url)
    try:
        mate = Gallery(other.new_page(), server)
        mate.page.goto(link)
        mate.page.get_by_label("API key").fill(server.api_key)
        mate.page.get_by_role("button", name="Sign in").click()
        expect(mate.page.locator("#details-dialog")).to_be_visible()
        expect(mate.page.locator("#details-title")).to_have_text("b.png")
        expect(mate.page.locator("#details-alt")).to_have_value("Alt b.png")
    finally:
        other.close()


def test_cards_show_full_names_on_hover_and_focus_dimensions_size_and_alt(
    gallery: Gallery, server: Any
) -> None:
    page = gallery.page
    long = "quarterly-newsletter-header-final-version-approved-by-marketing.png"
    image = seed(server, png(1600, 900), long, alt_text="Header with the Q3 numbers")
    gallery.sign_in()
    card = gallery.card(long)
    name = card.locator(".card-name")
    assert name.evaluate("el => el.scrollWidth > el.clientWidth")  # cut short on the card
    tip = card.locator(".card-tip")
    expect(tip).to_be_hidden()
    card.hover()
    expect(tip).to_be_visible()
    expect(tip).to_have_text(long)
    page.mouse.move(1279, 859)
    expect(tip).to_be_hidden()
    page.locator("#search-input").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    for _ in range(10):
        if page.evaluate("document.activeElement.classList.contains('card-button')"):
            break
        page.keyboard.press("Tab")
    expect(card.locator(".card-button")).to_be_focused()
    expect(tip).to_be_visible()
    size = f"{image['size_bytes'] / 1024:.1f} KB"
    expect(card.locator(".card-facts")).to_have_text(f"1,600 \u00d7 900 · {size} · PNG")
    expect(card.locator("img")).to_have_attribute("alt", "Header with the Q3 numbers")


def test_grid_and_details_ask_for_right_sized_variants_never_the_original(
    gallery: Gallery, server: Any
) -> None:
    page = gallery.page
    image = seed(server, png(1000, 500), "wide.png")
    small = seed(server, png(100, 50), "small.png")
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    # Each image's srcset as the gallery made it (before any fallback to the thumbnail).
    page.add_init_script(
        """window.made = {};
        new MutationObserver((records) => {
            for (const r of records) for (const n of r.addedNodes) {
                const img = n.querySelector && (n.matches('img') ? n : n.querySelector('img'));
                if (img && img.getAttribute('srcset') && !img.dataset.fallback)
                    window.made[img.closest('.card')?.dataset.id || img.id] ??= [
                        img.getAttribute('src'), img.getAttribute('srcset'), img.sizes];
            }
        }).observe(document, {subtree: true, childList: true});"""
    )
    gallery.sign_in()
    expect(gallery.names).to_have_count(2)
    local = f"/i/{image['id']}"
    made = page.evaluate("window.made")
    assert made[image["id"]] == [
        f"{local}/w320.png",
        f"{local}/w160.png 160w, {local}/w320.png 320w, {local}/w480.png 480w, "
        f"{local}/w600.png 600w, {local}/w800.png 800w",
        "(max-width: 720px) min(45vw, 320px), 240px",
    ]
    assert made[small["id"]][1] == f"/i/{small['id']}/w160.png 100w"
    dialog = gallery.open_details("wide.png")
    expect(dialog.locator("#details-image")).to_have_js_property("complete", True)
    # The browser picked right-sized variants: 320 for a 240-pixel card, 600 for the preview.
    base = server.base_url
    assert f"{base}{local}/w320.png" in requested
    assert f"{base}{local}/w600.png" in requested
    originals = [u for u in requested if re.search(r"/i/img_\w+$", u)]
    assert originals == [], originals


def test_variant_bytes_load_in_the_grid_and_details(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    seed(server, png(1000, 500), "wide.png")
    gallery.sign_in()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#grid img')].every(i => i.complete)"
    )
    img = card_button(gallery, "wide.png").locator("img")
    assert img.evaluate("i => !i.dataset.fallback && /\\/w\\d+\\.png$/.test(i.currentSrc)")


def test_copy_html_for_the_web_and_markdown(gallery: Gallery, server: Any) -> None:
    image = seed(server, png(1000, 500), "hero.png", alt_text="Hero [v2] \\ draft")
    webp = seed(server, scene(500, 400, (10, 20, 30), (40, 50, 60), (70, 80, 90), "WEBP"),
                "small.webp", alt_text="Small")
    gallery.sign_in()
    dialog = gallery.open_details("hero.png")
    url = image["url"]
    dialog.get_by_role("button", name="Copy HTML for the web").click()
    expect(dialog.locator("#copy-status")).to_have_text("Copied the HTML for the web, with srcset.")
    assert gallery.clipboard() == (
        f'<img src="{url}/w800.png" srcset="{url}/w160.png 160w, {url}/w320.png 320w, '
        f'{url}/w480.png 480w, {url}/w600.png 600w, {url}/w800.png 800w, {url}/w1200.png 1000w"'
        ' sizes="(max-width: 800px) 100vw, 800px" width="1000" height="500"'
        ' alt="Hero [v2] \\ draft" loading="lazy" decoding="async">'
    )
    dialog.get_by_role("button", name="Copy Markdown").click()
    assert gallery.clipboard() == f"![Hero \\[v2\\] \\\\ draft]({url})"
    gallery.page.keyboard.press("Escape")
    # Narrower than 600: its own width; WebP goes to email as JPEG.
    dialog = gallery.open_details("small.webp")
    dialog.get_by_role("button", name="Copy <img> for email").click()
    assert gallery.clipboard() == (
        f'<img src="{webp["url"]}/w1200.jpg" alt="Small" width="500" height="400" border="0"'
        ' style="display:block;max-width:100%;height:auto">'
    )


# ------------------------------------------------------------------------------------------
# Keyboard and screen readers


def test_grid_is_one_tab_stop_with_arrow_keys_and_shortcuts(
    gallery: Gallery, server: Any
) -> None:
    page = gallery.page
    for i in range(30):
        seed(server, png(8, 8), f"img-{i:02d}.png")
    page.on("filechooser", lambda chooser: None)
    gallery.sign_in()
    expect(gallery.names.first).to_have_text("img-29.png")
    assert page.locator("#grid .card-button[tabindex='0']").count() == 1
    cols = page.evaluate(
        "getComputedStyle(document.getElementById('grid')).gridTemplateColumns.split(' ').length"
    )
    page.locator("#select-all").focus()
    page.keyboard.press("Tab")
    assert focused_card_name(page) == "img-29.png"
    page.keyboard.press("ArrowRight")
    assert focused_card_name(page) == "img-28.png"
    page.keyboard.press("ArrowDown")
    assert focused_card_name(page) == f"img-{28 - cols:02d}.png"
    page.keyboard.press("Tab")  # one Tab leaves the grid
    assert focused_card_name(page) is None
    page.keyboard.press("Shift+Tab")  # and comes back to the same card
    assert focused_card_name(page) == f"img-{28 - cols:02d}.png"
    page.keyboard.press("Space")
    expect(page.locator("#bulk-bar")).to_contain_text("1 selected")
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("Shift+ArrowRight")
    expect(page.locator("#bulk-bar")).to_contain_text("3 selected")
    page.keyboard.press("Escape")
    expect(page.locator("#bulk-bar")).to_be_hidden()
    # Far down with the keyboard: the focused card is never under the sticky header.
    for _ in range(6):
        page.keyboard.press("ArrowDown")
    for _ in range(3):
        page.keyboard.press("ArrowUp")
        header = page.locator("#topbar").bounding_box()
        box = page.evaluate("document.activeElement.getBoundingClientRect().top")
        assert header and box >= header["y"] + header["height"], (box, header)
    page.keyboard.press("Enter")
    expect(page.locator("#details-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    # Shortcuts: "/" search, "u" upload, Delete.
    page.keyboard.press("/")
    expect(page.locator("#search-input")).to_be_focused()
    page.locator("#library").focus()
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("u")
    assert chooser.value.is_multiple()
    card_button(gallery, "img-29.png").focus()
    page.keyboard.press("Delete")
    expect(page.locator("#confirm-dialog")).to_contain_text("“img-29.png” will be deleted.")
    page.keyboard.press("Escape")


def test_the_count_is_announced_once_per_change(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    for i in range(120):
        seed(server, png(8, 8), f"img-{i:03d}.png", alt_text="sunny" if i < 5 else "")
    page.add_init_script(
        """window.said = [];
        document.addEventListener('DOMContentLoaded', () => {
            const live = document.getElementById('announcer');
            new MutationObserver(() => window.said.push(live.textContent))
                .observe(live, {childList: true, characterData: true, subtree: true});
        });"""
    )
    gallery.sign_in()
    assert len(scroll_through(page)) == 120  # both pages arrived
    assert page.evaluate("window.said") == ["120 images"]
    assert page.locator("#announcer").get_attribute("aria-live") == "polite"
    assert page.locator("#library-count").get_attribute("aria-live") is None
    page.get_by_label("Search images by filename or alt text").fill("sunny")
    expect(gallery.names).to_have_count(5)
    assert page.evaluate("window.said") == ["120 images", "5 images matching “sunny”"]


def test_touch_targets_are_44_pixels_on_a_phone(browser: Browser, server: Any) -> None:
    seed(server, png(), "a.png", folder="news")
    context = browser.new_context(
        base_url=server.base_url, viewport={"width": 390, "height": 844}, has_touch=True,
        is_mobile=True, device_scale_factor=2,
    )
    try:
        page = context.new_page()
        gallery = Gallery(page, server)
        gallery.sign_in()
        expect(gallery.names).to_have_count(1)
        small = page.evaluate(
            """[...document.querySelectorAll(
                'button, input:not([type=file]), select, a[href], [role=button]')]
              .filter(el => el.offsetParent !== null && !el.matches('.skip-link:not(:focus)')
                            && !el.closest('.visually-hidden, dialog:not([open])'))
              .map(el => [el.id || el.className || el.tagName, el.getBoundingClientRect()])
              .filter(([, r]) => r.width > 0 && (r.width < 44 || r.height < 44))
              .map(([name, r]) => `${name} ${Math.round(r.width)}x${Math.round(r.height)}`)"""
        )
        assert small == []
    finally:
        context.close()
