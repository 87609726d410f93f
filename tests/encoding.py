"""Bytes built by hand for tests: multipart bodies and PNG chunks (no Pillow, no server)."""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Sequence

Part = tuple[str, str | bytes, str | None] | tuple[str, str | bytes, str | None, str | None]


def multipart(fields: Sequence[Part], boundary: str | None = None) -> tuple[bytes, str]:
    """Encode (name, value, filename[, content_type]) parts; returns (body, content type)."""
    boundary = boundary or "pictorboundary" + uuid.uuid4().hex
    out = bytearray()
    for name, value, filename, *rest in fields:
        ctype = rest[0] if rest else None
        out += f"--{boundary}\r\n".encode()
        disp = f'form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        out += f"Content-Disposition: {disp}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n"
        out += value.encode() if isinstance(value, str) else value
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
