"""The settings table: declared once, read from flags and the environment, validated, frozen."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ENV_PREFIX = "PICTOR_"
# Renderings of variants on demand: a load limit (README, "Variants").
RENDER_CONCURRENCY = 2
RENDER_QUEUE = 32


@dataclass(frozen=True)
class Setting:
    """One row of the settings table: a `serve` flag and its environment variable."""

    name: str
    default: str | None
    help: str
    parse: Callable[[str], object] = str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, not {port}")
    return port


def _count(value: str) -> int:
    count = int(value)
    if not 0 <= count <= 100_000:
        raise ValueError(f"must be 0..100000, not {count}")
    return count


def _positive(value: str) -> int:
    count = _count(value)
    if count < 1:
        raise ValueError("must be at least 1")
    return count


def _public_url(value: str) -> str:
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"public URL must look like https://img.example.com, not {value!r}")
    return value


def _optional_port(value: str) -> int | None:
    return None if value.strip().lower() in ("", "off", "none") else _port(value)


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def _size(value: str) -> int:
    """Bytes, with an optional binary unit: 104857600, 100M, 1G (K, M, G, T are powers of 1024)."""
    text = value.strip().lower().removesuffix("ib").removesuffix("b")
    number, unit = (text[:-1], text[-1]) if text[-1:] in _SIZE_UNITS else (text, "")
    try:
        size = float(number) * _SIZE_UNITS[unit]
    except ValueError:
        raise ValueError(f"a size looks like 100M or 1G, not {value!r}") from None
    if size < 0:
        raise ValueError(f"a size cannot be negative: {value!r}")
    return int(size)


def _log_format(value: str) -> str:
    value = value.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"choose one of {', '.join(LOG_FORMATS)}, not {value!r}")
    return value


LOG_FORMATS = ("text", "json")
# /readyz fails below this much free space in the data directory: room for ten uploads of the
# largest size with their thumbnails, and for SQLite's journal to grow.
DEFAULT_MIN_FREE_SPACE = "100M"


def _database(value: str) -> str:
    value = value.strip()
    if value == "sqlite" or urlsplit(value).scheme in ("postgresql", "postgres"):
        return value
    raise ValueError(f"must be sqlite or a postgresql:// URL, not {_redact(value)!r}")


def _blob_store(value: str) -> str:
    value = value.strip()
    if value == "file":
        return value
    parts = urlsplit(value)
    if parts.scheme == "s3" and parts.netloc and not parts.query and not parts.fragment:
        return value.rstrip("/")
    raise ValueError(f"must be file or s3://BUCKET[/PREFIX], not {value!r}")


def _redact(url: str) -> str:
    """A URL fit for messages and logs: any password replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
    return parts._replace(netloc=netloc).geturl()


redact = _redact


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "address to listen on"),
    Setting("port", "8080", "TCP port to listen on (0 picks a free one)", _port),
    Setting("data_dir", "./data", "directory holding the database and the image files", Path),
    Setting(
        "public_url",
        None,
        "absolute base of the public URLs (e.g. https://img.example.com); "
        "default: taken from each request's scheme and Host",
        _public_url,
    ),
    Setting(
        "database",
        "sqlite",
        "metadata backend: sqlite (DATA_DIR/pictor.db) or postgresql://USER:PASS@HOST:PORT/DB",
        _database,
    ),
    Setting(
        "blob_store",
        "file",
        "image bytes: file (DATA_DIR/blobs) or s3://BUCKET[/PREFIX] (credentials from "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; AWS_REGION, default us-east-1)",
        _blob_store,
    ),
    Setting(
        "s3_endpoint",
        None,
        "S3-compatible endpoint URL, e.g. http://127.0.0.1:8333 (path-style addressing); "
        "default: AWS",
    ),
    Setting(
        "metrics_port",
        None,
        "serve Prometheus metrics at /metrics on this port, on --host (default: off)",
        _optional_port,
    ),
    Setting(
        "min_free_space",
        DEFAULT_MIN_FREE_SPACE,
        "/readyz answers 503 when the data directory has less free space than this "
        "(bytes, or with K, M, G)",
        _size,
    ),
    Setting("log_format", "text", "log lines as text, or one JSON object per line", _log_format),
    Setting(
        "render_concurrency",
        str(RENDER_CONCURRENCY),
        "variants (widths, formats) rendered at once; more wait in the render queue",
        _positive,
    ),
    Setting(
        "render_queue",
        str(RENDER_QUEUE),
        "variants that may wait for a rendering slot; past that the answer is 503",
        _count,
    ),
)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./data")
    public_url: str | None = None
    metrics_port: int | None = None
    min_free_space: int = 100 * 1024 * 1024
    log_format: str = "text"
    database: str = "sqlite"
    blob_store: str = "file"
    s3_endpoint: str | None = None
    render_concurrency: int = RENDER_CONCURRENCY
    render_queue: int = RENDER_QUEUE


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the setting."""


def env_defaults(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The raw default of each setting: its environment variable, else the table's default."""
    environ = os.environ if environ is None else environ
    # An empty variable counts as unset (a common way to "unset" one in unit files).
    return {s.name: environ.get(s.env) or s.default for s in SETTINGS}


def load_settings(raw: Mapping[str, object]) -> Settings:
    """Parse and validate raw values (strings from flags or the environment)."""
    values: dict[str, object] = {}
    for setting in SETTINGS:
        value = raw.get(setting.name)
        if value is None:
            continue
        try:
            values[setting.name] = setting.parse(value) if isinstance(value, str) else value
        except ValueError as exc:
            raise ConfigError(f"{setting.flag} / {setting.env}: {exc}") from exc
    return Settings(**values)  # type: ignore[arg-type]


def bundle_dir() -> Path:
    """Where read-only files (the gallery) live: inside the PyInstaller bundle, or the repo."""
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen)
    return Path(__file__).resolve().parent.parent


def cli_command() -> str:
    """How this user runs Pictor: the packaged executable, or main.py from a checkout."""
    return "pictor" if getattr(sys, "frozen", False) else "python main.py"


def static_dir() -> Path:
    return bundle_dir() / "static"
