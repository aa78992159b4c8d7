"""The remote installer's JSON progress (one object per stdout line) and a local progress bar.

Contract with the installer (`--progress json`): {"event": "start"|"progress"|"verify"|"done"|"error",
"bytes": N, "total": N, "stage": "...", ...}. `parse_event` is pure; `ProgressBar` draws on stderr
(data stays on stdout): a redrawn line on a terminal, a line per 10 % step otherwise (logs, CI).
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from provisioner.core.sizes import format_size

EVENTS = ("start", "progress", "verify", "done", "error")


def parse_event(line: str) -> dict | None:
    """One stdout line -> the event dict, or None for a line that is not a progress event."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("event") not in EVENTS:
        return None
    return event


def describe(event: dict) -> str:
    """A one-line human form of an event: 'writing 40.0 MiB / 100.0 MiB (40 %)'."""
    stage = event.get("stage") or event.get("event", "")
    if event.get("event") in ("done", "error") and event.get("message"):
        return f"{event['event']}: {event['message']}"  # the installer's own summary line
    done, total = int(event.get("bytes") or 0), int(event.get("total") or 0)
    if total > 0:
        return f"{stage} {format_size(done)} / {format_size(total)} ({100 * done // total} %)"
    if done:
        return f"{stage} {format_size(done)}"
    message = event.get("message")
    return f"{stage}: {message}" if message else str(stage)


class ProgressBar:
    """Draws installer events on `stream` (stderr by default)."""

    def __init__(self, stream: TextIO | None = None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self._last_step = -1
        self._last_stage = None
        self._drawn = False
        self._start = time.monotonic()

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        stage = event.get("stage") or kind
        if kind == "progress" and self.tty:
            self._draw(event)
            return
        if kind == "progress":
            total = int(event.get("total") or 0)
            step = 10 * int(event.get("bytes") or 0) // total if total else -1
            if stage == self._last_stage and (step == self._last_step or step < 0):
                return
            self._last_step, self._last_stage = step, stage
        self._clear()
        self.stream.write(f"remote: {describe(event)}\n")
        self.stream.flush()

    def _draw(self, event: dict) -> None:
        done, total = int(event.get("bytes") or 0), int(event.get("total") or 0)
        filled = self.width * done // total if total else 0
        bar = "#" * filled + "-" * (self.width - filled)
        speed = done / max(time.monotonic() - self._start, 1e-3)
        self.stream.write(f"\r[{bar}] {describe(event)} {format_size(int(speed))}/s ")
        self.stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False

    def close(self) -> None:
        self._clear()
