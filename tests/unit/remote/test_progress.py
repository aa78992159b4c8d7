"""The remote installer's progress drawn locally."""

from __future__ import annotations

import io

from provisioner.remote.progress import ProgressBar, describe, parse_event


def test_parse_event_and_describe():
    event = parse_event('{"event": "progress", "bytes": 50, "total": 200, "stage": "writing"}')
    assert event["bytes"] == 50 and describe(event) == "writing 50 B / 200 B (25 %)"
    assert parse_event("Success!") is None and parse_event('{"event": "bogus"}') is None
    assert parse_event("{broken") is None
    done = {"event": "done", "stage": "install", "bytes": 30, "total": 136, "message": "installed 1.2.3"}
    assert describe(done) == "done: installed 1.2.3"


def test_progress_bar_without_terminal_prints_each_tenth_once():

    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar({"event": "start", "stage": "download", "bytes": 0, "total": 0})
    for done in range(0, 101, 5):
        bar({"event": "progress", "stage": "write", "bytes": done, "total": 100})
    bar({"event": "done", "stage": "done", "bytes": 100, "total": 100})
    lines = stream.getvalue().splitlines()
    assert lines[0] == "remote: download"
    assert [line for line in lines if line.startswith("remote: write")] == [
        f"remote: write {n} B / 100 B ({n} %)" for n in range(0, 101, 10)]
    assert lines[-1] == "remote: done 100 B / 100 B (100 %)"
