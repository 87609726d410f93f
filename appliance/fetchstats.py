"""Fetch statistics: how often each image was fetched through /i/, by day and mail client.

Counting costs no write per fetch. Counts are added up in memory, keyed by (image, UTC day,
client family), and written in one batch every few seconds as *additive* upserts
(`fetches = fetches + batch`), never as a read-modify-write of a total: any number of nodes
can flush into the same rows and the counts add up; a restart loses nothing that was flushed;
a crash loses at most one interval. A batch that cannot be written is kept and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.store.interface import ClientTotals, FetchCount

log = logging.getLogger("pictor.stats")

FLUSH_INTERVAL = 5.0  # seconds; the contract allows at most 10
RECENT_DAYS = 30
CLIENTS = ("gmail", "yahoo", "outlook", "apple", "other")

# Client families from the User-Agent, first match wins. The strings are what these clients
# really send when they fetch an image of a mail:
# - Gmail fetches every image through its proxy: "Mozilla/5.0 (Windows NT 5.1; rv:11.0)
#   Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)".
# - Yahoo Mail likewise: "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
#   (sometimes inside "Mozilla/5.0 (compatible; ...)").
# - Outlook for Windows sends "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook
#   16.0.xxxxx; Pro)", older ones "MSOffice 12"/"ms-office"; the apps "Outlook-iOS/..." and
#   "Outlook-Android/..."; Outlook for Mac "MacOutlook/..." or "Microsoft Outlook ...".
#   Microsoft's link scanners ("Microsoft Office Existence Discovery") count as Outlook too.
# - Apple Mail (macOS, iOS, iPadOS) sends WebKit's user agent with nothing after the engine:
#   "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like
#   Gecko)" or "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15
#   (KHTML, like Gecko) Mobile/15E148". Safari adds "Version/... Safari/...", other browsers
#   and in-app web views add their own tokens, so only that exact shape is Apple Mail. (Mail
#   Privacy Protection prefetches through Apple's relays with the same WebKit shape.)
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("gmail", re.compile(r"GoogleImageProxy|ggpht\.com", re.I)),
    ("yahoo", re.compile(r"YahooMailProxy", re.I)),
    ("outlook", re.compile(r"Outlook|ms-office|MSOffice|Microsoft Office", re.I)),
    (
        "apple",
        re.compile(
            r"Mozilla/5\.0 \((?:Macintosh|iPhone|iPad|iPod)[^)]*\) AppleWebKit/[\d.]+"
            r" \(KHTML, like Gecko\)(?: Mobile/\w+)?"
        ),
    ),
)
_CLASSIFIED_MAX = 4096  # distinct User-Agent strings remembered (a mail burst has few)


def client_family(user_agent: str | None) -> str:
    if user_agent:
        for family, pattern in _RULES[:3]:
            if pattern.search(user_agent):
                return family
        if _RULES[3][1].fullmatch(user_agent.strip()):
            return "apple"
    return "other"


def recent_since(now: datetime | None = None) -> str:
    """The first day of the last-30-days window: today and the 29 days before it (UTC)."""
    now = now or datetime.now(UTC)
    return (now - timedelta(days=RECENT_DAYS - 1)).strftime("%Y-%m-%d")


Writer = Callable[[list[FetchCount]], Awaitable[None]]


class FetchCounter:
    """In-memory counts, flushed by a background task (`start`) and at `stop`."""

    def __init__(
        self,
        write: Writer,
        *,
        interval: float = FLUSH_INTERVAL,
        on_flush: Callable[[bool], None] | None = None,
    ) -> None:
        self._write = write
        self.interval = interval
        self.on_flush = on_flush
        self._pending: dict[tuple[str, str, str], list[Any]] = {}
        self._families: dict[str | None, str] = {}
        self._day = ""
        self._stamp = ""
        self._tick()
        self._ticker: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    # -- the hot path: a dict update, no I/O ------------------------------------------

    def count(self, image_id: str, user_agent: str | None) -> None:
        family = self._families.get(user_agent)
        if family is None:
            family = self._classify(user_agent)
        key = (image_id, self._day, family)
        entry = self._pending.get(key)
        if entry is None:
            self._pending[key] = [1, self._stamp]
        else:
            entry[0] += 1
            entry[1] = self._stamp

    def _tick(self) -> None:
        """The day and the time stamped on fetches, set every second by a timer rather than
        read from the clock on every fetch."""
        moment = datetime.now(UTC)
        self._day = moment.strftime("%Y-%m-%d")
        self._stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _tick_every_second(self) -> None:
        self._tick()
        # Just after the next wall-clock second: a stamp is late by the timer's lag at most.
        delay = 1.001 - time.time() % 1.0
        self._ticker = asyncio.get_running_loop().call_later(delay, self._tick_every_second)

    def _classify(self, user_agent: str | None) -> str:
        if len(self._families) >= _CLASSIFIED_MAX:
            self._families.clear()
        family = self._families[user_agent] = client_family(user_agent)
        return family

    # -- reading ------------------------------------------------------------------------

    def pending(self, image_id: str | None = None) -> list[FetchCount]:
        """This node's counts not yet written (all, or one image's)."""
        return [
            FetchCount(key[0], key[1], key[2], entry[0], entry[1])
            for key, entry in self._pending.items()
            if image_id is None or key[0] == image_id
        ]

    def pending_fetches(self) -> int:
        return sum(entry[0] for entry in self._pending.values())

    # -- writing ------------------------------------------------------------------------

    async def flush(self) -> int:
        """Write what was counted so far in one batch; returns how many rows it touched."""
        if not self._pending:
            return 0
        taken, self._pending = self._pending, {}
        batch = [FetchCount(k[0], k[1], k[2], e[0], e[1]) for k, e in taken.items()]
        try:
            await self._write(batch)
        except Exception as exc:
            self._merge_back(taken)
            if not self._failing:  # once per outage, not once per interval
                log.warning("could not write fetch statistics (kept, will retry): %s", exc)
            self._failing = True
            self._report(ok=False)
            return 0
        if self._failing:
            log.info("fetch statistics are written again")
        self._failing = False
        self._report(ok=True)
        return len(batch)

    def _merge_back(self, taken: dict[tuple[str, str, str], list[Any]]) -> None:
        for key, (fetches, stamp) in taken.items():
            entry = self._pending.get(key)
            if entry is None:
                self._pending[key] = [fetches, stamp]
            else:
                entry[0] += fetches
                entry[1] = max(entry[1], stamp)

    def _report(self, ok: bool) -> None:
        if self.on_flush is not None:
            self.on_flush(ok)

    def start(self) -> None:
        self._tick_every_second()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fetch-stats")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # never let the loop die; flush itself keeps the counts
                log.exception("fetch statistics flush failed")

    async def stop(self) -> None:
        """Stop the background flushes and write what is left."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


class NoFetchCounter(FetchCounter):
    """Counts nothing: the benchmark's 'counting off' side, never the appliance's."""

    def count(self, image_id: str, user_agent: str | None) -> None:
        return None


def summary(
    image_id: str,
    stored: Iterable[ClientTotals],
    pending: Iterable[FetchCount],
    since: str,
) -> dict[str, Any]:
    """The contract's stats body from the store's totals plus this node's unwritten counts."""
    by_client = dict.fromkeys(CLIENTS, 0)
    total = recent = 0
    last: str | None = None
    for row in stored:
        by_client[row.client] = by_client.get(row.client, 0) + row.total
        total += row.total
        recent += row.recent
        if row.last_fetched_at is not None and (last is None or row.last_fetched_at > last):
            last = row.last_fetched_at
    for count in pending:
        by_client[count.client] = by_client.get(count.client, 0) + count.fetches
        total += count.fetches
        if count.day >= since:
            recent += count.fetches
        if last is None or count.last_fetched_at > last:
            last = count.last_fetched_at
    return {
        "id": image_id,
        "fetches": {
            "total": total,
            "last_30_days": recent,
            "last_fetched_at": last,
            "by_client": by_client,
        },
    }
