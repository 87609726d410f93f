"""What every handler shares: its dependencies, security headers and the one error path."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import tornado.web

from appliance.config import Settings
from appliance.errors import ApiError, error_body, generic_code, generic_message
from appliance.fetchstats import FetchCounter
from appliance.health import Readiness
from appliance.library import Library
from appliance.ratelimit import FailureLimiter
from appliance.store import ImageRecord, KeyStore

log = logging.getLogger("pictor.http")

# On every response of the appliance.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


def error_payload(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Services:
    """Everything a handler may use, handed to it through `initialize`."""

    settings: Settings
    library: Library
    keys: KeyStore
    fetch_stats: FetchCounter
    readiness: Readiness
    auth_failures: FailureLimiter = field(default_factory=FailureLimiter)


def allowed_methods(handler: type[tornado.web.RequestHandler]) -> list[str]:
    """The methods a handler class implements (RFC 9110 10.2.1 `Allow`), HEAD with GET."""
    base = tornado.web.RequestHandler
    methods = [
        m
        for m in handler.SUPPORTED_METHODS
        if getattr(handler, m.lower()) is not getattr(base, m.lower())
    ]
    if "GET" in methods and "HEAD" not in methods:
        methods.insert(methods.index("GET") + 1, "HEAD")
    return methods


def set_allow(handler: tornado.web.RequestHandler, status_code: int) -> None:
    """Every 405 names the methods the route does accept (RFC 9110 15.5.6); called from
    `write_error`, after `send_error` has cleared the headers."""
    if status_code == 405:
        handler.set_header("Allow", ", ".join(allowed_methods(type(handler))))


class BaseHandler(tornado.web.RequestHandler):
    services: Services
    error_code: str | None = None  # the code of the error answered, for the metrics

    def initialize(self, services: Services) -> None:
        self.services = services

    def head(self, *args: str) -> Awaitable[None] | None:
        """HEAD wherever GET is (RFC 9110 9.3.2): the same handler, its body dropped by
        Tornado, so the headers are exactly GET's (Content-Length included)."""
        return self.get(*args)

    def set_default_headers(self) -> None:
        self.clear_header("Server")  # no response names our software or its version
        for name, value in SECURITY_HEADERS:
            self.set_header(name, value)

    def compute_etag(self) -> None:
        return None  # no automatic body-hash ETags: /v3 is no-store, /i/ sets its own

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The one place that renders an error body: the contract's JSON shape."""
        set_allow(self, status_code)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")  # unless the error says otherwise
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            body = exc.body()
            for name, value in exc.headers.items():
                self.set_header(name, value)
        else:
            reason = self._reason
            if isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code < 500:
                message = exc.log_message % exc.args if exc.args else exc.log_message
            else:
                message = generic_message(status_code, reason)
            body = error_body(status_code, generic_code(status_code), message)
        self.error_code = body["error"]["code"]
        payload = error_payload(body)
        if self.request.method == "HEAD":  # the headers GET would send, and no body
            self.set_header("Content-Length", str(len(payload)))
            self.finish()
            return
        self.finish(payload)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Once per failed request: an ApiError under 500 is an answer, not a failure; 503 and
        507 are the storage's state, one line; anything else is a bug, with its traceback
        (and the one it was raised from). The request line never includes a header."""
        if isinstance(value, ApiError):
            if value.status < 500:
                return
            if value.status in (503, 507):
                cause = value.__cause__ or value.__context__
                log.warning(
                    "%s answered %d: %s%s",
                    self._request_summary(),
                    value.status,
                    value.message,
                    f" ({type(cause).__name__}: {cause})" if cause is not None else "",
                    extra={"request": self._request_summary(), "status": value.status},
                )
                return
            log.error(
                "%s failed: %s",
                self._request_summary(),
                value,
                exc_info=(typ, value, tb),
                extra={"request": self._request_summary(), "status": value.status},
            )
            return
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)  # Tornado's own 4xx (bad arguments...)
            return
        log.error(
            "%s failed: uncaught %s",
            self._request_summary(),
            typ.__name__,
            exc_info=(typ, value, tb),
            extra={"request": self._request_summary(), "status": 500},
        )

    def send_api_error(self, error: ApiError) -> None:
        """Answer with an error from outside the handler method (e.g. while streaming)."""
        if not self._finished:
            self.send_error(error.status, exc_info=(type(error), error, error.__traceback__))

    def base_url(self) -> str:
        public = self.services.settings.public_url
        if public:
            return public
        return f"{self.request.protocol}://{self.request.host}"

    def image_json(self, record: ImageRecord) -> dict[str, Any]:
        url = f"{self.base_url()}/i/{record.id}"
        return {
            "id": record.id,
            "filename": record.filename,
            "alt_text": record.alt_text,
            "folder": record.folder,
            "mime_type": record.mime_type,
            "size_bytes": record.size_bytes,
            "width": record.width,
            "height": record.height,
            "sha256": record.sha256,
            "url": url,
            "thumbnail_url": url + "?variant=thumbnail",
            "created_at": record.created_at,
            "updated_at": record.updated_at,
        }


class NotFoundHandler(BaseHandler):
    """Any path no route claims: a JSON 404, whatever the method."""

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)
