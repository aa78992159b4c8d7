"""Install progress: the one event type, its JSON line, its percent; and the installer's emitter.

`--progress json` prints one object per line on stdout. It is the contract every reader of an
install shares: the live image's hook (node/hook.py) posts the lines to the boot server, the server
(pxe/reports.py) records them, the rescue mode (remote/progress.py) draws them. All of them parse a
line with `ProgressEvent.from_dict` / `parse_progress_line` and take `percent` from here:

  {"event": "start"|"progress"|"verify"|"done"|"error", "stage": "...", "bytes": N, "total": N,
   "written": N, "mapped": N, "message": "...", ...}

`bytes`/`total` are positions in the image. With a bmap, progress lines also carry `written` and
`mapped` (the bytes the bmap says hold data), and the percent is written/mapped: position alone
jumps over the image's holes, so an image that ends in a long hole would sit at a low percent for
most of the write and then leap to 100.

Standard library only, Python >= 3.9: the installer zipapp bundles this module.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import IO, Any


class EventKind(Enum):
    START = "start"
    PROGRESS = "progress"
    VERIFY = "verify"
    DONE = "done"
    ERROR = "error"


KINDS = ", ".join(kind.value for kind in EventKind)
_COUNTS = ("bytes", "total", "written", "mapped")


@dataclass(frozen=True)
class ProgressEvent:
    """One progress line; `details` holds the fields only people read (device, rate, summary...)."""

    kind: EventKind
    stage: str = ""
    position: int = 0  # "bytes": how far into the image
    total: int = 0  # the image size (0 while unknown)
    written: int | None = None  # bytes of data written so far (bmap installs)
    mapped: int | None = None  # bytes the bmap maps
    message: str | None = None
    details: dict = field(default_factory=dict)

    @property
    def measured(self) -> tuple[int, int]:
        """(done, total) bytes of what the percent measures: written/mapped with a bmap, else the position."""
        if self.mapped:
            return self.written or 0, self.mapped
        return self.position, self.total

    @property
    def percent(self) -> int | None:
        """0-100; 100 once done; None when nothing says how much there is to do."""
        if self.kind is EventKind.DONE:
            return 100
        done, total = self.measured
        return min(100, done * 100 // total) if total else None

    def to_dict(self, *, details: bool = True) -> dict[str, Any]:
        """The JSON object; without `details`, only what the boot server reads."""
        record: dict[str, Any] = {"event": self.kind.value, "stage": self.stage, "bytes": self.position,
                                  "total": self.total}
        for name, value in (("written", self.written), ("mapped", self.mapped), ("message", self.message)):
            if value is not None:
                record[name] = value
        if details:
            record.update(self.details)
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ProgressEvent:
        """Parse one event object. Raises ValueError naming the field that is wrong."""
        try:
            kind = EventKind(doc.get("event"))
        except ValueError:
            raise ValueError(f"event: {doc.get('event')!r} is not one of {KINDS}") from None
        stage = doc.get("stage", "")
        if not isinstance(stage, str):
            raise ValueError("stage: must be a string")
        counts = {}
        for name in _COUNTS:
            value = doc.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name}: must be a non-negative integer, not {value!r}")
            counts[name] = value
        message = doc.get("message")
        known = {"event", "stage", "message", *_COUNTS}
        return cls(kind=kind, stage=stage, position=counts["bytes"] or 0, total=counts["total"] or 0,
                   written=counts["written"], mapped=counts["mapped"],
                   message=None if message is None else str(message),
                   details={key: value for key, value in doc.items() if key not in known})


def parse_progress_line(line: str) -> ProgressEvent | None:
    """One output line of the installer -> its event, or None for any other line (pure)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
        return ProgressEvent.from_dict(doc) if isinstance(doc, dict) else None
    except ValueError:
        return None


def bar_text(percent: int, width: int = 30) -> str:
    """'#####-----' for a terminal progress bar (the installer's and the rescue mode's)."""
    filled = width * percent // 100
    return "#" * filled + "-" * (width - filled)


class Progress:
    """The installer's side: a bar with MB/s and ETA on stderr (people), or JSON lines on stdout (programs)."""

    def __init__(self, mode: str = "auto", stream_out: IO[str] | None = None,
                 stream_err: IO[str] | None = None):
        self.out = stream_out or sys.stdout
        self.err = stream_err or sys.stderr
        if mode == "auto":
            mode = "bar" if self.err.isatty() else "none"
        self.mode = mode
        self.started = time.monotonic()
        self._bar_shown = False
        self._last_json = 0.0
        self.mapped: int | None = None   # bytes the bmap maps, when there is one

    def event(self, kind: EventKind, stage: str, position: int = 0, total: int = 0,
              message: str | None = None, **details: Any) -> None:
        """Emit a lifecycle event (start/verify/done/error); the bar mode prints its message."""
        self.emit(ProgressEvent(kind, stage, position, total, message=message, details=details))

    def emit(self, event: ProgressEvent) -> None:
        if self.mode == "json":
            self.out.write(event.to_json() + "\n")
            self.out.flush()
        elif self.mode == "bar" and event.kind is not EventKind.PROGRESS:
            self._end_bar()
            if event.message:
                self.err.write(f"{event.message}\n")
                self.err.flush()

    def update(self, position: int, total: int, written: int) -> None:
        """The writer's progress callback: a JSON line at most every 0.5 s (and at the end), or the bar."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = position / elapsed
        event = ProgressEvent(EventKind.PROGRESS, "write", position, total, written=written, mapped=self.mapped or None,
                              details={"rate_bytes_per_second": int(rate)})
        if self.mode == "json":
            now = time.monotonic()
            if now - self._last_json >= 0.5 or position >= total:
                self._last_json = now
                self.emit(event)
        elif self.mode == "bar":
            percent = event.percent or 0
            eta = elapsed * (100 - percent) / percent if percent else 0.0
            self.err.write(f"\r[{bar_text(percent)}] {percent:3d}% {position / 2**20:8.0f} MiB "
                           f"{rate / 2**20:7.1f} MiB/s ETA {eta:4.0f} s")
            self.err.flush()
            self._bar_shown = True

    def _end_bar(self) -> None:
        if self._bar_shown:
            self.err.write("\n")
            self._bar_shown = False
