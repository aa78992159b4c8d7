"""Three `provisioner node locksmithd` processes as three machines of one cluster on a real etcd 3.4.

Each "machine" is a directory: its machine ID, the update agent's marker, a file that stands for the
booted slot's success bit, and a reboot command that records the reboot. When a machine reboots, the
test does what a reboot does to the daemon: stops it (systemd), removes the marker (/run is a tmpfs),
starts it again with the new slot not yet marked successful, and marks it once the daemon is seen
holding the lock. The lock's history in etcd gives the order of the holders; the reboot records give
the order of the reboots.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.core.commands import terminate
from provisioner.node.update.rebootlock import RebootLock, semaphore_key
from provisioner.scheduler.etcd import EtcdClient
from tests.fixtures.etcd import EtcdCluster, module_etcd_cluster
from tests.fixtures.polling import wait_until
from tests.integration.node.rebootlock_history import holder_sequence, semaphore_history

PROVISIONER = [sys.executable, "-m", "provisioner.cli.main"]
REBOOT_SCRIPT = '#!/bin/sh\necho "$1" >> "$2"\n'


etcd = module_etcd_cluster("etcd", size=1)


@dataclass
class Machine:
    machine_id: str
    directory: Path
    env: dict[str, str]
    process: subprocess.Popen | None = None
    boots: int = 0

    @property
    def marker(self) -> Path:
        return self.directory / "update_engine_autoupdate_completed"

    @property
    def success(self) -> Path:
        return self.directory / "slot-successful"

    @property
    def reboots(self) -> list[str]:
        path = self.directory / "reboots"
        return path.read_text().split() if path.exists() else []

    @property
    def state(self) -> str:
        path = self.directory / "coordinator.conf"
        return path.read_text() if path.exists() else ""

    def log(self) -> str:
        path = self.directory / "locksmithd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def boot(self) -> None:
        """Start the daemon (the machine came up)."""
        self.boots += 1
        script = self.directory / "reboot"
        argv = [*PROVISIONER, "-v", "node", "locksmithd", "--machine-id-file", str(self.directory / "machine-id"),
                "--marker", str(self.marker), "--success-file", str(self.success),
                "--coordinator-conf", str(self.directory / "coordinator.conf"),
                "--reboot-command", f"{script} {self.machine_id} {self.directory / 'reboots'}",
                "--retry", "0.2", "--retry-max", "1", "--poll", "0.2"]
        with open(self.directory / "locksmithd.log", "a") as log:
            log.write(f"--- boot {self.boots}\n")
            log.flush()
            self.process = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def go_down(self) -> None:
        """What a reboot does to this machine's daemon and /run."""
        if self.process is not None:
            terminate(self.process)
        self.marker.unlink(missing_ok=True)
        self.success.unlink(missing_ok=True)


def make_machines(tmp_path: Path, etcd: EtcdCluster, group: str, count: int, **env: str) -> list[Machine]:
    machines = []
    for index in range(count):
        directory = tmp_path / f"m{index}"
        directory.mkdir()
        machine_id = f"{index:x}" * 32
        (directory / "machine-id").write_text(machine_id + "\n")
        script = directory / "reboot"
        script.write_text(REBOOT_SCRIPT)
        script.chmod(0o755)
        environ = {"PATH": "/usr/bin:/bin", "REBOOT_STRATEGY": "etcd-lock",
                   "LOCKSMITHD_ENDPOINT": ",".join(etcd.endpoints), "LOCKSMITHD_GROUP": group, **env}
        machines.append(Machine(machine_id, directory, environ))
    return machines


def wait_for(what: str, condition, machines: list[Machine], timeout: float = 120.0) -> None:
    def reached() -> bool:
        for machine in machines:
            if machine.process is not None and machine.process.poll() not in (None, 0):
                pytest.fail(f"locksmithd {machine.machine_id[:4]} exited {machine.process.returncode}\n"
                            f"{machine.log()}", pytrace=False)
        return bool(condition())

    wait_until(what, reached, timeout, interval=0.1,
               context=lambda: "\n".join(f"=== {m.machine_id[:4]}\n{m.log()[-3000:]}" for m in machines))


def holders(etcd: EtcdCluster, group: str) -> tuple[str, ...]:
    client = EtcdClient(etcd.endpoints, timeout=5.0)
    try:
        return RebootLock(client, group).status().holders
    finally:
        client.close()


def test_three_machines_reboot_one_at_a_time(etcd, tmp_path):
    group = "three"
    machines = make_machines(tmp_path, etcd, group, 3)
    try:
        for machine in machines:
            machine.success.touch()   # each runs a slot marked successful
            machine.boot()
        wait_for("every daemon running", lambda: all("STATE=running" in m.state for m in machines), machines)
        for machine in machines:
            machine.marker.write_text("0.2.0\n")   # the update agent wrote the passive slot
        rebooted: list[Machine] = []
        while len(rebooted) < len(machines):
            wait_for("a reboot", lambda: any(m.reboots and m not in rebooted for m in machines), machines)
            machine = next(m for m in machines if m.reboots and m not in rebooted)
            rebooted.append(machine)
            machine.go_down()
            machine.boot()
            # up again, slot not yet marked: it keeps the lock, so nobody else reboots meanwhile
            wait_for("the lock kept until the slot is marked",
                     lambda m=machine: "released once the booted slot is marked successful" in m.log(), machines)
            assert holders(etcd, group) == (machine.machine_id,)
            assert {m.machine_id for m in machines if m.reboots} == {m.machine_id for m in rebooted}
            machine.success.touch()   # provisioner-boot-success.service marked the slot
            wait_for("the lock released", lambda m=machine: "reboot lock released" in m.log(), machines)
        wait_for("the lock free", lambda: holders(etcd, group) == (), machines)
        history = semaphore_history(etcd.endpoints, semaphore_key(group))
        assert max(len(value.holders) for value in history) == 1
        assert holder_sequence(history) == [m.machine_id for m in rebooted]
        assert sorted(holder_sequence(history)) == sorted(m.machine_id for m in machines)
        assert all(m.reboots == [m.machine_id] and m.boots == 2 for m in machines)
        assert all("STATE=running" in m.state for m in machines)
    finally:
        for machine in machines:
            if machine.process is not None:
                terminate(machine.process)


def test_outside_the_window_nothing_is_locked(etcd, tmp_path):
    group = "window"
    opens = dt.datetime.now() + dt.timedelta(hours=2)
    machine, = make_machines(tmp_path, etcd, group, 1, REBOOT_WINDOW_START=opens.strftime("%a %H:%M"),
                             REBOOT_WINDOW_LENGTH="1h")
    machine.success.touch()
    machine.marker.write_text("0.2.0\n")
    machine.boot()
    try:
        wait_for("the reboot planned for the window", lambda: "STATE=reboot-planned" in machine.state, [machine])
        assert "reboot window opens in" in machine.log()
        assert holders(etcd, group) == () and machine.reboots == []
    finally:
        terminate(machine.process) if machine.process is not None else None


def test_strategy_off_exits_at_once(etcd, tmp_path):
    machine, = make_machines(tmp_path, etcd, "off", 1, REBOOT_STRATEGY="off")
    machine.marker.write_text("0.2.0\n")
    machine.boot()
    assert machine.process is not None and machine.process.wait(timeout=60) == 0
    assert "reboot strategy is off: nothing to do" in machine.log()
    assert machine.reboots == []


def test_a_bad_setting_is_one_line(etcd, tmp_path):
    machine, = make_machines(tmp_path, etcd, "bad", 1, REBOOT_WINDOW_START="25:00", REBOOT_WINDOW_LENGTH="1h")
    machine.boot()
    assert machine.process is not None and machine.process.wait(timeout=60) == 1
    assert machine.log().splitlines()[-1] == \
        "provisioner: error: REBOOT_WINDOW_START: '25:00' is not a time like 23:00 or Thu 23:00"


def test_a_lock_taken_as_the_window_closes_is_given_back(etcd, tmp_path):
    """The window is open when the daemon goes for the lock and closed when it gets it: it gives the lock
    back and waits for the next window instead of rebooting."""
    from provisioner.cloudconfig.model import RebootStrategy
    from provisioner.node.update.locksmithd import DaemonOptions, Locksmithd
    from provisioner.node.update.strategy import RebootSettings, parse_window

    group = "late"
    inside, after = dt.datetime(2026, 12, 7, 10, 30), dt.datetime(2026, 12, 7, 11, 30)
    times = iter([inside])   # the first look at the clock: open; every later one: closed

    settings = RebootSettings(RebootStrategy.ETCD_LOCK, tuple(etcd.endpoints), group, parse_window("10:00", "1h"))
    options = DaemonOptions(coordinator_conf=str(tmp_path / "coordinator.conf"), retry_initial=0.1, retry_max=0.2,
                            poll=0.1)
    daemon = Locksmithd(settings, options, slot_successful=lambda: True, etcd_active=lambda: True,
                        now=lambda: next(times, after))
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(daemon.wait_for_turn("m-late")))
    thread.start()
    try:
        state = tmp_path / "coordinator.conf"
        deadline = time.monotonic() + 60
        while thread.is_alive() and not (state.exists() and "STATE=reboot-planned" in state.read_text()):
            assert time.monotonic() < deadline, "the daemon never planned the reboot for the next window"
            time.sleep(0.1)
    finally:
        daemon.stop.set()
        thread.join(timeout=30)
    assert outcome == [False]   # stopped while waiting for tomorrow's window: no reboot
    history = semaphore_history(etcd.endpoints, semaphore_key(group))
    assert [value.holders for value in history] == [(), ("m-late",), ()]
