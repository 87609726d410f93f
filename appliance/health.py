"""Readiness: does this node's storage really answer, and is there room for uploads?

Each check runs with a short timeout, concurrently, on a small pool of its own, so that a hung
file system or database makes the node "not ready" quickly instead of piling up probes on the
pools that serve requests.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from appliance.errors import ApiError

CHECK_TIMEOUT = 2.0  # seconds, per check
T = TypeVar("T")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.name}: {'ok' if self.ok else 'FAILED'} ({self.detail})"


class Readiness:
    def __init__(
        self,
        *,
        database: Callable[[], Awaitable[None]],
        blobs: Callable[[], Awaitable[None]],
        data_dir: Path,
        min_free_bytes: int,
        timeout: float = CHECK_TIMEOUT,
    ) -> None:
        self._database = database
        self._blobs = blobs
        self.data_dir = data_dir
        self.min_free_bytes = min_free_bytes
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pictor-health")

    async def run_blocking(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    async def checks(self) -> list[Check]:
        return list(
            await asyncio.gather(
                self._timed("database", self._database),
                self._timed("blob store", self._blobs),
                self._timed("free space", self._free_space),
            )
        )

    async def _timed(self, name: str, probe: Callable[[], Awaitable[str | None]]) -> Check:
        try:
            detail = await asyncio.wait_for(probe(), self.timeout)
        except TimeoutError:
            return Check(name, False, f"no answer within {self.timeout:g} s")
        except _NotEnoughRoom as exc:
            return Check(name, False, str(exc))
        except ApiError as exc:  # StorageUnavailable: the backend's own sentence
            return Check(name, False, exc.message)
        except Exception as exc:  # the reason is the answer: readyz reports, never raises
            return Check(name, False, f"{type(exc).__name__}: {exc}")
        return Check(name, True, detail or "answers")

    async def _free_space(self) -> str:
        usage = await self.run_blocking(lambda: shutil.disk_usage(self.data_dir))
        text = f"{usage.free:,} bytes free, minimum {self.min_free_bytes:,}"
        if usage.free < self.min_free_bytes:
            raise _NotEnoughRoom(text)
        return text

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class _NotEnoughRoom(Exception):
    pass
