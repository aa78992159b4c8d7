"""The one install-progress event: its JSON line, its parsing, its percent; the installer's emitter."""

from __future__ import annotations

import io
import json

import pytest

from provisioner.install.progress import EventKind, Progress, ProgressEvent, parse_progress_line


def test_percent_is_written_over_mapped_with_a_bmap_else_the_position():
    assert ProgressEvent(EventKind.PROGRESS, position=450, total=1000).percent == 45
    assert ProgressEvent(EventKind.PROGRESS, position=900, total=1000, written=30, mapped=120).percent == 25
    assert ProgressEvent(EventKind.PROGRESS, position=5, total=0).percent is None
    assert ProgressEvent(EventKind.PROGRESS, position=11, total=10).percent == 100
    assert ProgressEvent(EventKind.DONE).percent == 100


def test_json_line_round_trip_keeps_details_apart():
    line = ('{"event": "progress", "stage": "write", "bytes": 8, "total": 16, "written": 4, "mapped": 8, '
            '"rate_bytes_per_second": 99}')
    event = parse_progress_line(line)
    assert event == ProgressEvent(EventKind.PROGRESS, "write", 8, 16, written=4, mapped=8,
                                  details={"rate_bytes_per_second": 99})
    assert json.loads(event.to_json()) == json.loads(line)
    assert event.to_dict(details=False) == {"event": "progress", "stage": "write", "bytes": 8, "total": 16,
                                            "written": 4, "mapped": 8}


@pytest.mark.parametrize("line", ["Success!", '{"event": "bogus"}', "{broken", "[1]", '{"event": "start", "bytes": -1}'])
def test_other_lines_are_not_events(line):
    assert parse_progress_line(line) is None


def test_json_mode_writes_what_the_readers_parse():
    out = io.StringIO()
    progress = Progress("json", stream_out=out, stream_err=io.StringIO())
    progress.mapped = 64
    progress.event(EventKind.START, "write", 0, 128, device="/dev/x")
    progress.update(128, 128, 64)
    progress.event(EventKind.DONE, "install", 64, 128, message="installed", summary={"written": 64})
    events = [parse_progress_line(line) for line in out.getvalue().splitlines()]
    assert [e.kind for e in events] == [EventKind.START, EventKind.PROGRESS, EventKind.DONE]
    assert events[0].details == {"device": "/dev/x"}
    assert (events[1].written, events[1].mapped, events[1].percent) == (64, 64, 100)
    assert events[2].message == "installed" and events[2].details["summary"] == {"written": 64}
