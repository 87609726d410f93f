"""A streaming multipart/form-data reader for uploads (python-multipart underneath).

File bytes are handed out as they arrive, to be written to a temp blob; text fields are
kept in memory under a small cap. Nothing here holds the file in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from appliance.errors import BadRequest, PayloadTooLarge

MAX_FILE_BYTES = 10 * 1024 * 1024  # the reference's 10 MB: 10,485,760 bytes is accepted
# What a well-formed upload may add around the file: boundaries, part headers, alt_text and
# folder. A declared Content-Length beyond file + overhead is refused before it is read.
MAX_OVERHEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = MAX_FILE_BYTES + MAX_OVERHEAD_BYTES
MAX_FIELD_BYTES = 8 * 1024
MAX_PART_HEADER_BYTES = 8 * 1024
MAX_PARTS = 16
TEXT_FIELDS = ("alt_text", "folder")


def too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The file is larger than the limit of {MAX_FILE_BYTES:,} bytes (10 MB). "
        "Reduce it and upload it again."
    )


def boundary_of(content_type: str | None) -> bytes:
    ctype, options = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data":
        raise BadRequest(
            "Send the image as multipart/form-data with a 'file' field.",
            code="invalid_content_type",
        )
    boundary = options.get(b"boundary", b"")
    if not boundary or len(boundary) > 200:
        raise BadRequest(
            "The multipart Content-Type has no usable boundary.", code="invalid_content_type"
        )
    return boundary


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    is_file: bool = False
    value: bytearray = field(default_factory=bytearray)


class MultipartReader:
    """Feed it the body chunk by chunk; after each `feed`, `take_file_bytes()` returns what
    belongs to the `file` part so far."""

    def __init__(self, boundary: bytes) -> None:
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.file_parts = 0
        self.file_size = 0
        self.complete = False
        self._pending: list[bytes] = []
        self._parts = 0
        self._part = _Part()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._header_bytes = 0
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        if self.complete:
            return  # the epilogue after the closing boundary is ignored, as RFC 2046 says
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise BadRequest(
                f"The multipart body is malformed ({exc}).", code="malformed_multipart"
            ) from None

    def take_file_bytes(self) -> bytes:
        data = b"".join(self._pending)
        self._pending.clear()
        return data

    def finish(self) -> None:
        """Called at the end of the body: checks the form as a whole."""
        if not self.complete:
            raise BadRequest(
                "The multipart body ended before its closing boundary.",
                code="malformed_multipart",
            )
        if self.file_parts != 1:
            raise BadRequest(
                "Send exactly one 'file' field with the image"
                + (f"; this request has {self.file_parts}." if self.file_parts else "."),
                code="invalid_form",
            )

    # python-multipart callbacks -------------------------------------------------------

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise BadRequest(f"The form has more than {MAX_PARTS} parts.", code="invalid_form")
        self._part = _Part()
        self._header_bytes = 0

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise BadRequest("A form part's headers are too large.", code="malformed_multipart")

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        self._part.headers[name] = self._header_value.decode("latin-1").strip()
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition, options = parse_options_header(
            self._part.headers.get("content-disposition", "")
        )
        if disposition != b"form-data" or b"name" not in options:
            raise BadRequest(
                "Every form part needs 'Content-Disposition: form-data; name=...'.",
                code="malformed_multipart",
            )
        part = self._part
        part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            part.filename = options[b"filename"].decode("utf-8", "replace")
        part.is_file = part.name == "file"
        if part.is_file:
            self.file_parts += 1
            self.filename = part.filename

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.is_file:
            if self.file_parts > 1:
                return  # a second file part is refused in finish(); do not store it
            self.file_size += end - start
            if self.file_size > MAX_FILE_BYTES:
                raise too_large()
            self._pending.append(data[start:end])
        elif part.name in TEXT_FIELDS:
            part.value += data[start:end]
            if len(part.value) > MAX_FIELD_BYTES:
                raise BadRequest(f"The field '{part.name}' is too long.", code="invalid_field")
        # Unknown fields are read past and ignored, like any HTML form's extra inputs.

    def _on_part_end(self) -> None:
        part = self._part
        if part.is_file or part.name not in TEXT_FIELDS:
            return
        if part.name in self.fields:
            raise BadRequest(f"The field '{part.name}' is given twice.", code="invalid_form")
        try:
            self.fields[part.name] = part.value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(
                f"The field '{part.name}' is not UTF-8 text.", code="invalid_field"
            ) from None

    def _on_end(self) -> None:
        self.complete = True
