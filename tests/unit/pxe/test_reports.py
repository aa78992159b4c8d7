"""Install reports posted by the live system's hook (pure parts)."""

import json

import pytest

from provisioner.pxe.machines import MachineStates, install_summary
from provisioner.pxe.reports import MAX_BODY, parse_report, worth_recording


def body(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_progress_report_becomes_a_percent():
    report = parse_report(body(event="progress", stage="write", bytes=450, total=1000, rate_bytes_per_second=9))
    assert (report.event, report.percent, report.machine_stage) == ("progress", 45, "install")
    assert report.detail() == {"event": "progress", "step": "write", "percent": 45}
    # With a bmap the installer also sends written/mapped: the share of the data, not the position.
    sparse = parse_report(body(event="progress", bytes=900, total=1000, written=30, mapped=120))
    assert sparse.percent == 25
    assert parse_report(body(event="done", stage="done")).machine_stage == "install-done"
    assert parse_report(body(event="done", stage="done")).percent == 100
    error = parse_report(body(event="error", stage="verify", message="sha512\nmismatch " + "x" * 500))
    assert error.machine_stage == "install-error" and "\n" not in error.message and len(error.message) == 200


@pytest.mark.parametrize("raw,reason", [
    (b"not json", "body: not JSON"),
    (b"[1, 2]", "body: must be a JSON object"),
    (body(event="launch"), "event: 'launch' is not one of start, progress, verify, done, error"),
    (body(event="progress", bytes=-1, total=10), "bytes: must be a non-negative integer, not -1"),
    (body(event="progress", bytes=1, total="10"), "total: must be a non-negative integer, not '10'"),
    (body(event="start", stage=7), "stage: must be a string"),
    (body(event="progress", written=1, mapped=2.5), "mapped: must be a non-negative integer, not 2.5"),
    (b"{" + b" " * MAX_BODY + b"}", f"more than {MAX_BODY}"),
    (b"\xff\xfe", "body: not JSON"),
])
def test_bad_report_is_one_line_naming_the_field(raw, reason):
    with pytest.raises(ValueError) as info:
        parse_report(raw)
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_progress_is_recorded_in_ten_percent_steps_lifecycle_always():
    progress = [parse_report(body(event="progress", bytes=n, total=100)) for n in (1, 5, 9, 10, 15, 31, 100)]
    recorded, last = [], None
    for report in progress:
        if worth_recording(report, last):
            recorded.append(report.percent)
            last = report.percent
    assert recorded == [1, 10, 31, 100]
    assert worth_recording(parse_report(body(event="verify")), 55)
    assert not worth_recording(parse_report(body(event="progress", bytes=5, total=0)), None)  # no total


def test_install_summary_of_a_machine_history(tmp_path):
    states = MachineStates(None)
    mac = "52:54:00:00:00:01"
    states.record(mac, "dhcp-ack")
    assert install_summary(states.machines[mac].history) is None
    states.record(mac, "install", {"event": "progress", "step": "write", "percent": 40})
    assert install_summary(states.machines[mac].history) == "40%"
    states.record(mac, "install-error", {"event": "error", "step": "write", "message": "disk gone"})
    assert install_summary(states.machines[mac].history) == "error: disk gone"
    states.record(mac, "install-done", {"event": "done", "percent": 100})
    assert install_summary(states.machines[mac].history) == "done"
