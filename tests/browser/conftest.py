"""Browser fixtures: Debian's chromium driven by Playwright's sync API, against the real server.

pytest-playwright is deliberately not used (its `base_url` fixture clashes with ours): the
browser is launched here once per session, and each test gets a fresh context and page.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)

CHROMIUM = os.environ.get("PICTOR_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

expect.set_options(timeout=10_000)


# Per module, not per session: while Playwright's sync API is started, its event loop counts
# as running in this thread, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium (or set PICTOR_CHROMIUM)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@dataclass
class ConsoleLog:
    """Everything the page said on its console, plus uncaught exceptions."""

    messages: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def on_console(self, msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            url = msg.location.get("url", "") if msg.location else ""
            self.messages.append(f"{msg.type}: {msg.text} @ {url}")

    def csp_violations(self) -> list[str]:
        return [m for m in self.messages if "Content Security Policy" in m or "Refused to" in m]

    def unexpected(self) -> list[str]:
        """Errors other than the failed requests a test provokes on purpose (401, 413, 400)."""
        return [m for m in self.messages if "Failed to load resource" not in m]


def make_context(browser: Browser, base_url: str, color_scheme: str = "light") -> BrowserContext:
    context = browser.new_context(
        base_url=base_url,
        viewport={"width": 1280, "height": 860},
        color_scheme=color_scheme,  # type: ignore[arg-type]
        reduced_motion="reduce",
    )
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
    return context


@pytest.fixture
def context(browser: Browser, server: Any) -> Iterator[BrowserContext]:
    ctx = make_context(browser, server.base_url)
    yield ctx
    ctx.close()


@pytest.fixture
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def page(context: BrowserContext, console: ConsoleLog) -> Iterator[Page]:
    page = context.new_page()
    page.set_default_timeout(15_000)
    # Chromium logs CSP refusals itself; this also catches any it might only report as events.
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => console.error("
        "'CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI))"
    )
    page.on("console", console.on_console)
    page.on("pageerror", lambda exc: console.page_errors.append(str(exc)))
    yield page
    # Every test: the page never broke the CSP and never threw.
    assert console.csp_violations() == [], console.messages
    assert console.page_errors == []
    assert console.unexpected() == [], console.messages


class Gallery:
    """The few steps most tests share, in the words a user would use."""

    def __init__(self, page: Page, server: Any) -> None:
        self.page = page
        self.server = server

    def open(self) -> None:
        self.page.goto("/")

    def sign_in(self, key: str | None = None) -> None:
        self.open()
        self.page.get_by_label("API key").fill(key or self.server.api_key)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.locator("#app-view")).to_be_visible()
        expect(self.page.locator("#grid")).not_to_have_attribute("aria-busy", "true")

    @property
    def names(self) -> Any:
        return self.page.locator("#grid .card-name")

    def card(self, filename: str) -> Any:
        return self.page.locator("#grid .card").filter(
            has=self.page.locator(".card-name", has_text=filename)
        )

    def open_details(self, filename: str) -> Any:
        self.card(filename).get_by_role("button").click()
        dialog = self.page.locator("#details-dialog")
        expect(dialog).to_be_visible()
        expect(dialog.locator("#details-title")).to_have_text(filename)
        return dialog

    def clipboard(self) -> str:
        return str(self.page.evaluate("navigator.clipboard.readText()"))


@pytest.fixture
def gallery(page: Page, server: Any) -> Gallery:
    return Gallery(page, server)


def png(width: int = 40, height: int = 30, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def scene(
    width: int,
    height: int,
    sky: tuple[int, int, int],
    ground: tuple[int, int, int],
    sun: tuple[int, int, int],
    fmt: str = "PNG",
) -> bytes:
    """A small picture (sky gradient, sun, hills) so that screenshots look like a real library."""
    img = Image.new("RGB", (width, height), sky)
    draw = ImageDraw.Draw(img)
    for y in range(height):
        t = y / max(1, height - 1)
        draw.line([(0, y), (width, y)], fill=tuple(int(c * (1 - 0.35 * t)) for c in sky))
    r = min(width, height) // 7
    draw.ellipse(
        [width * 0.68, height * 0.18, width * 0.68 + 2 * r, height * 0.18 + 2 * r], fill=sun
    )
    draw.ellipse([-width * 0.3, height * 0.62, width * 0.75, height * 1.6], fill=ground)
    darker = tuple(int(c * 0.8) for c in ground)
    draw.ellipse([width * 0.35, height * 0.7, width * 1.4, height * 1.7], fill=darker)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# axe-core, from the npm registry, injected into the page. Installed on first use into
# tests/browser/.axe (ignored by git), or taken from PICTOR_AXE_JS.

AXE_DIR = Path(__file__).resolve().parent / ".axe"
AXE_VERSION = "4.14.1"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


@pytest.fixture(scope="session")
def axe_source() -> str:
    path = Path(os.environ.get("PICTOR_AXE_JS", AXE_DIR / "node_modules/axe-core/axe.min.js"))
    if not path.exists():
        AXE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(AXE_DIR),
             f"axe-core@{AXE_VERSION}"],
            check=True,
            timeout=300,
        )
    return path.read_text()


def axe_violations(page: Page, source: str, context: str = "document") -> list[str]:
    """Every axe-core violation (WCAG 2.x A and AA, best practices) on the page as it is now,
    one line each: rule, impact, and the elements."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # The page's CSP refuses inline scripts; an evaluated script is not the page's own.
        page.evaluate("() => {" + source + "\n}")
    result = page.evaluate(
        """async ([context, tags]) => {
            const root = context === 'document' ? document : document.querySelector(context);
            const r = await axe.run(root, {
                resultTypes: ['violations'], runOnly: {type: 'tag', values: tags},
            });
            return r.violations.map(v => `${v.id} (${v.impact}): ${v.help} -> ` +
                v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' ' +
                    (n.failureSummary || '').replace(/\\s+/g, ' ')).join(' | '));
        }""",
        [context, AXE_TAGS],
    )
    return list(result)
