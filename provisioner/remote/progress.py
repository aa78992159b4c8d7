"""The remote installer's progress (its `--progress json` lines, install/progress.py) as a local bar.

`ProgressBar` draws on stderr (data stays on stdout): a redrawn line on a terminal, a line per 10 %
step otherwise (logs, CI). The percent is the event's own (install/progress.py), the one the boot
server records too.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from provisioner.core.sizes import format_size
from provisioner.install.progress import EventKind, ProgressEvent, bar_text


def describe(event: ProgressEvent) -> str:
    """A one-line human form of an event: 'write 40.0 MiB / 100.0 MiB (40 %)'."""
    stage = event.stage or event.kind.value
    if event.kind in (EventKind.DONE, EventKind.ERROR) and event.message:
        return f"{event.kind.value}: {event.message}"  # the installer's own summary line
    done, total = event.measured
    if total and event.percent is not None:
        return f"{stage} {format_size(done)} / {format_size(total)} ({event.percent} %)"
    if done:
        return f"{stage} {format_size(done)}"
    return f"{stage}: {event.message}" if event.message else stage


class ProgressBar:
    """Draws installer events on `stream` (stderr by default)."""

    def __init__(self, stream: TextIO | None = None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self._last_step = -1
        self._last_stage: str | None = None
        self._drawn = False
        self._start = time.monotonic()

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind is EventKind.PROGRESS and self.tty:
            self._draw(event)
            return
        if event.kind is EventKind.PROGRESS:
            step = -1 if event.percent is None else event.percent // 10
            if event.stage == self._last_stage and (step == self._last_step or step < 0):
                return
            self._last_step, self._last_stage = step, event.stage
        self._clear()
        self.stream.write(f"remote: {describe(event)}\n")
        self.stream.flush()

    def _draw(self, event: ProgressEvent) -> None:
        speed = event.position / max(time.monotonic() - self._start, 1e-3)
        bar = bar_text(event.percent or 0, self.width)
        self.stream.write(f"\r[{bar}] {describe(event)} {format_size(int(speed))}/s ")
        self.stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False

    def close(self) -> None:
        self._clear()
