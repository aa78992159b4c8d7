"""The os=installed switch over real HTTP: `provisioner serve` with examples/cluster on 127.0.0.1."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from provisioner.node import hook
from tests.fixtures.system import free_port
from tests.integration.pxe.conftest import loopback_server

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "cluster"
MAC = "52:54:00:00:00:01"


@pytest.fixture
def cluster_server(tmp_path):
    with loopback_server(tmp_path, "--no-tftp", data_dir=EXAMPLES) as server:
        yield server


def _get(url: str, method: str = "GET") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_installer_config_fetch_switches_the_machine_to_the_installed_profile(cluster_server):
    url = cluster_server.url
    assert "kernel " in _get(f"{url}/ipxe?mac={MAC}")[1]                        # install profile
    status, body = _get(f"{url}/cloud-config?mac=52-54-00-00-00-01&os=installed")
    assert status == 200 and body.startswith("#cloud-config") and "hostname: node1\n" in body
    script = _get(f"{url}/ipxe?mac={MAC}")[1]
    assert "exit 1" in script.splitlines() and "kernel " not in script          # installed: local disk
    assert "kernel " in _get(f"{url}/ipxe?mac=52:54:00:00:00:02")[1]            # other machines unchanged
    marks = json.loads((cluster_server.state_dir / "installed.json").read_text())["installed"]
    assert list(marks) == [MAC]
    assert _get(f"{url}/installed?mac={MAC}", "DELETE") == (200, f"{MAC} will be installed again on its next boot\n")
    assert "kernel " in _get(f"{url}/ipxe?mac={MAC}")[1]


def test_post_marks_installed_and_a_bad_mac_is_refused(cluster_server):
    url = cluster_server.url
    assert _get(f"{url}/installed?mac=52-54-00-00-00-03", "POST") == (200, "52:54:00:00:00:03 installed\n")
    assert "exit 1" in _get(f"{url}/ipxe?mac=52:54:00:00:00:03")[1].splitlines()
    assert _get(f"{url}/installed?mac=nope", "POST") == (400, "/installed: give ?mac=<MAC address>\n")


FAKE_INSTALLER = r'''
import json, sys
for event in ({"event": "start", "stage": "source"},
              *({"event": "progress", "stage": "write", "bytes": n, "total": 1000} for n in range(0, 1001, 50)),
              {"event": "verify", "stage": "verify"}):
    print(json.dumps(event), flush=True)
if sys.argv[1] == "fail":
    print(json.dumps({"event": "error", "stage": "write", "message": "no space left on /dev/vda"}), flush=True)
    sys.exit(1)
print("not json: the installer's own words", flush=True)
print(json.dumps({"event": "done", "stage": "done", "bytes": 1000, "total": 1000}), flush=True)
'''


def _wait_state(server, predicate, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:                      # machines.json is flushed once a second
        try:
            machines = json.loads((server.state_dir / "machines.json").read_text())["machines"]
            record = next(m for m in machines if m["mac"] == MAC)
            if predicate(record):
                return record
        except (OSError, ValueError, StopIteration):
            pass
        assert time.monotonic() < deadline, "machine state never showed the reports"
        time.sleep(0.2)


def test_hook_reports_installer_progress_and_an_error_forgets_the_installed_mark(cluster_server, capsys):

    url = cluster_server.url
    report_url = f"{url}/report?mac=52-54-00-00-00-01"
    reporter = hook.Reporter(report_url, clock=iter(range(0, 10_000, 3)).__next__)   # 3 s apart: none throttled
    assert hook.run_streaming([sys.executable, "-c", FAKE_INSTALLER, "ok"], reporter) == 0
    record = _wait_state(cluster_server, lambda r: "install-done" in r["stages"])
    percents = [h["percent"] for h in record["history"] if h["stage"] == "install" and h["event"] == "progress"]
    assert percents == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]   # 21 progress lines, one per 10 %
    assert "not json: the installer's own words" in capsys.readouterr().out   # echoed to the console

    # A failing install: the server forgets the mark set by the os=installed config fetch.
    assert _get(f"{url}/cloud-config?mac=52-54-00-00-00-01&os=installed")[0] == 200
    assert "exit 1" in _get(f"{url}/ipxe?mac={MAC}")[1].splitlines()
    reporter = hook.Reporter(report_url)
    assert hook.run_streaming([sys.executable, "-c", FAKE_INSTALLER, "fail"], reporter) == 1
    assert reporter.sent_error
    record = _wait_state(cluster_server, lambda r: "install-error" in r["stages"])
    error = [h for h in record["history"] if h["stage"] == "install-error"][-1]
    assert error["message"] == "no space left on /dev/vda"
    assert "kernel " in _get(f"{url}/ipxe?mac={MAC}")[1]                        # installs again next boot
    assert _get(f"{url}/report?mac={MAC}", "POST")[0] == 400                     # no body: refused
    big = urllib.request.Request(f"{url}/report?mac={MAC}", data=b" " * 5000, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(big, timeout=10)
    assert info.value.code == 400 and b"at most 4096 bytes" in info.value.read()


def test_reports_to_a_dead_server_never_stop_the_install(capsys):

    reporter = hook.Reporter(f"http://127.0.0.1:{free_port()}/report?mac={MAC}")
    assert hook.run_streaming([sys.executable, "-c", FAKE_INSTALLER, "ok"], reporter) == 0
    assert reporter.failures == hook.MAX_REPORT_FAILURES
    assert capsys.readouterr().out.count("failed (") == hook.MAX_REPORT_FAILURES
