"""The one error path: exceptions that carry their HTTP status and a stable code.

Handlers raise; one `write_error` renders `{"error": {"status", "code", "message"}}`.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Any

from tornado.web import HTTPError


class ApiError(HTTPError):
    """Raised anywhere under a handler; Tornado answers with `status`, our `write_error`
    renders the body. (An HTTPError subclass, so Tornado takes the status from it.)"""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(self.status)
        self.message = message
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = headers or {}

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.code, self.message)


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class Gone(ApiError):
    status = 410
    code = "gone"


class PayloadTooLarge(ApiError):
    status = 413
    code = "file_too_large"


class UnsupportedMediaType(BadRequest):
    """The reference answers 400 (not 415) for anything that is not a supported image."""

    code = "unsupported_media_type"


class InsufficientStorage(ApiError):
    status = 507
    code = "insufficient_storage"


def storage_error(exc: Exception) -> ApiError:
    """What to answer when writing to the data directory failed: a full disk is the
    admin's to fix (507); anything else is ours (500, logged by Tornado)."""
    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)
    )
    if full:
        return InsufficientStorage(
            "The server's disk is full, so the upload was not stored. Try again later."
        )
    return ApiError("The upload could not be stored; the error was logged.")


class StorageUnavailable(ApiError):
    """The database or the blob store cannot be reached (or did not answer in time): the
    request may succeed later, on this node or another."""

    status = 503
    code = "storage_unavailable"
    RETRY_AFTER = 5

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(
            message or "The image storage is unreachable right now; try again shortly.",
            code=code,
            headers={"Retry-After": str(self.RETRY_AFTER)},
        )


class BusyRendering(ApiError):
    """Every rendering slot is taken and the queue for them is full: a load limit."""

    status = 503
    code = "busy_rendering"


class TooManyRequests(ApiError):
    status = 429
    code = "too_many_requests"


# Status codes Tornado may raise on its own (bad arguments, unknown methods, ...).
_GENERIC_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    410: "gone",
    411: "length_required",
    413: "file_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "too_many_requests",
    500: "internal_error",
    507: "insufficient_storage",
    503: "unavailable",
}

_GENERIC_MESSAGES = {
    400: "The request is malformed.",
    404: "There is nothing at this address.",
    405: "This method is not allowed here.",
    411: "Send a Content-Length header with the request body.",
    500: "Something went wrong on our side; the error was logged.",
}


def generic_code(status: int) -> str:
    return _GENERIC_CODES.get(status, "error")


def generic_message(status: int, reason: str) -> str:
    return _GENERIC_MESSAGES.get(status, reason + ".")


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": message}}


class ImagingUnavailable(RuntimeError):
    """pyvips is not usable as we require (API mode on its bundled libvips): refuse to start."""
