"""The gallery page, driven in a real browser against the real server.

Each test asserts what a person would see and what the API then holds, not just that a
click happened. Screenshots of the main screen and the details panel go to tests/artifacts/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, expect

from .conftest import ConsoleLog, Gallery, make_context, png, scene

STATIC = Path(__file__).resolve().parents[2] / "static"
MAX_BYTES = 10_485_760
REQUIRED_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


def api_images(server: Any, key: str | None = None, **query: str) -> dict[str, Any]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    resp = server.request("GET", f"/v3/images?{qs}", key=key or server.api_key)
    assert resp.status == 200, resp.body
    return resp.json()  # type: ignore[no-any-return]


def seed(server: Any, data: bytes, filename: str, **fields: str) -> dict[str, Any]:
    resp = server.upload(data, filename, **fields)
    assert resp.status == 201, resp.body
    return resp.json()  # type: ignore[no-any-return]


def storage(page: Page, kind: str) -> Any:
    return page.evaluate(f"window.{kind}.getItem('pictor.apiKey')")


# ------------------------------------------------------------------------------------------
# Signing in and out


def test_sign_in_keeps_key_out_of_urls_and_sign_out_forgets_it(
    gallery: Gallery, server: Any
) -> None:
    page = gallery.page
    gallery.open()
    key_input = page.get_by_label("API key")
    expect(key_input).to_be_visible()
    expect(key_input).to_have_attribute("type", "password")
    expect(page.locator("#app-view")).to_be_hidden()

    requested: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    gallery.sign_in()

    expect(page.get_by_role("heading", name="All images")).to_be_visible()
    expect(page.locator("#empty-state")).to_contain_text("No images yet")
    expect(page.locator("#empty-state")).to_contain_text("Drag images anywhere")
    assert storage(page, "sessionStorage") == server.api_key
    assert storage(page, "localStorage") is None
    assert server.api_key not in page.url
    assert requested and not [u for u in requested if server.api_key in u]

    # A reload keeps the session (sessionStorage), sign out forgets it.
    page.reload()
    expect(page.locator("#app-view")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    expect(page.locator("#signin-message")).to_have_text("You are signed out.")
    assert storage(page, "sessionStorage") is None
    assert storage(page, "localStorage") is None
    page.reload()
    expect(page.get_by_label("API key")).to_be_visible()
    expect(page.locator("#app-view")).to_be_hidden()


def test_keep_signed_in_uses_local_storage(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    gallery.open()
    page.get_by_label("API key").fill(server.api_key)
    page.get_by_label("Keep me signed in on this device").check()
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#app-view")).to_be_visible()
    assert storage(page, "localStorage") == server.api_key
    assert storage(page, "sessionStorage") is None
    page.get_by_role("button", name="Sign out").click()
    assert storage(page, "localStorage") is None


def test_wrong_key_says_so_plainly(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    gallery.open()
    page.get_by_label("API key").fill("pk_this-is-not-a-key")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("That API key was not accepted")
    expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#app-view")).to_be_hidden()
    assert storage(page, "sessionStorage") is None
    assert storage(page, "localStorage") is None

    # An empty key is caught before asking the server.
    page.get_by_label("API key").fill("")
    page.get_by_role("button", name="Sign in").click()
    expect(alert).to_have_text("Enter your API key.")


def test_another_tenant_sees_only_its_own_images(gallery: Gallery, server: Any) -> None:
    seed(server, png(), "default-secret.png")
    gallery.sign_in(server.new_key("other"))
    expect(gallery.page.locator("#empty-state")).to_contain_text("No images yet")
    expect(gallery.names).to_have_count(0)


def test_stale_saved_key_returns_to_sign_in(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    gallery.open()
    page.evaluate("sessionStorage.setItem('pictor.apiKey', 'pk_revoked')")
    page.reload()
    expect(page.get_by_label("API key")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("no longer accepted")
    assert storage(page, "sessionStorage") is None


# ------------------------------------------------------------------------------------------
# Uploading


def test_upload_many_at_once_one_too_large(gallery: Gallery, server: Any, tmp_path: Path) -> None:
    page = gallery.page
    good = tmp_path / "spring-sale.png"
    good.write_bytes(png(120, 60))
    big = tmp_path / "huge-banner.png"
    payload = png(50, 50)
    big.write_bytes(payload + b"\0" * (MAX_BYTES + 1 - len(payload)))
    assert big.stat().st_size == MAX_BYTES + 1

    gallery.sign_in()
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.set_input_files("#file-input", [str(big), str(good)])
    dialog = page.locator("#upload-dialog")
    expect(dialog).to_be_visible()
    rows = dialog.locator(".upload-row")
    expect(rows).to_have_count(2)
    big_row = rows.filter(has_text="huge-banner.png")
    good_row = rows.filter(has_text="spring-sale.png")
    # Refused here, with the reason, before a byte is sent: only one file is left to upload.
    expect(big_row).to_have_attribute("data-state", "refused")
    expect(big_row.get_by_role("alert")).to_have_text(
        "“huge-banner.png” is 10,485,761 bytes; the limit is 10 MB (10,485,760 bytes) a "
        "file. Make it smaller, or export it as JPEG or WebP."
    )
    page.get_by_label("Folder (optional)").fill("newsletters")
    # Record every status line the rows show while the bytes go up.
    page.evaluate(
        """() => {
            window.seenStatus = [];
            new MutationObserver(() => {
                for (const row of document.querySelectorAll('.upload-row')) {
                    const status = row.querySelector('.upload-status').textContent;
                    window.seenStatus.push(row.dataset.name + ': ' + status);
                }
            }).observe(document.getElementById('upload-list'),
                       {subtree: true, childList: true, characterData: true});
        }"""
    )
    dialog.get_by_role("button", name="Upload", exact=True).click()

    expect(good_row).to_have_attribute("data-state", "done")
    expect(good_row.locator(".upload-status")).to_contain_text("Uploaded to “newsletters”.")
    expect(good_row.locator("progress")).to_have_attribute("value", "100")
    expect(big_row).to_have_attribute("data-state", "refused")
    expect(dialog.locator("#upload-title")).to_have_text("1 uploaded · 1 file refused")
    seen = page.evaluate("window.seenStatus")
    assert any(re.fullmatch(r"spring-sale\.png: Uploading… \d+%", line) for line in seen), seen
    assert not any(line.startswith("huge-banner.png: Uploading") for line in seen), seen
    assert posts == [server.base_url + "/v3/images"]

    # The server holds exactly the good one, with the chosen folder; the grid shows it.
    body = api_images(server)
    assert body["total"] == 1
    [image] = body["images"]
    assert (image["filename"], image["folder"], image["alt_text"]) == (
        "spring-sale.png",
        "newsletters",
        "",
    )
    assert (image["width"], image["height"]) == (120, 60)

    dialog.locator("#upload-close").click()
    expect(dialog).to_be_hidden()
    expect(gallery.names).to_have_text(["spring-sale.png"])
    card = gallery.card("spring-sale.png")
    expect(card).to_contain_text("newsletters")
    expect(card.locator(".badge")).to_have_text("No alt text")
    thumb = card.locator("img")
    expect(thumb).to_have_attribute("loading", "lazy")
    expect(thumb).to_have_attribute("width", "120")
    expect(thumb).to_have_attribute("height", "60")
    expect(page.locator("#folder-list")).to_contain_text("newsletters")


def test_upload_not_an_image_is_refused_here_a_broken_one_by_the_server(
    gallery: Gallery, server: Any, tmp_path: Path
) -> None:
    page = gallery.page
    notes = tmp_path / "notes.png"  # the name lies; the bytes decide
    notes.write_bytes(b"These are meeting notes, not a picture.\n" * 20)
    broken = tmp_path / "broken.png"  # a PNG signature, then nothing a decoder can use
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    good = tmp_path / "logo.png"
    good.write_bytes(png(32, 32, (20, 90, 200)))
    refused = server.upload(broken.read_bytes(), "broken.png")
    assert refused.status == 400
    message = refused.json()["error"]["message"]

    gallery.sign_in()
    page.set_input_files("#file-input", [str(notes), str(broken), str(good)])
    dialog = page.locator("#upload-dialog")
    expect(dialog.locator(".upload-row", has_text="notes.png").get_by_role("alert")).to_have_text(
        "“notes.png” is not a JPEG, PNG, GIF or WebP image (it is image/png). "
        "Only those can be uploaded."
    )
    dialog.locator(".upload-row", has_text="logo.png").get_by_label("Alt text for logo.png").fill(
        "Blue logo"
    )
    dialog.get_by_role("button", name="Upload 2 images").click()
    expect(
        dialog.locator(".upload-row", has_text="broken.png").locator(".upload-status")
    ).to_have_text(message)
    expect(dialog.locator(".upload-row", has_text="logo.png")).to_have_attribute(
        "data-state", "done"
    )
    [image] = api_images(server)["images"]
    assert (image["filename"], image["alt_text"], image["folder"]) == (
        "logo.png",
        "Blue logo",
        None,
    )


def test_drag_and_drop_anywhere(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    gallery.sign_in()
    # Synthetic drag events carrying a real File: the page's handlers see what a drop gives them.
    page.evaluate(
        """(bytes) => {
            window.dropData = new DataTransfer();
            const file = new File([new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'});
            window.dropData.items.add(file);
            const init = {bubbles: true, cancelable: true, dataTransfer: window.dropData};
            document.querySelector('#library').dispatchEvent(new DragEvent('dragenter', init));
        }""",
        list(png(50, 20, (250, 160, 0))),
    )
    expect(page.locator("#drop-overlay")).to_be_visible()
    expect(page.locator("#drop-overlay")).to_contain_text("Drop images to upload")
    page.evaluate(
        """() => {
            const init = {bubbles: true, cancelable: true, dataTransfer: window.dropData};
            document.querySelector('.sidebar').dispatchEvent(new DragEvent('drop', init));
        }"""
    )
    expect(page.locator("#drop-overlay")).to_be_hidden()
    dialog = page.locator("#upload-dialog")
    expect(dialog.locator(".upload-row")).to_have_count(1)
    dialog.get_by_label("Alt text for dropped.png").fill("Orange strip")
    dialog.get_by_role("button", name="Upload", exact=True).click()
    expect(dialog.locator(".upload-row")).to_have_attribute("data-state", "done")
    [image] = api_images(server)["images"]
    assert (image["filename"], image["alt_text"], image["width"], image["height"]) == (
        "dropped.png",
        "Orange strip",
        50,
        20,
    )
    dialog.locator("#upload-close").click()
    expect(gallery.names).to_have_text(["dropped.png"])


def test_keyboard_only_upload(gallery: Gallery, server: Any, tmp_path: Path) -> None:
    page = gallery.page
    picture = tmp_path / "keyboard.png"
    picture.write_bytes(png(64, 48, (30, 150, 90)))
    # Playwright turns on file-chooser interception when the first listener is added, a moment
    # later; Enter opens the chooser on key-down, so without this the first one could slip by.
    page.on("filechooser", lambda chooser: None)

    gallery.open()
    # The key field has focus on arrival: type and press Enter.
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(server.api_key)
    page.keyboard.press("Enter")
    expect(page.locator("#app-view")).to_be_visible()

    # Tab to the upload button; its focus ring is visible.
    for _ in range(15):
        if page.evaluate("document.activeElement.id") == "upload-button":
            break
        page.keyboard.press("Tab")
    upload_button = page.get_by_role("button", name="Upload images").first
    expect(upload_button).to_be_focused()
    outline = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, parseFloat(s.outlineWidth)]; })()"
    )
    assert outline[0] != "none" and outline[1] >= 2, outline

    with page.expect_file_chooser() as chooser_info:
        page.keyboard.press("Enter")
    chooser = chooser_info.value
    assert chooser.is_multiple()
    chooser.set_files(str(picture))

    dialog = page.locator("#upload-dialog")
    expect(dialog).to_be_visible()
    alt_input = dialog.get_by_label("Alt text for keyboard.png")
    expect(alt_input).to_be_focused()
    page.keyboard.type("A green rectangle")
    page.keyboard.press("Enter")  # submits the upload form
    row = dialog.locator(".upload-row", has_text="keyboard.png")
    expect(row).to_have_attribute("data-state", "done")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    [image] = api_images(server)["images"]
    assert (image["filename"], image["alt_text"]) == ("keyboard.png", "A green rectangle")

    # Reach the new card by keyboard and open its details with Enter.
    for _ in range(25):
        if page.evaluate("document.activeElement.classList.contains('card-button')"):
            break
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    details = page.locator("#details-dialog")
    expect(details).to_be_visible()
    expect(details.locator("#details-title")).to_have_text("keyboard.png")
    expect(details.get_by_label("Alt text")).to_have_value("A green rectangle")
    page.keyboard.press("Escape")
    expect(details).to_be_hidden()
    expect(gallery.card("keyboard.png").get_by_role("button")).to_be_focused()


# ------------------------------------------------------------------------------------------
# Browsing


def test_find_by_search_and_by_folder(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    seed(server, png(), "spring-sale.png", alt_text="Spring banner", folder="newsletters")
    seed(server, png(), "logo.png", folder="branding")
    seed(server, png(), "team-photo.png", alt_text="The team at the summer party")
    gallery.sign_in()
    expect(gallery.names).to_have_text(
        ["team-photo.png", "logo.png", "spring-sale.png"]
    )  # newest first
    expect(page.locator("#library-count")).to_have_text("3 images")

    search = page.get_by_label("Search images by filename or alt text")
    search.fill("SALE")  # filename, any case
    expect(gallery.names).to_have_text(["spring-sale.png"])
    expect(page.locator("#library-count")).to_have_text("1 image matching “SALE”")
    search.fill("summer")  # alt text
    expect(gallery.names).to_have_text(["team-photo.png"])
    search.fill("nothing-like-this")
    expect(gallery.names).to_have_count(0)
    empty = page.locator("#empty-state")
    expect(empty).to_contain_text("No images match “nothing-like-this”")
    empty.get_by_role("button", name="Clear search").click()
    expect(search).to_have_value("")
    expect(gallery.names).to_have_count(3)

    folders = page.locator("#folder-list .folder-name")
    expect(folders).to_have_text(["All images", "branding", "newsletters"])
    page.locator("#folder-list").get_by_role("button", name="newsletters").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("newsletters")
    expect(gallery.names).to_have_text(["spring-sale.png"])
    current = page.locator("#folder-list [aria-current=true] .folder-name")
    expect(current).to_have_text("newsletters")
    page.locator("#folder-list").get_by_role("button", name="All images").click()
    expect(gallery.names).to_have_count(3)
    # Only the image without alt text carries the marker.
    expect(page.locator("#grid .badge")).to_have_count(1)
    expect(gallery.card("logo.png").locator(".badge")).to_have_text("No alt text")


def test_paging_never_shows_an_image_twice(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    names = [f"img-{i:03d}.png" for i in range(130)]
    for name in names:
        seed(server, png(8, 8), name)
    # Someone else uploads between the first page and the second, whenever the second is
    # asked for (by scrolling): the page boundaries shift by one.
    arrived: list[str] = []

    def late_upload(route: Any) -> None:
        if not arrived:
            arrived.append(seed(server, png(8, 8), "late-arrival.png")["id"])
        route.continue_()

    page.route(lambda url: "/v3/images?" in url and "page=2" in url, late_upload)
    gallery.sign_in()
    expect(gallery.names.first).to_be_visible()
    shown = scroll_through(page)
    assert arrived, "the second page was never asked for"
    assert len(shown) == len(set(shown)), "an image was shown twice"
    assert [n for n in shown if n != "late-arrival.png"] == list(reversed(names))


def scroll_through(page: Page) -> list[str]:
    """Scroll the virtual grid from top to bottom; every card's name, in grid order."""
    page.evaluate("window.scrollTo(0, 0)")
    seen: dict[int, str] = {}
    for _ in range(400):
        page.wait_for_function("() => !document.querySelector('#grid').hasAttribute('aria-busy')")
        for index, name in page.evaluate(
            "[...document.querySelectorAll('#grid .card')].map("
            "li => [Number(li.dataset.index), li.querySelector('.card-name').textContent])"
        ):
            seen[index] = name
        at_end = page.evaluate(
            "window.scrollY + window.innerHeight >= document.documentElement.scrollHeight - 2"
        )
        if at_end and len(seen) >= int(page.evaluate("document.querySelectorAll('#grid .card')"
                                                     "[0]?.getAttribute('aria-setsize') || 0")):
            break
        page.mouse.wheel(0, 700)
        page.wait_for_timeout(30)
    return [seen[i] for i in sorted(seen)]


def test_the_view_is_kept_in_the_url_for_reload_and_back(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    seed(server, png(20, 20), "spring-sale.png", folder="newsletters")
    seed(server, png(21, 20), "logo.png", folder="branding")
    seed(server, png(22, 20), "team.png")
    gallery.sign_in()
    expect(gallery.names).to_have_count(3)
    page.locator("#folder-list").get_by_role("button", name="newsletters").click()
    expect(gallery.names).to_have_text(["spring-sale.png"])
    expect(page).to_have_url(re.compile(r"/#folder=newsletters$"))
    search = page.get_by_label("Search images by filename or alt text")
    search.fill("SALE")
    expect(page).to_have_url(re.compile(r"/#folder=newsletters&search=SALE$"))
    page.reload()  # the key stays in this tab's sessionStorage; the view comes from the URL
    expect(gallery.names).to_have_text(["spring-sale.png"])
    expect(search).to_have_value("SALE")
    expect(page.get_by_role("heading", level=1)).to_have_text("newsletters")
    page.go_back()  # before the folder was chosen: all images, no search
    expect(page.get_by_role("heading", level=1)).to_have_text("All images")
    expect(gallery.names).to_have_count(3)
    expect(search).to_have_value("")
    assert server.api_key not in page.url


# ------------------------------------------------------------------------------------------
# Details


def test_edit_alt_text_and_folder_in_place(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    image = seed(server, png(40, 30), "banner.png")
    gallery.sign_in()
    expect(gallery.card("banner.png").locator(".badge")).to_have_text("No alt text")
    dialog = gallery.open_details("banner.png")
    facts = dialog.locator("#details-facts")
    expect(facts).to_contain_text("40 \u00d7 30 px")
    expect(facts).to_contain_text("PNG (image/png)")
    expect(facts).to_contain_text(f"{image['size_bytes']} bytes")
    expect(facts).to_contain_text(image["id"])
    expect(dialog.get_by_label("Public URL")).to_have_value(image["url"])

    dialog.get_by_label("Alt text").fill("A red banner <b>bold</b> & more")
    dialog.get_by_label("Folder", exact=True).fill("branding")
    dialog.get_by_role("button", name="Save changes").click()
    expect(dialog.locator("#details-status")).to_have_text("Saved.")

    fresh = server.request("GET", f"/v3/images/{image['id']}").json()
    assert fresh["alt_text"] == "A red banner <b>bold</b> & more"
    assert fresh["folder"] == "branding"
    assert page.locator("#grid b").count() == 0  # text, never markup

    page.keyboard.press("Escape")
    card = gallery.card("banner.png")
    expect(card.locator(".badge")).to_have_count(0)
    expect(card).to_contain_text("branding")
    expect(page.locator("#folder-list")).to_contain_text("branding")

    # Clearing the folder sends null; the folder disappears from the list.
    gallery.open_details("banner.png")
    dialog.get_by_label("Folder", exact=True).fill("")
    dialog.get_by_role("button", name="Save changes").click()
    expect(dialog.locator("#details-status")).to_have_text("Saved.")
    assert server.request("GET", f"/v3/images/{image['id']}").json()["folder"] is None
    expect(page.locator("#folder-list .folder-name")).to_have_text(["All images"])


def test_edit_shows_the_server_refusal(gallery: Gallery, server: Any) -> None:
    seed(server, png(), "x.png")
    gallery.sign_in()
    dialog = gallery.open_details("x.png")
    dialog.get_by_label("Folder", exact=True).evaluate("el => el.removeAttribute('maxlength')")
    dialog.get_by_label("Folder", exact=True).fill("f" * 101)
    dialog.get_by_role("button", name="Save changes").click()
    status = dialog.locator("#details-status")
    expect(status).to_have_class(re.compile(r"\berror\b"))
    expect(status).not_to_have_text("Saving…")
    expect(status).not_to_be_empty()


def test_copy_url_and_img_tag_for_email(gallery: Gallery, server: Any) -> None:
    alt = 'Sale "50%" <now> & more'
    image = seed(server, png(1600, 900), "sale.png", alt_text=alt)
    gallery.sign_in()
    dialog = gallery.open_details("sale.png")

    dialog.get_by_role("button", name="Copy URL").click()
    expect(dialog.locator("#copy-status")).to_have_text("Copied the public URL.")
    assert gallery.clipboard() == image["url"]
    assert image["url"].startswith(server.base_url + "/i/")

    # 600 pixels wide from the 1200-pixel variant (sharp on 2x screens), height scaled.
    dialog.get_by_role("button", name="Copy <img> for email").click()
    expect(dialog.locator("#copy-status")).to_have_text(
        "Copied the <img> tag for email (600 pixels wide, sharp on high-density screens)."
    )
    assert gallery.clipboard() == (
        f'<img src="{image["url"]}/w1200.png" alt="Sale &quot;50%&quot; &lt;now&gt; &amp; more"'
        ' width="600" height="338" border="0" style="display:block;max-width:100%;height:auto">'
    )


def test_delete_with_a_warning_about_sent_emails(gallery: Gallery, server: Any) -> None:
    page = gallery.page
    keep = seed(server, png(), "keep.png")
    doomed = seed(server, png(), "doomed.png", folder="old")
    gallery.sign_in()
    details = gallery.open_details("doomed.png")
    details.get_by_role("button", name="Delete image…").click()
    confirm = page.locator("#confirm-dialog")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("“doomed.png” will be deleted.")
    expect(confirm).to_contain_text(
        "Emails that were already sent with this image will show a broken image"
    )
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()

    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    assert server.request("GET", f"/v3/images/{doomed['id']}").status == 200

    details.get_by_role("button", name="Delete image…").click()
    confirm.get_by_role("button", name="Delete image", exact=True).click()
    expect(confirm).to_be_hidden()
    expect(details).to_be_hidden()
    expect(page.locator("#toasts")).to_contain_text("Deleted “doomed.png”.")
    expect(gallery.names).to_have_text(["keep.png"])
    # The DELETE goes once the undo window (10 s) has passed.
    with page.expect_response(
        lambda r: r.request.method == "DELETE" and doomed["id"] in r.url, timeout=15_000
    ) as deleted:
        pass
    assert deleted.value.status == 204
    expect(page.locator("#folder-list .folder-name")).to_have_text(["All images"])

    assert server.request("GET", f"/v3/images/{doomed['id']}").status == 404
    assert server.request("GET", f"/i/{doomed['id']}").status == 410
    assert server.request("GET", f"/i/{keep['id']}").status == 200
    assert [i["id"] for i in api_images(server)["images"]] == [keep["id"]]


# ------------------------------------------------------------------------------------------
# The page itself: CSP, no inline code, screenshots


def test_csp_header_and_no_inline_code(gallery: Gallery, server: Any, console: ConsoleLog) -> None:
    page = gallery.page
    resp = server.request("GET", "/")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    assert resp.headers["Content-Security-Policy"] == REQUIRED_CSP

    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert not re.search(r"\sstyle\s*=", html), "inline style attribute"
    assert not re.search(r"<style", html), "inline <style>"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    for js in STATIC.glob("*.js"):  # API data reaches the DOM as text only
        assert not re.search(
            r"\.(innerHTML|outerHTML)\b|insertAdjacentHTML|document\.write|\beval\(", js.read_text()
        ), js.name

    # A whole happy path with no console error or warning of any kind.
    seed(server, png(), "one.png", folder="f")
    response = page.goto("/")
    assert response is not None
    assert response.headers["content-security-policy"] == REQUIRED_CSP
    gallery.sign_in()
    page.get_by_label("Search images by filename or alt text").fill("one")
    expect(gallery.names).to_have_text(["one.png"])
    gallery.open_details("one.png")
    expect(page.locator("#details-image")).to_have_js_property("complete", True)
    page.wait_for_function("() => document.getElementById('details-image').naturalWidth === 40")
    assert console.messages == []
    assert console.page_errors == []


ALL_THUMBNAILS_LOADED = (
    "() => [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth)"
)


def _seed_showcase(server: Any) -> None:
    pictures = [
        (
            "summer-hero.png",
            scene(1200, 600, (120, 180, 240), (70, 150, 80), (255, 210, 80)),
            "newsletters",
            "Beach at noon with a yellow sun",
        ),
        (
            "logo-square.png",
            scene(600, 600, (79, 70, 229), (50, 40, 160), (255, 255, 255)),
            "branding",
            "Pictor logo",
        ),
        (
            "autumn-sale.jpg",
            scene(900, 600, (240, 170, 110), (150, 80, 40), (255, 240, 200), "JPEG"),
            "newsletters",
            "",
        ),
        (
            "portrait-tall.webp",
            scene(600, 900, (40, 50, 90), (20, 30, 50), (240, 240, 200), "WEBP"),
            None,
            "Night sky over hills",
        ),
        (
            "footer-banner.gif",
            scene(600, 150, (200, 200, 210), (120, 120, 130), (250, 120, 90), "GIF"),
            "branding",
            "",
        ),
        (
            "spring-launch.png",
            scene(1600, 900, (170, 220, 190), (60, 130, 70), (255, 250, 220)),
            "newsletters",
            "Green field in spring",
        ),
        (
            "team-offsite.png",
            scene(800, 533, (250, 200, 160), (90, 110, 60), (255, 120, 60)),
            None,
            "",
        ),
    ]
    for filename, data, folder, alt in pictures:
        fields = {}
        if folder:
            fields["folder"] = folder
        if alt:
            fields["alt_text"] = alt
        seed(server, data, filename, **fields)


def test_screenshots(browser: Browser, server: Any, artifacts: Path, tmp_path: Path) -> None:
    """Sign-in, main screen, details and upload panels, light and dark: for people to look at."""
    _seed_showcase(server)
    good = tmp_path / "holiday-card.png"
    good.write_bytes(scene(900, 600, (230, 120, 140), (120, 60, 90), (255, 230, 150)))
    notes = tmp_path / "meeting-notes.txt"
    notes.write_bytes(b"not an image\n" * 10)
    for scheme, suffix in (("light", ""), ("dark", "-dark")):
        context = make_context(browser, server.base_url, scheme)
        try:
            page = context.new_page()
            console = ConsoleLog()
            page.on("console", console.on_console)
            gallery = Gallery(page, server)
            gallery.open()
            expect(page.get_by_label("API key")).to_be_focused()
            page.screenshot(path=str(artifacts / f"gallery-signin{suffix}.png"))

            gallery.sign_in()
            expect(gallery.names).to_have_count(7)
            page.wait_for_function(ALL_THUMBNAILS_LOADED)
            page.mouse.move(1279, 859)  # no hover effects in the picture
            page.screenshot(path=str(artifacts / f"gallery-main{suffix}.png"))

            dialog = gallery.open_details("summer-hero.png")
            expect(dialog.locator("#details-image")).to_have_js_property("complete", True)
            dialog.get_by_role("button", name="Copy URL").click()
            expect(dialog.locator("#copy-status")).to_have_text("Copied the public URL.")
            page.mouse.move(1279, 859)
            page.screenshot(path=str(artifacts / f"gallery-details{suffix}.png"))
            page.keyboard.press("Escape")

            page.set_input_files("#file-input", [str(good), str(notes)])
            upload = page.locator("#upload-dialog")
            upload.get_by_label("Alt text for holiday-card.png").fill("Pink holiday card")
            upload.get_by_label("Folder (optional)").fill("newsletters")
            upload.get_by_role("button", name="Upload", exact=True).click()
            expect(upload.locator("#upload-title")).to_have_text("1 uploaded · 1 file refused")
            page.mouse.move(1279, 859)
            page.screenshot(path=str(artifacts / f"gallery-upload{suffix}.png"))
            assert [m for m in console.messages if "Failed to load resource" not in m] == []
        finally:
            context.close()
        for image in api_images(server, search="holiday")["images"]:
            assert server.request("DELETE", f"/v3/images/{image['id']}").status == 204
    assert (artifacts / "gallery-main.png").stat().st_size > 10_000
    assert (artifacts / "gallery-details.png").stat().st_size > 10_000
