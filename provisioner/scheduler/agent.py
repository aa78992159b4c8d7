"""The agent: makes this machine run what the schedule says, and publishes what its units do.

Each pass reads `schedule/<this machine>/` (one range request, on a watch event or every 5 s as
fleet's agent did), plans with agentplan.plan, hands the tasks to the unit backend, and publishes
changed unit states bound to the machine's lease. A change reported by the backend (a unit started,
exited, restarted) only publishes; it does not re-read the schedule.

Cut off from etcd, the agent keeps everything running: a hiccup shorter than the lease TTL changes
nothing. Once the lease has surely expired (the keeper says so: last acknowledged keepalive + TTL +
etcd's expiry tick), the engine elsewhere has moved this machine's units, so the agent stops the ones
that can move (agentplan.units_that_cannot_move keeps the others) and waits for etcd to come back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from provisioner.errors import ProvisionerError
from provisioner.scheduler import etcd
from provisioner.scheduler.agentplan import LocalUnit, Task, TaskKind, plan, units_that_cannot_move
from provisioner.scheduler.backends import UnitBackend
from provisioner.scheduler.model import Assignment, DesiredState, Machine, PublishedState, UnitStatus
from provisioner.scheduler.registry import Registry, UnitFiles

log = logging.getLogger("provisioner.scheduler.agent")

AGENT_INTERVAL = 5.0
# After a wake-up, what else arrives within this time is handled in the same pass: a unit start
# changes its state three or four times in a few milliseconds, and a schedule write touches many units.
COALESCE = 0.05


class Agent:
    """One machine's agent; `run_once` is one pass, `loop` runs passes until `stopping` is set."""

    def __init__(self, registry: Registry, machine: Machine, backend: UnitBackend, lease: Callable[[], int | None],
                 cut_off: Callable[[], bool], wake: threading.Event | None = None):
        self.registry = registry
        self.machine = machine
        self.backend = backend
        self.lease = lease
        self.cut_off = cut_off
        self.files = UnitFiles()
        self.wake = wake or threading.Event()
        self.schedule_changed = threading.Event()
        self.schedule_changed.set()
        self.desired: dict[str, Assignment] = {}
        self.local: dict[str, LocalUnit] = {
            name: LocalUnit(unit.unit_hash, unit.active) for name, unit in backend.existing().items()}
        self.published: dict[str, PublishedState] = {}
        self.published_lease: int | None = None
        self.stopped_for_cut_off = False

    def on_schedule_event(self, events: list[etcd.WatchEvent], revision: int) -> None:
        self.schedule_changed.set()
        self.wake.set()

    def loop(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self.wake.wait(AGENT_INTERVAL)
            if stopping.is_set():
                return
            periodic = not self.wake.is_set()
            if not periodic:
                stopping.wait(COALESCE)
            self.wake.clear()
            if periodic:
                self.schedule_changed.set()
            try:
                self.run_once()
            except etcd.EtcdError as exc:
                log.warning("agent: %s", exc)
            except ProvisionerError as exc:
                log.error("agent: %s", exc)
            except Exception:  # the agent must keep going whatever one pass ran into
                log.exception("agent: pass failed")

    def run_once(self) -> None:
        if self.cut_off():
            self._stop_movable_units()
            return
        lease = self.lease()
        if lease is None:
            return
        if self.schedule_changed.is_set():
            self.schedule_changed.clear()
            entries, revision = self.registry.schedule(machine=self.machine.id)
            self.files.fetch(self.registry.client, self.registry.keys, (e.unit_hash for e in entries), revision)
            self.desired = {e.unit: e for e in entries if self.files.get(e.unit_hash) is not None}
            self.stopped_for_cut_off = False
        for task in plan(self.desired, self.local):
            self._do(task)
        self._publish(lease)

    def _do(self, task: Task) -> None:
        log.info("agent: %s %s (%s)", task.kind.value, task.unit, task.reason)
        if task.kind is TaskKind.UNLOAD:
            self.backend.unload(task.unit)
            self.local.pop(task.unit, None)
        elif task.kind is TaskKind.LOAD:
            unit = self.files.get(task.unit_hash)
            if unit is None:
                return
            self.backend.load(task.unit, unit)
            self.local[task.unit] = LocalUnit(task.unit_hash, launched=False)
        elif task.kind is TaskKind.START:
            self.backend.start(task.unit)
            self.local[task.unit] = LocalUnit(task.unit_hash, launched=True)
        elif task.kind is TaskKind.STOP:
            self.backend.stop(task.unit)
            self.local[task.unit] = LocalUnit(task.unit_hash, launched=False)

    def _stop_movable_units(self) -> None:
        if self.stopped_for_cut_off:
            return
        requirements = {name: req for name, entry in self.desired.items()
                        if (req := self.files.requirements(entry.unit_hash, name)) is not None}
        keep = units_that_cannot_move(self.desired, requirements, self.machine)
        moved = sorted(set(self.local) - keep)
        if moved:
            log.warning("agent: lease surely expired while cut off from etcd: stopping %d unit(s) the engine has "
                        "moved (%s); keeping %d that cannot move", len(moved), ", ".join(moved), len(keep))
        for unit in moved:
            self.backend.unload(unit)
            self.local.pop(unit, None)
        self.desired = {name: entry for name, entry in self.desired.items() if name in keep}
        self.stopped_for_cut_off = True
        self.schedule_changed.set()  # read it again as soon as etcd answers

    def _publish(self, lease: int) -> None:
        if lease != self.published_lease:
            self.published.clear()  # a new lease: everything bound to the old one is gone
            self.published_lease = lease
        statuses = self.backend.statuses()
        changed: list[PublishedState] = []
        for unit, local in self.local.items():
            state = PublishedState(unit, self.machine.id, statuses.get(unit, UnitStatus("loaded", "inactive", "dead")),
                                   local.unit_hash, DesiredState.LAUNCHED if local.launched else DesiredState.LOADED)
            if self.published.get(unit) != state:
                changed.append(state)
        gone = sorted(set(self.published) - set(self.local))
        if changed or gone:
            self.registry.publish(self.machine, lease, changed, gone)
            for state in changed:
                self.published[state.unit] = state
            for unit in gone:
                del self.published[unit]
