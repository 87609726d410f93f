"""The gallery page at / and its static files under /static/."""

from __future__ import annotations

from typing import Any

import tornado.web

from appliance.config import cli_command, static_dir
from appliance.handlers.base import SECURITY_HEADERS, BaseHandler, set_allow

GALLERY_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


class GalleryHandler(BaseHandler):
    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", GALLERY_CSP)

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        page = (static_dir() / "index.html").read_bytes()
        # The command this user has (`pictor ...` or `python main.py ...`), for the page's
        # hints: read it as document.documentElement.dataset.command.
        command = f'<html data-command="{cli_command()}"'.encode()
        self.finish(page.replace(b"<html", command, 1))


class StaticHandler(tornado.web.StaticFileHandler):
    def set_default_headers(self) -> None:
        self.clear_header("Server")
        for name, value in SECURITY_HEADERS:
            self.set_header(name, value)
        self.set_header("Content-Security-Policy", GALLERY_CSP)

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        set_allow(self, status_code)
        super().write_error(status_code, **kwargs)
