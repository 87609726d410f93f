"""What /i/ serves besides the original bytes: the thumbnail, a width of the ladder, another
format, or a width and a format, asked for in the query or in the path.

Three steps, kept apart so that each can be read (and tested) on its own:
- `from_query` / `split_path` read a request into an `Ask`: `400` for a bad query value, `404`
  for a path that names nothing. Both forms of one request give equal `Ask`s.
- `resolve` decides what the answer is: the original itself (the same format, and it already
  fits), or a `Rendering` with a stable name (the derived blob's name and part of its ETag);
  after rendering, `not_smaller` may still decide for the original.
- `render` makes a rendering's bytes. It blocks: the library runs it in the imaging executor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyvips

from appliance import imaging
from appliance.errors import BadRequest, NotFound

WIDTHS = (160, 320, 480, 600, 800, 1200, 1600, 2000)
FORMATS = ("jpeg", "png", "webp")  # the values of ?format=
EXTENSIONS = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp", "gif": "gif"}
MIME_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}
# Part of every rendering's ETag; bump it whenever `render` gives other bytes for the same
# request (a setting, a kernel, libvips' encoders), so that no cache keeps the old ones.
RENDER_VERSION = "1"

_WIDTH_TEXT = {str(w): w for w in WIDTHS}
_ALLOWED_WIDTHS = ", ".join(map(str, WIDTHS))


@dataclass(frozen=True)
class Ask:
    """What a request asked for. `family` None: the original's format."""

    thumbnail: bool = False
    width: int | None = None
    family: str | None = None

    @property
    def key(self) -> str:
        """Short and distinct per ask: the proxy's in-memory cache key beside the id."""
        if self.thumbnail:
            return "thumbnail" if self.family is None else "thumbnail." + self.family
        width = "" if self.width is None else f"w{self.width}"
        return width if self.family is None else f"{width}.{self.family}"


ORIGINAL = Ask()


@dataclass(frozen=True)
class Rendering:
    """A representation that is not the original's bytes: made once, then stored."""

    name: str  # "thumbnail", "w600-jpeg", "webp": the derived blob's variant name
    family: str
    width: int | None = None  # as shown; None: the original's own size
    thumbnail: bool = False

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.family]

    def etag(self, sha256: str) -> str:
        """Strong, and the same on every node and after a restart: the content, the
        rendering's parameters (its name) and the version of the code that renders it."""
        if self.thumbnail:
            return f'"{sha256[:32]}-t{imaging.THUMBNAIL_VERSION}"'
        return f'"{sha256[:32]}-{self.name}-r{RENDER_VERSION}"'


def _one(args: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = args.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"Give '{name}' once.", code="invalid_parameter")
    return values[0]


def from_query(args: Mapping[str, Sequence[str]]) -> Ask:
    """`variant`, `w` and `format` of a query string (other parameters, such as a
    newsletter's utm_*, are ignored)."""
    try:
        variant = _one(args, "variant")
    except BadRequest:
        raise BadRequest(
            "Give 'variant' once; the only variant is 'thumbnail'.", code="unknown_variant"
        ) from None
    width_text, family = _one(args, "w"), _one(args, "format")
    if variant is not None:
        if variant != "thumbnail":
            raise BadRequest(
                f"Unknown variant {variant[:40]!r}; the only variant is 'thumbnail'.",
                code="unknown_variant",
            )
        if width_text is not None or family is not None:
            raise BadRequest(
                "'variant=thumbnail' combines with neither 'w' nor 'format'.",
                code="invalid_parameter",
            )
        return Ask(thumbnail=True)
    width = None
    if width_text is not None:
        width = _WIDTH_TEXT.get(width_text)
        if width is None:
            raise BadRequest(
                f"Unknown width {width_text[:40]!r}; 'w' is one of {_ALLOWED_WIDTHS}.",
                code="invalid_width",
            )
    if family is not None and family not in FORMATS:
        raise BadRequest(
            f"Unknown format {family[:40]!r}; 'format' is one of {', '.join(FORMATS)}.",
            code="invalid_format",
        )
    return Ask(width=width, family=family)


def split_path(rest: str) -> tuple[str, Ask | None]:
    """The image id and, for a path form, what it asks for (None: read the query).

    `rest` is the path after `/i/`: `{id}`, `{id}.{ext}`, `{id}/w{N}.{ext}` or
    `{id}/thumbnail.{ext}`; anything else raises `NotFound`."""
    image_id, slash, leaf = rest.partition("/")
    if not slash:
        image_id, dot, ext = rest.partition(".")
        if not dot:
            return _checked_id(rest), None
        return _checked_id(image_id), Ask(family=_family(ext))
    name, dot, ext = leaf.partition(".")
    family = _family(ext) if dot else None
    if family is None or not image_id:
        raise _no_such_path()
    if name == "thumbnail":
        return _checked_id(image_id), Ask(thumbnail=True, family=family)
    width = _WIDTH_TEXT.get(name[1:]) if name.startswith("w") else None
    if width is None:
        raise _no_such_path()
    return _checked_id(image_id), Ask(width=width, family=family)


def _family(ext: str) -> str:
    family = EXTENSIONS.get(ext)
    if family is None:
        raise _no_such_path()
    return family


def _checked_id(image_id: str) -> str:
    if not image_id:
        raise _no_such_path()
    return image_id


def _no_such_path() -> NotFound:
    return NotFound("There is nothing at this address.", code="not_found")


def orientation_matters(ask: Ask, mime_type: str, width: int, height: int) -> bool:
    """Whether `resolve` needs the EXIF orientation: only for a width between the stored
    image's two sides (a rotated image shows its height as its width). GIF has none."""
    if ask.width is None or ask.thumbnail or mime_type == "image/gif":
        return False
    return min(width, height) <= ask.width < max(width, height)


def resolve(ask: Ask, mime_type: str, shown_width: int, shown_height: int) -> Rendering | None:
    """The rendering that answers `ask` for an image of this type and size (as shown), or
    None when the answer is the original itself: the same format, and it already fits."""
    original = imaging.FAMILIES[mime_type]
    if ask.family == "gif" and original != "gif":
        raise _no_such_path()  # GIF output is only ever a GIF's own
    if ask.thumbnail:
        if ask.family not in (None, original):
            raise _no_such_path()  # /i/{id}/thumbnail.{ext} names the thumbnail's format
        # Always made, even for an image that fits: the thumbnail also drops metadata and
        # frames past the cap. `not_smaller` then decides whether the original serves.
        return Rendering("thumbnail", original, thumbnail=True)
    family = ask.family or original
    width = ask.width if ask.width is not None and ask.width < shown_width else None
    if width is None:
        if family == original:
            return None
        return Rendering(family, family)
    return Rendering(f"w{width}-{family}", family, width)


def render(path: str, info: imaging.ImageInfo, rendering: Rendering) -> bytes:
    """The bytes of a rendering of the image at `path`: shrink-on-load and a Lanczos
    kernel, EXIF orientation applied, 8-bit sRGB, metadata stripped, transparency kept where
    the format has it (flattened onto white for JPEG), animations kept in GIF and WebP with
    the thumbnail's frame cap (first frame in JPEG and PNG). Deterministic: libvips runs one
    thread per image, so the same request gives the same bytes every time."""
    if rendering.thumbnail:
        return imaging.thumbnail(path, info)
    shown_w, shown_h = info.shown
    width = rendering.width or shown_w
    height = max(1, round(shown_h * width / shown_w))
    animated = info.pages > 1 and rendering.family in ("gif", "webp")
    try:
        if info.mime_type == "image/jpeg":
            image = imaging.jpeg_scaled(path, info, width, height)
        else:
            source = f"{path}[n={min(info.pages, imaging.THUMBNAIL_FRAMES)}]" if animated else path
            options: dict[str, Any] = {"height": height, "fail_on": "error"}
            options["size"] = "force" if width < shown_w else "down"
            image = pyvips.Image.thumbnail(source, width, **options)
        image = imaging.to_srgb8(image)
        return imaging.encode(image, rendering.family, palette=info.palette)
    except pyvips.Error as exc:
        raise imaging.ImageRejected(
            "malformed_image", f"The image could not be rendered: {exc}"
        ) from exc


def not_smaller(rendering: Rendering, data: bytes, mime_type: str, size: int) -> bool:
    """A rendering in the original's own format that saves no bytes is not worth serving:
    the original answers in its place (never more bytes than needed)."""
    return MIME_TYPES.get(rendering.family) == mime_type and len(data) >= size
