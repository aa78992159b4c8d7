"""The event loop every process of `provisioner serve` runs on: uvloop.

The boot server's hot path (a cached /ipxe answer) is mostly aiohttp's protocol and the loop's socket
handling; uvloop's loop does the latter in C (libuv), which on the /ipxe benchmark is worth about a
third more requests per second per process (docs/benchmarks.md, pxe). uvloop has no loop.sendfile(),
so files go out through file_response.py (slices of an mmap) instead of aiohttp's chunked fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop()


def run_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run() on uvloop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
