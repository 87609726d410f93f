"""RFC 9110 request preconditions (section 13) and byte ranges (section 14), as pure functions.

Kept apart from the handler so that they can be tested exhaustively without a server.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from datetime import UTC, datetime

# entity-tag = [ W/ ] DQUOTE *etagc DQUOTE ; etagc = %x21 / %x23-7E / obs-text
_ETAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


def parse_etag_list(header: str) -> list[tuple[bool, str]] | None:
    """`If-None-Match` / `If-Match` values: [(weak, '"tag"')], or None for `*`.

    Malformed members are skipped (a lenient reading that never matches by accident)."""
    if header.strip() == "*":
        return None
    tags: list[tuple[bool, str]] = []
    pos = 0
    while pos < len(header):
        m = _ETAG.match(header, pos)
        if m is None:
            nxt = header.find(",", pos)
            if nxt < 0:
                break
            pos = nxt + 1
            continue
        tags.append((m.group(1) is not None, m.group(2)))
        pos = m.end()
    return tags


def none_match(header: str, etag: str) -> bool:
    """True when `If-None-Match` matches our (strong) tag by weak comparison: answer 304."""
    tags = parse_etag_list(header)
    return tags is None or any(tag == etag for _weak, tag in tags)


def match(header: str, etag: str) -> bool:
    """True when `If-Match` matches by strong comparison (weak tags never do)."""
    tags = parse_etag_list(header)
    return tags is None or any(not weak and tag == etag for weak, tag in tags)


def parse_http_date(value: str) -> datetime | None:
    """An HTTP-date in any of the three formats RFC 9110 accepts, or None."""
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def http_date(moment: datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(UTC), usegmt=True)


def modified_since(header: str, last_modified: datetime) -> bool:
    """False when `If-Modified-Since` says the client's copy is current (answer 304).
    An invalid date is ignored, as RFC 9110 requires."""
    since = parse_http_date(header)
    return since is None or last_modified > since


def unmodified_since(header: str, last_modified: datetime) -> bool:
    since = parse_http_date(header)
    return since is None or last_modified <= since


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


class Unsatisfiable(Exception):
    """The Range is valid but no range of it overlaps the representation: answer 416."""


_SPEC = re.compile(r"^(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> ByteRange | None:
    """The one range to serve for a `Range` header, or None to serve the whole body.

    None for: a malformed header or an unknown unit (ignored, RFC 9110 14.2), and for
    several ranges (we answer those with the whole body, which RFC 9110 allows).
    Raises Unsatisfiable when the header is valid but no range can be satisfied.
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    satisfiable: list[ByteRange] = []
    specs = [s.strip() for s in spec.split(",")]
    if not specs or len(specs) > 100:
        return None
    for item in specs:
        if item == "":
            continue  # RFC 9110's #rule allows empty list elements
        m = _SPEC.match(item)
        if m is None or len(item) > 40:
            return None
        first, last = m.group(1), m.group(2)
        if first == "" and last == "":
            return None
        if first == "":  # suffix: the last N bytes
            suffix = int(last)
            if suffix > 0:
                satisfiable.append(ByteRange(max(0, size - suffix), size - 1))
            continue
        start = int(first)
        end = size - 1 if last == "" else int(last)
        if last != "" and end < start:
            return None  # invalid range-spec: the whole header is ignored
        if start < size:
            satisfiable.append(ByteRange(start, min(end, size - 1)))
    if not any(s for s in specs):
        return None
    if not satisfiable:
        raise Unsatisfiable
    if len(satisfiable) > 1:
        return None
    return satisfiable[0]


def if_range_holds(header: str, etag: str, last_modified: datetime) -> bool:
    """`If-Range`: the range applies only if the validator is current; an entity tag must
    match strongly, a date must equal Last-Modified exactly."""
    value = header.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == etag  # a weak tag never matches
    date = parse_http_date(value)
    return date is not None and date == last_modified.replace(microsecond=0)
