"""Bounds that keep the machine-facing endpoints from filling the server's memory or disk.

Anyone on the boot network can send DHCP, TFTP and HTTP requests under any MAC and from many
addresses, so every table keyed by what a client sends has a bound, and every bound counts what it
drops (/metrics):

- `RecentMap`: a table that keeps the `limit` most recently used keys and drops the least recently
  used one beyond that (machine records, per-address asset expectations, rate-limit buckets);
- `SourceRateLimiter`: a token bucket per client address for the write endpoints (`/report`,
  `/installed`): WRITE_RATE requests a second, bursts of WRITE_BURST. The live image's hook sends
  one report every couple of seconds at most, so only a flood is refused (HTTP 429).

The body size of a write (reports.MAX_BODY) and the history kept per machine (machines.HISTORY) are
bounded where they are used.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

MAX_MACHINES = 10000      # distinct MACs (and "ip:<address>" records) the machine state keeps
MAX_SOURCES = 4096        # client addresses with a rate-limit bucket or expected assets
WRITE_RATE = 5.0          # write requests per second and client address ...
WRITE_BURST = 30          # ... with bursts of this many


class RecentMap(OrderedDict[K, V]):
    """An ordered mapping that keeps at most `limit` keys: setting a key makes it the most recent, and a
    new key beyond the limit drops the least recently set one (counted in `dropped`)."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        super().__init__()
        self.limit = limit
        self.dropped = 0

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.pop_oldest()

    def pop_oldest(self) -> tuple[K, V]:
        """Drop the least recently set key (counted in `dropped`); KeyError when empty."""
        self.dropped += 1
        return self.popitem(last=False)


class SourceRateLimiter:
    """A token bucket per client address (pure: the caller passes the time)."""

    def __init__(self, rate: float = WRITE_RATE, burst: int = WRITE_BURST, sources: int = MAX_SOURCES):
        self.rate = rate
        self.burst = burst
        self.buckets: RecentMap[str, tuple[float, float]] = RecentMap(sources)   # address -> (tokens, at)
        self.refused = 0

    def allow(self, source: str, now: float) -> bool:
        """Take one token from `source`'s bucket; False (and counted) when it is empty."""
        tokens, at = self.buckets.get(source) or (float(self.burst), now)
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self.buckets[source] = (tokens, now)
            self.refused += 1
            return False
        self.buckets[source] = (tokens - 1.0, now)
        return True
