"""Progress for people (a bar with MB/s and ETA on stderr) and for programs (JSON lines on stdout).

`--progress json` prints one object per line on stdout, the contract the rescue mode and the
server's machine state read:
  {"event": "start"|"progress"|"verify"|"done"|"error", "bytes": N, "total": N, "stage": "...", ...}
`bytes`/`total` are positions in the image. With a bmap, progress lines also carry `written` and
`mapped` (the bytes the bmap says hold data): written/mapped is the share of the real work done,
which position alone hides when the image ends in a long hole.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any


class Progress:
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

    def event(self, event: str, stage: str, bytes_done: int = 0, total: int = 0, **fields: Any) -> None:
        """Emit a lifecycle event (start/verify/done/error); the bar mode prints a line for it."""
        if self.mode == "json":
            record = {"event": event, "stage": stage, "bytes": bytes_done, "total": total}
            record.update(fields)
            self.out.write(json.dumps(record, sort_keys=True) + "\n")
            self.out.flush()
        elif self.mode == "bar" and event != "progress":
            self._end_bar()
            message = fields.get("message")
            if message:
                self.err.write(f"{message}\n")
                self.err.flush()

    def update(self, position: int, total: int, written: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = position / elapsed
        if self.mode == "json":
            now = time.monotonic()
            if now - self._last_json >= 0.5 or position >= total:
                self._last_json = now
                extra = {"mapped": self.mapped} if self.mapped else {}
                self.event("progress", "write", position, total, written=written,
                           rate_bytes_per_second=int(rate), **extra)
        elif self.mode == "bar":
            fraction = position / total if total else 0.0
            eta = (total - position) / rate if rate > 0 else 0.0
            width = 30
            filled = int(fraction * width)
            bar = "#" * filled + "-" * (width - filled)
            self.err.write(f"\r[{bar}] {fraction * 100:5.1f}% {position / 2**20:8.0f} MiB "
                           f"{rate / 2**20:7.1f} MiB/s ETA {eta:4.0f} s")
            self.err.flush()
            self._bar_shown = True

    def _end_bar(self) -> None:
        if self._bar_shown:
            self.err.write("\n")
            self._bar_shown = False
