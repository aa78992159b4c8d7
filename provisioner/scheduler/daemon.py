"""fleetd: the lease keeper, the agent and the engine of one machine, on threads of one process.

Machine presence, this machine's unit states and (when it leads) the engine-leader key are all bound
to one etcd lease of TTL agent_ttl (default 5 s):
- the keeper renews it every TTL/3 and, when a renewal fails, asks the next etcd member at once;
  etcd extends every lease when its own leader changes, so an etcd election does not expire it;
- a machine that dies stops renewing: etcd deletes its keys TTL seconds after the last renewal (plus
  its 0.5 s expiry tick), the engine's watch sees the machine object go and moves the units, and the
  new machine's watch on its schedule starts them: failover is about TTL + 1 s;
- a machine cut off from etcd keeps its units until last acknowledged renewal + TTL + 0.5 s, when
  the lease has surely expired at etcd (so the units have been moved), then stops the movable ones;
- engine leadership is a key created in a transaction only if absent and bound to the leader's
  lease; every engine write requires, in its transaction, that the key is still the one it created,
  so a deposed or cut-off leader cannot write; a new leader campaigns as soon as the key is deleted;
- the lease ID is kept in <runtime>/lease so that a fleetd restarted within the TTL takes its lease
  back instead of looking like a second machine with the same ID (fleet refused to start then).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from provisioner.errors import ProvisionerError
from provisioner.scheduler import etcd
from provisioner.scheduler.agent import Agent
from provisioner.scheduler.backends import UnitBackend
from provisioner.scheduler.backends.service import HostInfo
from provisioner.scheduler.config import FleetConfig, load_config, read_machine_id
from provisioner.scheduler.engine import MASS_WINDOW, Put, Remove, decide, machines_to_hold
from provisioner.scheduler.model import Backend, Machine
from provisioner.scheduler.registry import Registry, UnitFiles

log = logging.getLogger("provisioner.scheduler.fleetd")

# etcd's lessor checks for expired leases every 500 ms (lease/lessor.go): a lease can outlive its TTL by that.
EXPIRY_TICK = 0.5


class LeaseKeeper:
    """Registers the machine under a lease and keeps the lease alive; knows when it has surely expired."""

    def __init__(self, client: etcd.EtcdClient, registry: Registry, machine: Machine, ttl: float, lease_file: Path,
                 on_change):
        self.client = client
        self.registry = registry
        self.machine = machine
        self.ttl = max(1, round(ttl))
        self.lease_file = lease_file
        self.on_change = on_change
        # A slow etcd's late answer still renews the lease: give a renewal a third of the TTL (on a dead
        # member the connection is refused at once, so failover to the next member stays fast).
        self.renew_timeout = max(client.timeout, self.ttl / 3)
        self._lock = threading.Lock()
        self._lease: int | None = None
        self._granted_ttl = float(self.ttl)
        self._last_ack = 0.0
        self._expired_reported = False

    @property
    def lease(self) -> int | None:
        with self._lock:
            return self._lease

    def surely_expired(self) -> bool:
        """True once the lease cannot be alive at etcd any more, though etcd could not be asked."""
        with self._lock:
            if self._lease is None:
                return False
            return time.monotonic() > self._last_ack + self._granted_ttl + EXPIRY_TICK

    def loop(self, stopping: threading.Event) -> None:
        failures = 0
        while not stopping.is_set():
            try:
                if self.lease is None:
                    self._register()
                else:
                    self._renew()
                if failures:
                    log.warning("fleetd: etcd answers again after %d failed request(s)", failures)
                    self.on_change("reconnected")
                failures = 0
                pause = self._granted_ttl / 3
            except etcd.EtcdError as exc:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("fleetd: %s", exc)
                pause = min(0.25 * failures, self._granted_ttl / 3)
                if self.surely_expired() and not self._expired_reported:
                    self._expired_reported = True
                    self.on_change("expired")
            except ProvisionerError as exc:
                log.error("fleetd: %s", exc)
                pause = 1.0
            if stopping.wait(pause):
                return

    def _renew(self) -> None:
        with self._lock:
            lease = self._lease
        assert lease is not None
        ttl = self.client.keepalive(lease, timeout=self.renew_timeout)
        now = time.monotonic()
        if ttl <= 0:
            # etcd answers, so it can be asked what happened: register again at once and let the schedule
            # say which units are still ours (the engine may have kept them: machines_to_hold). The
            # units keep running meanwhile; those the engine moved stop when their entries go.
            log.warning("fleetd: etcd says our lease has expired: registering again")
            with self._lock:
                self._lease = None
            self.on_change("expired")
            return
        with self._lock:
            self._last_ack, self._granted_ttl = now, float(ttl)
        self._expired_reported = False

    def _register(self) -> None:
        previous = self._previous_lease()
        lease = previous or self.client.grant(self.ttl)
        # Recorded before registering: if the registration times out after etcd applied it, the next
        # attempt recognises the object bound to this lease as its own instead of as another machine's.
        self.lease_file.write_text(f"{self.machine.id} {lease}\n")
        existing = self.registry.register(self.machine, lease)
        if existing is not None and existing.lease != lease:
            if previous is None:
                self.client.revoke(lease)
            raise ProvisionerError(
                f"machine ID {self.machine.id} is already registered by another fleetd (lease {existing.lease:x}); "
                f"waiting for it to go away (two machines with one /etc/machine-id?)")
        if existing is not None:
            self.registry.refresh_machine(self.machine, lease)
            log.info("fleetd: took back lease %x (after a restart, or a registration that timed out)", lease)
        ttl = self.client.keepalive(lease)
        with self._lock:
            self._lease, self._last_ack, self._granted_ttl = lease, time.monotonic(), float(ttl)
        log.info("fleetd: machine %s registered (%s, %s backend, lease TTL %d s)", self.machine.id,
                 self.machine.public_ip or "no public IP", self.machine.backend.value, ttl)
        self.on_change("registered")

    def _previous_lease(self) -> int | None:
        """The lease of this machine's previous fleetd, if it is still alive at etcd."""
        try:
            machine_id, text = self.lease_file.read_text().split()
            lease = int(text)
        except (OSError, ValueError):
            return None
        if machine_id != self.machine.id or self.client.time_to_live(lease) <= 0:
            return None
        return lease

    def revoke(self) -> None:
        with self._lock:
            lease, self._lease = self._lease, None
        if lease is not None:
            self.client.revoke(lease)
        self.lease_file.unlink(missing_ok=True)


class EngineLoop:
    """Campaigns for leadership; while leading, decides and writes the schedule."""

    def __init__(self, client: etcd.EtcdClient, registry: Registry, machine_id: str, interval: float,
                 keeper: LeaseKeeper, watches: bool):
        self.client = client
        self.registry = registry
        self.machine_id = machine_id
        self.interval = interval
        self.keeper = keeper
        self.watches = watches
        self.files = UnitFiles()
        self.wake = threading.Event()
        self.ttl = keeper.ttl
        self.last_seen: dict[str, float] = {}
        self.held: frozenset[str] = frozenset()
        self.leader_revision: int | None = None
        self.leader_lease: int | None = None
        self._watchers: list[etcd.Watcher] = []

    def on_event(self, events: list[etcd.WatchEvent], revision: int) -> None:
        self.wake.set()

    def loop(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self.wake.wait(self.interval)
            self.wake.clear()
            if stopping.is_set():
                break
            try:
                self.run_once()
            except etcd.EtcdError as exc:
                log.warning("engine: %s", exc)
            except Exception:  # the engine must keep going whatever one pass ran into
                log.exception("engine: pass failed")
        self._stop_watches()

    def run_once(self) -> None:
        lease = self.keeper.lease
        if lease is None or self.keeper.surely_expired():
            self._lose("our lease is gone")
            return
        if self.leader_lease != lease:
            self._lose("our lease changed")
        if self.leader_revision is None:
            revision = self.registry.campaign(self.machine_id, lease)
            if revision is None:
                return
            self.leader_revision, self.leader_lease = revision, lease
            log.info("engine: this machine leads the engine")
            self._start_watches()
        view = self.registry.engine_view(self.files)
        now = time.monotonic()
        live = frozenset(view.snapshot.machines)
        self.last_seen.update(dict.fromkeys(live, now))
        hold = machines_to_hold(live, self.last_seen, now, self.ttl)
        if hold and hold != self.held:
            log.warning("engine: %d of %d machines vanished at once: their units stay put for up to %.0f s "
                        "(etcd overloaded or the network split?)", len(hold), len(hold) + len(live),
                        MASS_WINDOW * self.ttl)
        self.held = hold
        actions = decide(view.snapshot, hold)
        if not actions:
            return
        for action in actions:
            if isinstance(action, Put):
                log.info("engine: %s %s on %s: %s", action.assignment.target_state.value, action.assignment.unit,
                         action.assignment.machine, action.reason)
            elif isinstance(action, Remove):
                log.info("engine: unscheduled %s from %s: %s", action.unit, action.machine, action.reason)
        assert self.leader_revision is not None
        if not self.registry.apply(actions, self.leader_revision, view.revision, view.jobs):
            leader = self.registry.leader()
            if leader is None or leader[1].create_revision != self.leader_revision:
                self._lose("another machine leads now")
            self.wake.set()  # something changed under us: read again

    def _lose(self, why: str) -> None:
        if self.leader_revision is not None:
            log.warning("engine: no longer the leader (%s)", why)
        self.leader_revision = self.leader_lease = None
        self._stop_watches()

    def _start_watches(self) -> None:
        if not self.watches or self._watchers:
            return
        keys = self.registry.keys
        self._watchers = [etcd.Watcher(self.client.clone(), prefix, 0, self.on_event, f"watch-{name}").start()
                          for name, prefix in (("jobs", keys.jobs), ("machines", keys.machines))]

    def _stop_watches(self) -> None:
        for watcher in self._watchers:
            watcher.stop()
        self._watchers = []

    def restart_watches(self) -> None:
        for watcher in self._watchers:
            watcher.restart()

    def resign(self) -> None:
        if self.leader_revision is not None:
            self.client.txn([etcd.created_at(self.registry.keys.leader, self.leader_revision)],
                            [etcd.delete(self.registry.keys.leader)])
            self._lose("shutting down")


class Fleetd:
    """One machine: `run()` until `stop()` (or SIGTERM/SIGINT via `install_signal_handlers`).

    `make_backend(on_change)` builds the unit backend; on_change wakes the agent.
    """

    def __init__(self, config: FleetConfig, machine: Machine, make_backend: Callable[[Callable[[], None]], UnitBackend],
                 counter: etcd.RequestCounter | None = None):
        self.config = config
        self.machine = machine
        wake_agent = threading.Event()
        self.backend = make_backend(wake_agent.set)
        backend = self.backend
        client = etcd.EtcdClient(config.etcd_servers, config.etcd_request_timeout, config.etcd_tls, counter)
        self.client = client
        self.stopping = threading.Event()
        self.keeper_stopping = threading.Event()
        config.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.keeper = LeaseKeeper(client, Registry(client, config.etcd_key_prefix), machine, config.agent_ttl,
                                  config.runtime_dir / "lease", self._lease_changed)
        self.agent = Agent(Registry(client.clone(), config.etcd_key_prefix), machine, backend,
                           lambda: self.keeper.lease, self.keeper.surely_expired, wake_agent)
        # The engine reads the whole cluster: on a big one that takes longer than a single request should.
        engine_timeout = max(config.etcd_request_timeout, config.engine_reconcile_interval)
        self.engine = None if config.disable_engine else EngineLoop(
            client.clone(engine_timeout), Registry(client.clone(engine_timeout), config.etcd_key_prefix), machine.id,
            config.engine_reconcile_interval, self.keeper, not config.disable_watches)
        self._watchers: list[etcd.Watcher] = []
        self._threads: list[threading.Thread] = []

    def _lease_changed(self, what: str) -> None:
        self.agent.wake.set()
        self.agent.schedule_changed.set()
        if self.engine is not None:
            self.engine.wake.set()
        if what == "reconnected":
            for watcher in self._watchers:
                watcher.restart()  # a stream can hang silently through a partition
            if self.engine is not None:
                self.engine.restart_watches()

    def _leader_event(self, events: list[etcd.WatchEvent], revision: int) -> None:
        if self.engine is not None and any(e.kind == "DELETE" for e in events):
            self.engine.wake.set()  # campaign at once: the leader is gone

    def start(self) -> None:
        if not self.config.disable_watches:
            keys = self.agent.registry.keys
            self._watchers.append(etcd.Watcher(self.client.clone(), keys.schedule_of(self.machine.id), 0,
                                               self.agent.on_schedule_event, "watch-schedule").start())
            if self.engine is not None:
                self._watchers.append(etcd.Watcher(self.client.clone(), keys.leader, 0, self._leader_event,
                                                   "watch-leader").start())
        loops = [("lease", self.keeper.loop, self.keeper_stopping), ("agent", self.agent.loop, self.stopping)]
        if self.engine is not None:
            loops.append(("engine", self.engine.loop, self.stopping))
        for name, target, stopping in loops:
            thread = threading.Thread(target=target, args=(stopping,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def run(self) -> None:
        """Run until stop() is called (by a signal handler or another thread), then shut down cleanly."""
        self.start()
        while not self.stopping.wait(1.0):
            pass
        self.shutdown()

    def stop(self) -> None:
        self.stopping.set()
        self.agent.wake.set()
        if self.engine is not None:
            self.engine.wake.set()

    def shutdown(self) -> None:
        """fleet's shutdown: stop and unload every unit, give up leadership and the lease.

        The lease is renewed until the units have stopped: were it to expire first, the engine would
        start them elsewhere while they still run here.
        """
        self.stop()
        for thread in self._threads[1:]:  # the agent and the engine; the keeper goes on renewing
            thread.join(timeout=10)
        for watcher in self._watchers:
            watcher.stop()
        try:
            if self.engine is not None:
                self.engine.resign()
        except etcd.EtcdError as exc:
            log.warning("fleetd: could not give up engine leadership (it goes with the lease): %s", exc)
        log.info("fleetd: stopping this machine's units")
        self.backend.close()
        self.keeper_stopping.set()
        if self._threads:
            self._threads[0].join(timeout=10)
        try:
            self.keeper.revoke()
        except etcd.EtcdError as exc:
            log.warning("fleetd: could not release the lease (it expires by itself): %s", exc)
        self.client.close()

    def install_signal_handlers(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_: self.stop())


def host_info(machine_id: str) -> HostInfo:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        boot_id = ""
    return HostInfo(hostname=os.uname().nodename, machine_id=machine_id, boot_id=boot_id, kernel=os.uname().release)


def backend_factory(config: FleetConfig, machine: Machine) -> Callable[[Callable[[], None]], UnitBackend]:
    """How this machine runs units (FLEET_UNIT_BACKEND): the process backend, or systemd via node/systemd.py."""
    if config.unit_backend is Backend.PROCESS:
        from provisioner.scheduler.backends.process import ProcessBackend

        return lambda on_change: ProcessBackend(config.runtime_dir, host_info(machine.id), on_change)
    from provisioner.node.systemd import Systemctl
    from provisioner.scheduler.backends.systemd import SystemdBackend

    return lambda on_change: SystemdBackend(Systemctl(user=config.systemd_user), config.units_directory, on_change)


def run_fleetd(environ: Mapping[str, str], config_file: str | None = None) -> None:
    """`provisioner fleetd`: configure from fleet.conf and FLEET_*, run until SIGTERM/SIGINT.

    Raises ConfigError for a bad setting or machine ID.
    """
    config = load_config(environ, config_file)
    machine = config.machine(read_machine_id(config.machine_id_file))
    fleetd = Fleetd(config, machine, backend_factory(config, machine))
    fleetd.install_signal_handlers()
    fleetd.run()
