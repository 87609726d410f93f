"""Slows down repeated failed authentication from one address, without hurting good keys.

A token bucket per client address: each failed attempt takes a token; when none is left,
further failures are answered 429 with Retry-After instead of 401. A valid key is always
accepted. Memory is bounded: the least recently seen addresses are forgotten first.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class FailureLimiter:
    def __init__(
        self,
        burst: int = 10,
        per_second: float = 1 / 6,  # one more attempt every 6 s: 10 a minute in the long run
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.rate = per_second
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def _tokens(self, client: str) -> float:
        tokens, when = self._buckets.get(client, (float(self.burst), self._clock()))
        return min(float(self.burst), tokens + (self._clock() - when) * self.rate)

    def retry_after(self, client: str) -> int:
        """Seconds until this client may fail again; 0 when it may fail now."""
        tokens = self._tokens(client)
        return 0 if tokens >= 1 else max(1, math.ceil((1 - tokens) / self.rate))

    def record_failure(self, client: str) -> None:
        tokens = max(0.0, self._tokens(client) - 1)
        self._buckets[client] = (tokens, self._clock())
        self._buckets.move_to_end(client)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
