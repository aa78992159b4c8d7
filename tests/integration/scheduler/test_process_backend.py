"""The process backend running real processes: systemd's service semantics, logs, status, and units dying
with fleetd."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from provisioner.scheduler.backends.process import ProcessBackend
from provisioner.scheduler.backends.service import HostInfo
from provisioner.scheduler.model import UnitStatus
from provisioner.scheduler.unitfile import UnitFile
from tests.fixtures.system import need_root

HOST = HostInfo(hostname="node7", machine_id="cafe0123cafe0123cafe0123cafe0123")


@pytest.fixture
def backend(tmp_path):
    changes = threading.Event()
    instance = ProcessBackend(tmp_path / "run", HOST, on_change=changes.set)
    instance.changes = changes  # type: ignore[attr-defined]
    yield instance
    instance.close(timeout=30)


def wait_status(backend, name: str, predicate, timeout: float = 15) -> UnitStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = backend.statuses().get(name)
        if status is not None and predicate(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: {status} after {timeout} s\n{log_of(backend, name)}")
        time.sleep(0.05)


def log_of(backend, name: str) -> str:
    path = backend.root / "journal" / f"{name}.log"
    return path.read_text() if path.exists() else ""


def messages(backend, name: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in log_of(backend, name).splitlines()]


def load(backend, name: str, body: str) -> None:
    backend.load(name, UnitFile.parse(textwrap.dedent(body)))


def test_start_pre_post_stop_environment_and_logs(backend, tmp_path):
    (tmp_path / "env").write_text("FROM_FILE=file value\n")
    load(backend, "app@blue.service", f"""\
        [Unit]
        Description=App %i
        [Service]
        Environment="GREETING=hello there" ARGS=-n
        EnvironmentFile={tmp_path}/env
        EnvironmentFile=-/nonexistent
        WorkingDirectory={tmp_path}
        ExecStartPre=-/bin/false
        ExecStartPre=/bin/sh -c 'echo pre %n on %H in $PWD'
        ExecStart=/bin/sh -c 'echo "$GREETING" "$FROM_FILE" %i; exec sleep 600'
        ExecStartPost=/bin/echo $ARGS post
        ExecStop=/bin/sh -c 'echo stopping $MAINPID'
        ExecStopPost=/bin/sh -c 'echo after $SERVICE_RESULT $EXIT_CODE'
        """)
    backend.start("app@blue.service")
    running = wait_status(backend, "app@blue.service", lambda s: s.sub == "running")
    assert running == UnitStatus("loaded", "active", "running")
    backend.stop("app@blue.service")
    wait_status(backend, "app@blue.service", lambda s: s.active == "inactive")
    lines = messages(backend, "app@blue.service")
    assert lines[:2] == ["Starting App blue...", f"pre app@blue.service on node7 in {tmp_path}"]
    assert "hello there file value blue" in lines and "post" in lines  # `$ARGS` split into a word: -n
    stopping = next(line for line in lines if line.startswith("stopping "))
    assert stopping != "stopping " and "after success killed" in lines
    assert lines[-1] == "Stopped App blue."
    first = log_of(backend, "app@blue.service").splitlines()[0]
    assert first.split()[3:5] == ["node7", f"fleetd[{os.getpid()}]:"]  # journalctl's short format
    status = (backend.root / "status" / "app@blue.service").read_text()
    assert status.startswith("● app@blue.service - App blue\n     Loaded: loaded (")
    assert "     Active: inactive (dead) since " in status


def test_failures_restart_until_the_start_limit(backend):
    load(backend, "flaky.service", """\
        [Unit]
        StartLimitBurst=3
        StartLimitIntervalSec=30
        [Service]
        ExecStart=/bin/sh -c 'echo dying; exit 3'
        Restart=on-failure
        RestartSec=100ms
        """)
    backend.start("flaky.service")
    wait_status(backend, "flaky.service", lambda s: s.active == "failed" and "start-limit-hit" in
                log_of(backend, "flaky.service"))
    lines = messages(backend, "flaky.service")
    assert lines.count("dying") == 3
    assert "flaky.service: Main process exited, code=exited, status=3/NOTIMPLEMENTED" in lines
    assert "flaky.service: Scheduled restart job, restart counter is at 2." in lines
    assert lines[-2:] == ["flaky.service: Start request repeated too quickly.",
                          "flaky.service: Failed with result 'start-limit-hit'."]


def test_clean_exit_restarts_only_with_always_and_oneshot_states(backend, tmp_path):
    counter = tmp_path / "count"
    load(backend, "always.service", f"[Service]\nExecStart=/bin/sh -c 'echo x >> {counter}'\nRestart=always\n"
                                    f"RestartSec=50ms\nStartLimitBurst=1000\n")
    load(backend, "once.service", "[Service]\nExecStart=/bin/true\n")
    load(backend, "setup.service", "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/echo one\n"
                                   "ExecStart=/bin/echo two\n")
    for name in ("always.service", "once.service", "setup.service"):
        backend.start(name)
    wait_status(backend, "setup.service", lambda s: (s.active, s.sub) == ("active", "exited"))
    assert messages(backend, "setup.service")[1:3] == ["one", "two"]
    wait_status(backend, "once.service", lambda s: (s.active, s.sub) == ("inactive", "dead"))
    assert "once.service: Deactivated successfully." in messages(backend, "once.service")
    time.sleep(1)
    assert len(counter.read_text().split()) > 3


def test_stop_kills_the_whole_group_and_sigkill_after_the_timeout(backend, tmp_path):
    marker = tmp_path / "child.pid"
    load(backend, "tree.service", f"[Service]\nExecStart=/bin/sh -c 'sleep 600 & echo $! > {marker}; wait'\n")
    load(backend, "stubborn.service", "[Service]\nExecStart=/bin/sh -c 'trap \"\" TERM; while :; do sleep 0.1; done'\n"
                                      "TimeoutStopSec=1\n")
    backend.start("tree.service")
    backend.start("stubborn.service")
    wait_status(backend, "tree.service", lambda s: s.sub == "running" and marker.exists())
    wait_status(backend, "stubborn.service", lambda s: s.sub == "running")
    child = int(marker.read_text())
    backend.stop("tree.service")
    started = time.monotonic()
    backend.stop("stubborn.service")
    wait_status(backend, "tree.service", lambda s: s.active == "inactive")
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # gone, or a zombie
    stubborn = wait_status(backend, "stubborn.service", lambda s: s.active == "failed")
    assert stubborn.sub == "failed" and 0.9 < time.monotonic() - started < 10
    assert messages(backend, "stubborn.service")[-2:] == ["stubborn.service: Stopping timed out. Killing.",
                                                         "stubborn.service: Failed with result 'timeout'."]


def test_units_the_backend_cannot_run_load_with_bad_setting(backend):
    load(backend, "daemon.service", "[Service]\nType=forking\nExecStart=/usr/sbin/somedaemon\n")
    load(backend, "missing.service", "[Service]\nExecStart=/nonexistent/binary\n")
    status = wait_status(backend, "daemon.service", lambda s: True)
    assert status == UnitStatus("bad-setting", "inactive", "dead")
    assert "Type=forking cannot be followed without cgroups" in log_of(backend, "daemon.service")
    backend.start("missing.service")
    wait_status(backend, "missing.service", lambda s: s.active == "failed")
    assert "Failed to locate executable /nonexistent/binary" in log_of(backend, "missing.service")


def test_user_and_unload_forgets_the_unit(backend, tmp_path):
    need_root()
    load(backend, "who.service", "[Service]\nUser=nobody\nExecStart=/bin/sh -c 'id -un; exec sleep 600'\n")
    backend.start("who.service")
    wait_status(backend, "who.service", lambda s: s.sub == "running" and "nobody" in messages(backend, "who.service"))
    assert (backend.root / "units" / "who.service").exists()
    backend.unload("who.service")
    deadline = time.monotonic() + 10
    while "who.service" in backend.statuses() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "who.service" not in backend.statuses()
    assert not (backend.root / "units" / "who.service").exists()
    assert not (backend.root / "status" / "who.service").exists()


def test_units_die_with_a_killed_fleetd(tmp_path):
    """A process backend in a child process (as in fleetd); SIGKILL it, its units must go too."""
    marker = tmp_path / "unit.pid"
    script = textwrap.dedent(f"""\
        import time
        from provisioner.scheduler.backends.process import ProcessBackend
        from provisioner.scheduler.backends.service import HostInfo
        from provisioner.scheduler.unitfile import UnitFile
        backend = ProcessBackend({str(tmp_path / 'run')!r}, HostInfo())
        unit = "[Service]\\nExecStart=/bin/sh -c 'echo $$$$ > {marker}; exec sleep 600'\\n"
        backend.load("orphan.service", UnitFile.parse(unit))
        backend.start("orphan.service")
        time.sleep(600)
        """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 15
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        unit_pid = int(marker.read_text())
        assert os.path.exists(f"/proc/{unit_pid}")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{unit_pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{unit_pid}")
