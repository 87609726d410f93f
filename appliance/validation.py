"""The limits of the contract on user-supplied labels, shared by upload and PATCH."""

from __future__ import annotations

import unicodedata

from appliance.errors import BadRequest
from appliance.store.interface import SORTS

MAX_ALT_TEXT = 1_000
MAX_FOLDER = 100
MAX_FILENAME = 255
MAX_SEARCH = 200
MAX_PAGE = 1_000_000_000  # keeps (page - 1) * page_size inside SQLite's 64-bit integers
MAX_PAGE_SIZE = 100

_LINE_BREAKS_AND_TABS = "\t\n\r"


def _text(
    name: str, value: str, maximum: int, *, allowed_controls: str = "", code: str = "invalid_field"
) -> str:
    """Valid Unicode, at most `maximum` characters, no control characters but those allowed."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{name} is not valid Unicode text.", code=code) from None
    if len(value) > maximum:
        raise BadRequest(
            f"{name} is {len(value)} characters long; at most {maximum} are allowed.", code=code
        )
    if any(unicodedata.category(c) == "Cc" and c not in allowed_controls for c in value):
        raise BadRequest(f"{name} must not contain control characters.", code=code)
    return value


def alt_text(value: str) -> str:
    return _text("alt_text", value, MAX_ALT_TEXT, allowed_controls=_LINE_BREAKS_AND_TABS)


def folder(value: str | None) -> str | None:
    """A folder is a label of 1 to 100 characters; None or "" means no folder."""
    if value is None or value == "":
        return None
    return _text("folder", value, MAX_FOLDER)


def filename(raw: str | None, extension: str) -> str:
    """The part's filename reduced to its last path component: only ever a label."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) != "Cc").strip()
    if name in ("", ".", ".."):
        name = "image." + extension
    return _text("The file name", name, MAX_FILENAME)


def search(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    # No stored label holds a control character, and a NUL breaks SQLite's FTS5 query
    # parser (it was a 500).
    return _text(
        "search",
        value,
        MAX_SEARCH,
        allowed_controls=_LINE_BREAKS_AND_TABS,
        code="invalid_parameter",
    )


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


def sha256(value: str | None) -> str | None:
    """A `sha256=` filter: 64 hex digits (either case; compared in lower case)."""
    if value is None:
        return None
    lowered = value.lower()
    if len(lowered) != 64 or any(c not in "0123456789abcdef" for c in lowered):
        raise BadRequest(
            "sha256 must be the 64 hexadecimal digits of a SHA-256 digest.",
            code="invalid_parameter",
        )
    return lowered



def sort(value: str | None) -> str:
    """The list's order; newest (upload order) when not given."""
    if value is None or value == "":
        return "newest"
    if value not in SORTS:
        raise BadRequest(
            f"sort must be one of {', '.join(SORTS)}, not {value[:40]!r}.",
            code="invalid_parameter",
        )
    return value


def flag(name: str, value: str | None) -> bool:
    """A boolean query parameter: `true` or `false` (absent is false)."""
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise BadRequest(f"{name} must be true or false, not {value[:40]!r}.", code="invalid_parameter")


def folder_name(value: object) -> str:
    """A folder's name where one is required (creating and renaming folders)."""
    if not isinstance(value, str) or value == "":
        raise BadRequest("name must be a folder name of 1 to 100 characters.", code="invalid_field")
    name = folder(value)
    assert name is not None
    return name
