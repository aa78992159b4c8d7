"""The machines' own writes over real HTTP (`provisioner serve` with examples/cluster on 127.0.0.1): per-boot
secrets, the os=installed switch, the admin API and its CLI, the limits, and the live image's hook."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from provisioner.install.progress import EventKind, ProgressEvent
from provisioner.node import hook
from tests.fixtures.system import free_port
from tests.integration.pxe.conftest import loopback_server
from tests.integration.pxe.machine_client import bearer, boot_secret, http

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "cluster"
MAC, MAC2 = "52:54:00:00:00:01", "52:54:00:00:00:02"
START = json.dumps({"event": "start", "stage": "source"})
ERROR = json.dumps({"event": "error", "stage": "write", "message": "forged"})


@pytest.fixture
def cluster_server(tmp_path):
    with loopback_server(tmp_path, "--no-tftp", data_dir=EXAMPLES) as server:
        yield server


def install_boot(url: str, mac: str) -> str:
    """What the firmware does: fetch the machine's script; the boot's secret from it."""
    status, script = http("GET", f"{url}/ipxe?mac={mac}")
    kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
    assert status == 200 and kernel.endswith(" provisioner.boot_secret=${boot_secret}"), script
    assert "&boot_secret=${boot_secret}" in kernel          # the installer's -c URL (examples/cluster)
    secret = boot_secret(script)
    assert secret is not None and len(secret) == 32
    return secret


def cli(*args: str):
    import subprocess

    return subprocess.run([sys.executable, "-m", "provisioner.cli.main", *args], capture_output=True, text=True,
                          timeout=60)


def machine(server, mac: str, timeout: float = 10) -> dict:
    """The machine's record in machines.json (flushed once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            machines = json.loads((server.state_dir / "machines.json").read_text())["machines"]
            return next(m for m in machines if m["mac"] == mac)
        except (OSError, ValueError, StopIteration):
            assert time.monotonic() < deadline, f"{mac} never appeared in machines.json"
            time.sleep(0.2)


def test_an_install_boot_gets_a_secret_and_only_writes_carrying_it_count(cluster_server):
    url = cluster_server.url
    secret = install_boot(url, MAC)
    other = install_boot(url, MAC2)
    gated = f"{url}/cloud-config?mac=52-54-00-00-00-01&os=installed"
    assert http("GET", gated) == (403, "/cloud-config: no boot secret\n")
    assert http("GET", f"{gated}&boot_secret={other}")[0] == 403           # another machine's secret
    status, config = http("GET", f"{gated}&boot_secret={secret}")
    assert status == 200 and config.startswith("#cloud-config") and "hostname: node1\n" in config
    status, live = http("GET", f"{url}/cloud-config?mac=52-54-00-00-00-01")  # the live system's own: open
    assert status == 200 and "hostname: node1-installer" in live

    report = f"{url}/report?mac=52-54-00-00-00-01"
    assert http("POST", report, {"Content-Type": "application/json"}, ERROR) == (403, "/report: no boot secret\n")
    assert http("POST", report, bearer(other), ERROR) == (403, "/report: boot secret does not match\n")
    assert http("POST", report, bearer(secret), START) == (200, "ok\n")
    assert http("POST", f"{url}/installed?mac={MAC}", bearer(other))[0] == 403
    assert "kernel " in http("GET", f"{url}/ipxe?mac={MAC}")[1]               # not installed by a forgery
    assert http("POST", f"{url}/installed?mac={MAC}", bearer(secret)) == (200, f"{MAC} installed\n")

    script = http("GET", f"{url}/ipxe?mac={MAC}")[1]
    assert "exit 1" in script.splitlines() and "kernel " not in script and boot_secret(script) is None
    assert "kernel " in http("GET", f"{url}/ipxe?mac={MAC2}")[1]               # other machines unchanged
    marks = json.loads((cluster_server.state_dir / "installed.json").read_text())["installed"]
    assert list(marks) == [MAC]
    # One secret, one install: spent now, for writes and for the gated config.
    assert http("POST", report, bearer(secret), ERROR) == (403, "/report: no live boot secret for this MAC\n")
    assert http("GET", f"{gated}&boot_secret={secret}")[0] == 403
    assert http("GET", f"{url}/cloud-config?mac={MAC}")[0] == 403             # installed: os=installed, gated
    # Nothing on the machine-facing port forgets a mark.
    assert http("DELETE", f"{url}/installed?mac={MAC}")[0] == 405
    assert http("POST", f"{url}/machines/{MAC}/reinstall")[0] == 404
    assert "exit 1" in http("GET", f"{url}/ipxe?mac={MAC}")[1].splitlines()

    record = machine(cluster_server, MAC)
    refused = [h for h in record["history"] if h["stage"] == "refused"]
    assert [(h["path"], h["reason"]) for h in refused][:4] == [
        ("/cloud-config", "no boot secret"), ("/cloud-config", "boot secret does not match"),
        ("/report", "no boot secret"), ("/report", "boot secret does not match")]
    assert all(h["from"] == "127.0.0.1" for h in refused) and record["last_stage"] != "refused"
    metrics = http("GET", f"{url}/metrics")[1]
    assert 'provisioner_boot_secret_refused_total{path="/report",reason="missing"} 1' in metrics
    assert 'provisioner_boot_secret_refused_total{path="/report",reason="none_issued"} 1' in metrics


def test_the_operator_acts_through_the_admin_api_with_its_token(cluster_server):
    url, state = cluster_server.url, str(cluster_server.state_dir)
    secret = install_boot(url, MAC)
    admin = json.loads((cluster_server.state_dir / "admin.json").read_text())["url"]
    token = (cluster_server.state_dir / "admin-token").read_text().strip()
    assert admin != url and (cluster_server.state_dir / "admin-token").stat().st_mode & 0o777 == 0o600
    assert http("POST", f"{admin}/machines/{MAC}/mark-installed")[0] == 401
    assert http("POST", f"{admin}/machines/{MAC}/mark-installed", bearer("x" * 43))[0] == 401
    assert http("POST", f"{admin}/machines/{MAC}/mark-installed", bearer(secret))[0] == 401   # a boot secret is no token
    assert "kernel " in http("GET", f"{url}/ipxe?mac={MAC}")[1]

    done = cli("machines", "mark-installed", MAC, "--state-dir", state)
    assert done.returncode == 0 and done.stdout == f"{MAC}: marked installed; its next PXE boot goes to its disk\n"
    assert "exit 1" in http("GET", f"{url}/ipxe?mac={MAC}")[1].splitlines()
    assert http("POST", f"{url}/report?mac={MAC}", bearer(secret), START)[0] == 403   # the operator's act revokes
    asked = cli("machines", "reinstall", MAC, "--state-dir", state)
    assert asked.returncode == 2 and "give --yes to confirm" in asked.stderr
    assert "exit 1" in http("GET", f"{url}/ipxe?mac={MAC}")[1].splitlines()
    done = cli("machines", "reinstall", "52-54-00-00-00-01", "--yes", "--state-dir", state, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["installed"] is False
    assert "kernel " in http("GET", f"{url}/ipxe?mac={MAC}")[1]
    status, listing = http("GET", f"{admin}/machines", bearer(token))
    row = next(m for m in json.loads(listing)["machines"] if m["mac"] == MAC)
    assert status == 200 and row["installed"] is False and "reinstall" in row["stages"]
    assert cli("machines", "forget", MAC, "--yes", "--state-dir", state).stdout == f"{MAC}: forgotten\n"
    assert http("GET", f"{admin}/machines/{MAC}", bearer(token))[0] == 404
    assert http("GET", f"{admin}/machines/nope", bearer(token)) == (400, '{"error": "\'nope\' is not a MAC address"}')
    assert json.loads(http("POST", f"{admin}/reload", bearer(token))[1]) == {"groups": 6, "profiles": 3}

    rotated = cli("machines", "rotate-token", "--state-dir", state)
    assert rotated.returncode == 0 and rotated.stdout.strip().endswith("admin-token")
    assert http("GET", f"{admin}/machines", bearer(token))[0] == 401               # the old token is dead
    assert cli("machines", "mark-installed", MAC, "--state-dir", state).returncode == 0
    wrong = cli("machines", "reinstall", "zz", "--yes", "--state-dir", state)
    assert wrong.returncode == 2 and "'zz' is not a MAC address" in wrong.stderr


def test_live_secrets_survive_a_restart_and_then_expire(tmp_path):
    with loopback_server(tmp_path, "--no-tftp", data_dir=EXAMPLES) as server:
        secret = install_boot(server.url, MAC)                     # expires in 2 h (the default)
    with loopback_server(tmp_path, "--no-tftp", "--boot-secret-ttl", "2", data_dir=EXAMPLES) as server:
        assert http("POST", f"{server.url}/report?mac={MAC}", bearer(secret), START) == (200, "ok\n")
        issued = time.monotonic()
        short = install_boot(server.url, MAC2)                     # this server's secrets live 2 s
        report = f"{server.url}/report?mac={MAC2}"
        time.sleep(max(0.0, 2.2 - (time.monotonic() - issued)))
        assert http("POST", report, bearer(short), START) == (403, "/report: boot secret expired\n")
        assert http("POST", f"{server.url}/installed?mac={MAC2}", bearer(short))[0] == 403
        assert "kernel " in http("GET", f"{server.url}/ipxe?mac={MAC2}")[1]


def test_a_flood_of_writes_is_slowed_and_big_bodies_are_refused(cluster_server):
    url = cluster_server.url
    secret = install_boot(url, MAC)
    big = http("POST", f"{url}/report?mac={MAC}", bearer(secret), " " * 5000)
    assert big == (413, "/report: a body of at most 4096 bytes\n")
    statuses = [http("POST", f"{url}/report?mac={MAC}", bearer(secret), START)[0] for _ in range(60)]
    assert statuses[:25] == [200] * 25 and statuses.count(429) >= 20 and set(statuses) == {200, 429}
    assert http("POST", f"{url}/report?mac={MAC}", bearer(secret))[0] in (411, 429)
    metrics = http("GET", f"{url}/metrics")[1]
    assert "provisioner_write_too_large_total 1" in metrics
    limited = int(next(line.split()[1] for line in metrics.splitlines()
                       if line.startswith("provisioner_write_rate_limited_total ")))
    assert limited >= statuses.count(429)


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


def test_the_hook_reports_with_its_boot_secret_and_marks_the_machine_installed(cluster_server, capsys):
    url = cluster_server.url
    report_url = f"{url}/report?mac=52-54-00-00-00-01"
    # A hook without the secret (an image older than the server, a profile that strips it): refused, and
    # the install is not marked, so the machine would install again.
    stranger = hook.Reporter(report_url, None)
    assert hook.run_streaming([sys.executable, "-c", FAKE_INSTALLER, "ok"], stranger) == 0
    assert stranger.failures == hook.MAX_REPORT_FAILURES and "HTTP Error 403" in capsys.readouterr().out
    assert stranger.installed(pause=0) is False
    assert "kernel " in http("GET", f"{url}/ipxe?mac={MAC}")[1]

    secret = install_boot(url, MAC)
    failing = hook.Reporter(report_url, secret)
    assert hook.run_streaming([sys.executable, "-c", FAKE_INSTALLER, "fail"], failing) == 1
    assert failing.sent_error and failing.failures == 0

    # Lines 1 s apart: the hook sends every other progress line (REPORT_INTERVAL), 5 % apart, and all
    # of this stays under the server's write rate for one address.
    reporter = hook.Reporter(report_url, secret, clock=iter(range(10_000)).__next__)
    assert hook.run_streaming([sys.executable, "-c", FAKE_INSTALLER, "ok"], reporter) == 0
    assert reporter.failures == 0 and "not json: the installer's own words" in capsys.readouterr().out
    assert reporter.installed() is True
    assert "exit 1" in http("GET", f"{url}/ipxe?mac={MAC}")[1].splitlines()
    time.sleep(1.2)                                                       # machines.json: once a second
    record = machine(cluster_server, MAC)
    error = [h for h in record["history"] if h["stage"] == "install-error"][-1]
    assert error["message"] == "no space left on /dev/vda"
    percents = [h["percent"] for h in record["history"]
                if h["stage"] == "install" and h["event"] == "progress"][-11:]
    assert percents == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]      # 21 progress lines, 11 sent
    assert "installed" in record["stages"] and "install-done" in record["stages"]
    # The secret is spent: a late report of that boot is refused, and the mark stays.
    reporter.post(ProgressEvent(EventKind.ERROR, "late", message="x"))
    assert reporter.failures == 1 and "exit 1" in http("GET", f"{url}/ipxe?mac={MAC}")[1].splitlines()


def test_reports_to_a_dead_server_never_stop_the_install(capsys):
    reporter = hook.Reporter(f"http://127.0.0.1:{free_port()}/report?mac={MAC}", "0" * 32)
    assert hook.run_streaming([sys.executable, "-c", FAKE_INSTALLER, "ok"], reporter) == 0
    assert reporter.failures == hook.MAX_REPORT_FAILURES
    assert capsys.readouterr().out.count("failed (") == hook.MAX_REPORT_FAILURES
    assert reporter.installed(pause=0) is False
    assert capsys.readouterr().out.count("failed (") == hook.INSTALLED_ATTEMPTS


def test_reports_go_to_another_server_of_the_site_when_the_first_is_gone_and_stay_there(cluster_server, capsys):
    url = cluster_server.url
    gone = f"http://127.0.0.1:{free_port()}"
    secret = install_boot(url, MAC)
    reporter = hook.Reporter(f"{gone}/report?mac=52-54-00-00-00-01", secret, clock=iter(range(10_000)).__next__,
                             servers=[url])
    assert hook.run_streaming([sys.executable, "-c", FAKE_INSTALLER, "ok"], reporter) == 0
    assert reporter.failures == 0
    out = capsys.readouterr().out
    assert out.count(f"{gone}/report?mac=52-54-00-00-00-01 failed: ") == 1, out     # tried once, then no more
    assert f"{url}/report?mac=52-54-00-00-00-01 answered: reporting there from now on" in out
    assert reporter.installed(pause=0) is True                          # the secret is good at every server
    assert "exit 1" in http("GET", f"{url}/ipxe?mac={MAC}")[1].splitlines()
    time.sleep(1.2)                                                       # machines.json: once a second
    record = machine(cluster_server, MAC)
    assert {"install", "install-done", "installed"} <= set(record["stages"]), record["stages"]
    assert not [h for h in record["history"] if h["stage"] == "refused"], record["history"]
