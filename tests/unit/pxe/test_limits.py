"""Bounds on what clients can make the server keep (provisioner/pxe/limits.py)."""

from __future__ import annotations

import pytest

from provisioner.pxe.limits import RecentMap, SourceRateLimiter


def test_recent_map_drops_the_least_recently_set_key():
    recent: RecentMap[str, int] = RecentMap(2)
    recent["a"], recent["b"] = 1, 2
    recent["a"] = 3                      # a is now the most recent
    recent["c"] = 4
    assert list(recent.items()) == [("a", 3), ("c", 4)] and recent.dropped == 1
    assert recent.pop_oldest() == ("a", 3) and recent.dropped == 2
    with pytest.raises(ValueError):
        RecentMap(0)


def test_rate_limiter_allows_a_burst_then_the_rate_per_source():
    limiter = SourceRateLimiter(rate=2.0, burst=3, sources=2)
    assert [limiter.allow("10.0.0.9", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("10.0.0.5", 0.0)                       # another address has its own bucket
    assert limiter.allow("10.0.0.9", 0.5) and not limiter.allow("10.0.0.9", 0.5)   # one token per 0.5 s
    assert limiter.allow("10.0.0.9", 10.0) and limiter.refused == 2
    limiter.allow("10.0.0.7", 10.0)
    assert len(limiter.buckets) == 2                            # bounded: the oldest address went
