"""The limits of the contract on user-supplied labels, shared by upload and PATCH."""

from __future__ import annotations

import unicodedata

from appliance.errors import BadRequest

MAX_ALT_TEXT = 1_000
MAX_FOLDER = 100
MAX_FILENAME = 255
MAX_SEARCH = 200
MAX_PAGE = 1_000_000_000  # keeps (page - 1) * page_size inside SQLite's 64-bit integers
MAX_PAGE_SIZE = 100


def _check_text(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{name} is not valid Unicode text.", code="invalid_field") from None


def alt_text(value: str) -> str:
    _check_text("alt_text", value)
    if len(value) > MAX_ALT_TEXT:
        raise BadRequest(
            f"alt_text is {len(value)} characters long; at most {MAX_ALT_TEXT} are allowed.",
            code="invalid_field",
        )
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in value):
        raise BadRequest("alt_text must not contain control characters.", code="invalid_field")
    return value


def folder(value: str | None) -> str | None:
    """A folder is a label of 1 to 100 characters; None or "" means no folder."""
    if value is None or value == "":
        return None
    _check_text("folder", value)
    if len(value) > MAX_FOLDER:
        raise BadRequest(
            f"folder is {len(value)} characters long; at most {MAX_FOLDER} are allowed.",
            code="invalid_field",
        )
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise BadRequest("folder must not contain control characters.", code="invalid_field")
    return value


def filename(raw: str | None, extension: str) -> str:
    """The part's filename reduced to its last path component: only ever a label."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) != "Cc").strip()
    if name in ("", ".", ".."):
        name = "image." + extension
    if len(name) > MAX_FILENAME:
        raise BadRequest(
            f"The file name is {len(name)} characters long; at most {MAX_FILENAME} are allowed.",
            code="invalid_field",
        )
    return name


def search(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    _check_text("search", value)
    if len(value) > MAX_SEARCH:
        raise BadRequest(
            f"search is {len(value)} characters long; at most {MAX_SEARCH} are allowed.",
            code="invalid_parameter",
        )
    # No stored label holds one, and a NUL breaks SQLite's FTS5 query parser (a 500).
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in value):
        raise BadRequest("search must not contain control characters.", code="invalid_parameter")
    return value


def positive_int(name: str, raw: str | None, default: int, maximum: int) -> int:
    """Strict: digits only, 1..maximum. Never a silent clamp."""
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or not 1 <= int(raw) <= maximum:
        raise BadRequest(
            f"{name} must be a whole number from 1 to {maximum}, not {raw[:40]!r}.",
            code="invalid_parameter",
        )
    return int(raw)
