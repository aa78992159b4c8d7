"""`provisioner node locksmithd`: reboot the machine after an update, as the strategy allows.

locksmithd's loop (coreos/locksmith locksmithctl/daemon.go), with two changes where its users suffered:
- a machine that holds the lock from its last update releases it only once the slot it booted is
  marked successful (provisioner-boot-success.service marks it when the node is healthy), where
  locksmithd released it seconds after start, healthy or not: with the default semaphore, a broken
  update stops at the first machine instead of rolling through the cluster;
- a lock taken late is checked against the reboot window again, and given back if the window has closed
  meanwhile (LS-fl v0.7.0), so a machine never reboots outside its window.

The trigger is the update agent's marker /run/update_engine_autoupdate_completed (tmpfs: gone after the
reboot), where locksmithd listened for update_engine's D-Bus UPDATED_NEED_REBOOT. Lock attempts that
fail (no slot free, etcd unreachable) are retried after 5 s, doubling to 5 min. The state is written to
/run/update-engine/coordinator.conf (NAME, STRATEGY, STATE) as locksmithd did.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioner.cloudconfig.model import RebootStrategy
from provisioner.core.commands import run
from provisioner.errors import ConfigError, ProvisionerError
from provisioner.node.update.rebootlock import HolderExists, LockError, NotHolder, RebootLock
from provisioner.node.update.strategy import RebootSettings
from provisioner.scheduler.config import read_machine_id
from provisioner.scheduler.etcd import EtcdClient, EtcdError

log = logging.getLogger("provisioner.node.update.locksmithd")

MARKER = "/run/update_engine_autoupdate_completed"
COORDINATOR_CONF = "/run/update-engine/coordinator.conf"
REBOOT_COMMAND = ("systemctl", "reboot")


@dataclass(frozen=True)
class DaemonOptions:
    machine_id_file: str = "/etc/machine-id"
    marker: str = MARKER
    reboot_command: tuple[str, ...] = REBOOT_COMMAND
    coordinator_conf: str = COORDINATOR_CONF
    retry_initial: float = 5.0
    retry_max: float = 300.0
    poll: float = 2.0       # how often the marker and the slot's success bit are looked at


def coordinator_conf(strategy: RebootStrategy, state: str) -> str:
    """locksmithd's /run/update-engine/coordinator.conf (pure)."""
    return f"NAME=locksmithd\nSTRATEGY={strategy.value}\nSTATE={state}\n"


def backoff(initial: float, maximum: float) -> Callable[[], float]:
    """Successive retry delays: initial, doubled each time, capped at maximum."""
    delay = [initial / 2]

    def step() -> float:
        delay[0] = min(delay[0] * 2, maximum)
        return delay[0]

    return step


class Locksmithd:
    """One machine's reboot coordinator. `slot_successful` says whether the booted slot is marked
    successful; `etcd_active` whether the local etcd member runs (best-effort); `now` the local time."""

    def __init__(self, settings: RebootSettings, options: DaemonOptions, slot_successful: Callable[[], bool],
                 etcd_active: Callable[[], bool], now: Callable[[], dt.datetime] = dt.datetime.now):
        self.settings = settings
        self.options = options
        self.slot_successful = slot_successful
        self.etcd_active = etcd_active
        self.now = now
        self.stop = threading.Event()

    def lock(self) -> RebootLock:
        client = EtcdClient(self.settings.endpoints, timeout=2.0, tls=self.settings.tls)
        return RebootLock(client, self.settings.group)

    def set_state(self, state: str) -> None:
        path = Path(self.options.coordinator_conf)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.with_name(path.name + ".tmp")
            scratch.write_text(coordinator_conf(self.settings.strategy, state))
            os.replace(scratch, path)
        except OSError as exc:
            log.warning("%s: cannot write the state: %s", path, exc.strerror)
        log.info("state: %s", state)

    def run(self) -> int:
        """Until the reboot is issued (then wait to be stopped). Raises ConfigError, CommandError."""
        strategy = self.settings.strategy
        if strategy is RebootStrategy.OFF:
            log.info("reboot strategy is off: nothing to do")
            return 0
        machine_id = read_machine_id(self.options.machine_id_file)
        self.set_state("starting")
        # best-effort without a local etcd member: no lock could have been taken, and etcd is not there to ask.
        if strategy is RebootStrategy.ETCD_LOCK or (strategy is RebootStrategy.BEST_EFFORT and self.etcd_active()):
            self.release_when_healthy(machine_id)
        self.set_state("running")
        marker = Path(self.options.marker)
        log.info("waiting for %s (the update agent's 'reboot needed')", marker)
        while not marker.exists():
            if self.stop.wait(self.options.poll):
                return 0
        log.info("%s: %s is installed; rebooting per strategy %s", marker,
                 marker.read_text(errors="replace").strip() or "an update", strategy.value)
        locked = strategy is RebootStrategy.ETCD_LOCK or (strategy is RebootStrategy.BEST_EFFORT and
                                                          self.etcd_active())
        if not self.reboot_slot(machine_id if locked else None):
            return 0
        self.set_state("rebooting")
        run(list(self.options.reboot_command), capture=False)
        # The machine is going down: systemd stops this service.
        self.stop.wait()
        return 0

    def release_when_healthy(self, machine_id: str) -> None:
        """Give back the lock this machine took for its last reboot, once the booted slot is marked
        successful. Waits (and retries etcd) until then: a machine that never becomes healthy keeps it."""
        next_delay = backoff(self.options.retry_initial, self.options.retry_max)
        lock = self.lock()
        announced = False
        while not self.stop.is_set():
            try:
                if machine_id not in lock.status().holders:
                    return
                if not self.slot_successful():
                    if not announced:
                        log.info("holding the reboot lock: released once the booted slot is marked successful")
                        announced = True
                    self.stop.wait(self.options.poll)
                    continue
                lock.unlock(machine_id)
                log.info("booted slot is marked successful: reboot lock released")
                return
            except NotHolder:
                return
            except ProvisionerError as exc:   # etcd, the semaphore's value, the slot's disk
                delay = next_delay()
                log.warning("releasing the reboot lock: %s (again in %g s)", exc, delay)
                self.stop.wait(delay)

    def wait_for_window(self) -> bool:
        """Sleep until the reboot window opens; False when stopped meanwhile."""
        window = self.settings.window
        if window is None:
            return True
        seconds = window.seconds_until_open(self.now())
        if seconds > 0:
            log.info("reboot window opens in %.0f s", seconds)
            self.set_state("reboot-planned")
        while seconds > 0:
            if self.stop.wait(min(seconds, 60.0)):
                return False
            seconds = window.seconds_until_open(self.now())
        return True

    def reboot_slot(self, machine_id: str | None) -> bool:
        """Wait for the window and (with an ID) the lock; True when the reboot may go ahead now."""
        next_delay = backoff(self.options.retry_initial, self.options.retry_max)
        lock = self.lock() if machine_id else None
        while not self.stop.is_set():
            if not self.wait_for_window():
                return False
            if lock is None or machine_id is None:
                return True
            try:
                lock.lock(machine_id)
                log.info("reboot lock taken (%s)", lock.key)
            except HolderExists:
                log.info("this machine already holds the reboot lock")
            except (EtcdError, LockError) as exc:
                delay = next_delay()
                log.info("reboot lock: %s (again in %g s)", exc, delay)
                self.stop.wait(delay)
                continue
            window = self.settings.window
            if window is not None and not window.is_open(self.now()):
                log.info("the reboot window closed while waiting for the lock: lock given back")
                self.give_back(lock, machine_id)
                continue
            return True
        return False

    def give_back(self, lock: RebootLock, machine_id: str) -> None:
        try:
            lock.unlock(machine_id)
        except NotHolder:
            pass


def parse_command(text: str, where: str) -> Sequence[str]:
    """A reboot command line split like a shell would (no shell runs it). Raises ConfigError."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not argv:
        raise ConfigError(f"{where}: empty command")
    return argv
