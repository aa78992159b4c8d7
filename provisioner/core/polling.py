"""Asking a condition again until it holds or time runs out: the one polling loop (the demo, the tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(check: Callable[[], T], timeout: float, interval: float) -> T | None:
    """check()'s first truthy value, asked every `interval` seconds; None once `timeout` has passed without one."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)
