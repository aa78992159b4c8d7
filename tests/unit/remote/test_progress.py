"""The remote installer's progress drawn locally."""

from __future__ import annotations

import io

from provisioner.install.progress import EventKind, ProgressEvent, parse_progress_line
from provisioner.remote.progress import ProgressBar, describe


def test_describe_uses_the_events_own_percent():
    event = parse_progress_line('{"event": "progress", "bytes": 50, "total": 200, "stage": "writing"}')
    assert describe(event) == "writing 50 B / 200 B (25 %)"
    sparse = ProgressEvent(EventKind.PROGRESS, "write", position=900, total=1000, written=30, mapped=120)
    assert describe(sparse) == "write 30 B / 120 B (25 %)"   # the data written, not the position
    done = ProgressEvent(EventKind.DONE, "install", 30, 136, message="installed 1.2.3")
    assert describe(done) == "done: installed 1.2.3"
    assert describe(ProgressEvent(EventKind.START, "source")) == "source"


def test_progress_bar_without_terminal_prints_each_tenth_once():
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar(ProgressEvent(EventKind.START, "download"))
    for done in range(0, 101, 5):
        bar(ProgressEvent(EventKind.PROGRESS, "write", done, 100))
    bar(ProgressEvent(EventKind.DONE, "done", 100, 100))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "remote: download"
    assert [line for line in lines if line.startswith("remote: write")] == [
        f"remote: write {n} B / 100 B ({n} %)" for n in range(0, 101, 10)]
    assert lines[-1] == "remote: done 100 B / 100 B (100 %)"
