"""Asking a condition again until it holds or time runs out (the cluster demo's waits, the tests' wait_until).

The demo's waits on a console, a QEMU process or SSH keep loops of their own: each one also reports
what it saw on the way (the console's tail, the last SSH error), which a bare condition cannot."""

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
