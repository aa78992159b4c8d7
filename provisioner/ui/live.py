"""Live rows for the open pages: the machines whose state changed, pushed as server-sent events.

The boot server calls `changed(mac)` for every event it records (server.py, the one stream of boot
events, from every service and HTTP worker). Nothing else happens per event: the MAC joins a set,
and at most every INTERVAL seconds the rows of the changed machines are rendered once and the same
bytes are queued for every open page. With no page open `changed` returns at once, so a boot storm
costs the same with the UI as without it. A page that does not read its stream (QUEUE_LIMIT
updates behind) is closed; its browser reconnects and gets a fresh page's worth. Counted on /metrics:
`provisioner_ui_updates_total` (events sent to the pages) and `provisioner_ui_update_microseconds_total`
(the event loop's time spent rendering and queueing them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from provisioner.pxe.events import Counters, count

log = logging.getLogger("provisioner.ui.live")

INTERVAL = 0.5         # a boot event shows within a second; a storm's events share one render per window
QUEUE_LIMIT = 64
CLOSED = b""           # queued to a page's stream: end it (the server is stopping, or the page is too slow)


class LiveRows:
    def __init__(self, render: Callable[[Iterable[str]], bytes], counters: Counters, interval: float = INTERVAL):
        self.render = render             # changed MACs -> one server-sent event
        self.counters = counters
        self.interval = interval
        self.pages: set[asyncio.Queue[bytes]] = set()
        self.dirty: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None

    def changed(self, mac: str) -> None:
        if not self.pages:
            return
        self.dirty.add(mac)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._flush)

    def _flush(self) -> None:
        self._timer = None
        macs, self.dirty = self.dirty, set()
        if not macs or not self.pages:
            return
        start = time.perf_counter()
        try:
            message = self.render(macs)
        except Exception:   # a bug in a template must not stop the boot server's event loop
            log.exception("ui: cannot render the rows of %s", ", ".join(sorted(macs)))
            return
        for page in list(self.pages):
            try:
                page.put_nowait(message)
            except asyncio.QueueFull:
                self.drop(page)
        count(self.counters, "ui_updates")
        count(self.counters, "ui_update_microseconds", int((time.perf_counter() - start) * 1e6))

    def open(self) -> asyncio.Queue[bytes]:
        page: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_LIMIT)
        self.pages.add(page)
        return page

    def drop(self, page: asyncio.Queue[bytes]) -> None:
        if page in self.pages:
            self.pages.discard(page)
            while not page.empty():
                page.get_nowait()
            page.put_nowait(CLOSED)

    def close(self) -> None:
        """End every page's stream (the server is stopping: open streams must not hold up its shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for page in list(self.pages):
            self.drop(page)
