"""Property tests of the Range and precondition parsing (appliance/conditional.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from appliance import conditional
from appliance.conditional import ByteRange, Unsatisfiable

ETAG = '"' + "ab" * 32 + '"'
sizes = st.integers(min_value=1, max_value=10_000_000)
positions = st.integers(min_value=0, max_value=20_000_000)


def expected(first: int | None, last: int | None, size: int) -> ByteRange | str | None:
    """RFC 9110 14.1.2 for one range-spec, written independently of the code under test."""
    if first is None:
        assert last is not None
        return "unsatisfiable" if last == 0 else ByteRange(max(0, size - last), size - 1)
    if last is not None and last < first:
        return None  # invalid: the header is ignored
    if first >= size:
        return "unsatisfiable"
    return ByteRange(first, size - 1 if last is None else min(last, size - 1))


@given(size=sizes, first=st.none() | positions, last=st.none() | positions)
def test_one_range_spec_follows_rfc_9110(size: int, first: int | None, last: int | None) -> None:
    if first is None and last is None:
        return
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    want = expected(first, last, size)
    try:
        got: ByteRange | str | None = conditional.parse_range(header, size)
    except Unsatisfiable:
        got = "unsatisfiable"
    assert got == want
    if isinstance(got, ByteRange):
        assert 0 <= got.start <= got.end < size
        assert got.content_range(size) == f"bytes {got.start}-{got.end}/{size}"


@given(header=st.text(max_size=200), size=sizes)
def test_any_range_header_is_parsed_or_ignored_never_crashes(header: str, size: int) -> None:
    try:
        result = conditional.parse_range(header, size)
    except Unsatisfiable:
        return
    assert result is None or 0 <= result.start <= result.end < size


@given(
    others=st.lists(st.from_regex(r'(W/)?"[a-z0-9]{0,10}"', fullmatch=True), max_size=5),
    weak=st.booleans(),
    position=st.integers(min_value=0, max_value=5),
)
def test_if_none_match_finds_our_tag_anywhere_in_a_list(
    others: list[str], weak: bool, position: int
) -> None:
    tags = list(others)
    tags.insert(min(position, len(tags)), ("W/" if weak else "") + ETAG)
    header = ", ".join(tags)
    assert conditional.none_match(header, ETAG)  # weak comparison
    assert conditional.match(header, ETAG) is (not weak or any(t == ETAG for t in others))


@given(header=st.text(max_size=200))
def test_any_if_none_match_header_is_safe(header: str) -> None:
    result = conditional.none_match(header, ETAG)
    if ETAG not in header and header.strip() != "*":
        assert result is False


@given(header=st.text(max_size=100))
def test_any_date_header_is_safe(header: str) -> None:
    moment = datetime(2026, 11, 26, 10, 15, 2, tzinfo=UTC)
    conditional.modified_since(header, moment)
    conditional.unmodified_since(header, moment)
    conditional.if_range_holds(header, ETAG, moment)


def test_http_dates_in_all_three_formats() -> None:
    moment = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)
    for text in (
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ):
        assert conditional.parse_http_date(text) == moment, text
