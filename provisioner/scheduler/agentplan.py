"""The agent's decisions, pure: what to load, start, stop and unload, and what to keep when cut off.

`plan(desired, local)` follows fleet's agent (agent/reconcile.go calculateTasksForUnit): a unit
that should not be here is unloaded; a missing unit is loaded (and started at once when it should
be launched); a unit whose file changed is unloaded and loaded again; then start or stop to match
the desired state. Unloads and loads come first, starts and stops after, each in name order.

`units_that_cannot_move` is what a machine cut off from etcd keeps running once its lease has
surely expired: only units the engine will never place elsewhere (global units, units pinned to
this machine by MachineID, and MachineOf followers of those). Everything else is stopped then,
because the engine has moved it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from provisioner.scheduler.model import Assignment, DesiredState, Machine
from provisioner.scheduler.requirements import Requirements


class TaskKind(enum.Enum):
    UNLOAD = "unload"
    LOAD = "load"
    STOP = "stop"
    START = "start"


_ORDER = {TaskKind.UNLOAD: 0, TaskKind.LOAD: 1, TaskKind.STOP: 2, TaskKind.START: 3}


@dataclass(frozen=True)
class Task:
    kind: TaskKind
    unit: str
    unit_hash: str = ""
    reason: str = ""


@dataclass(frozen=True)
class LocalUnit:
    """What this agent has done with a unit: loaded it (with this file) and whether it started it."""

    unit_hash: str
    launched: bool


def plan(desired: Mapping[str, Assignment], local: Mapping[str, LocalUnit]) -> list[Task]:
    """The tasks that take `local` to `desired` (pure)."""
    tasks: list[Task] = []
    for unit in sorted(desired.keys() | local.keys()):
        want = desired.get(unit)
        have = local.get(unit)
        if want is None or want.target_state is DesiredState.INACTIVE:
            if have is not None:
                tasks.append(Task(TaskKind.UNLOAD, unit, reason="loaded but not scheduled here"))
            continue
        launch = want.target_state is DesiredState.LAUNCHED
        if have is not None and have.unit_hash != want.unit_hash:
            tasks.append(Task(TaskKind.UNLOAD, unit, reason="unit file changed"))
            have = None
        if have is None:
            tasks.append(Task(TaskKind.LOAD, unit, want.unit_hash, "scheduled here but not loaded"))
            if launch:
                tasks.append(Task(TaskKind.START, unit, want.unit_hash, "loaded, desired state launched"))
        elif launch and not have.launched:
            tasks.append(Task(TaskKind.START, unit, want.unit_hash, "desired state launched"))
        elif not launch and have.launched:
            tasks.append(Task(TaskKind.STOP, unit, want.unit_hash, "desired state loaded"))
    return sorted(tasks, key=lambda t: _ORDER[t.kind])


def units_that_cannot_move(desired: Mapping[str, Assignment], requirements: Mapping[str, Requirements],
                           machine: Machine) -> frozenset[str]:
    """The desired units no other machine would ever get: global, pinned here, and their MachineOf followers."""
    def pinned_here(req: Requirements) -> bool:
        return req.machine_id is not None and machine.matches_id(req.machine_id)

    keep = {unit for unit in desired
            if unit in requirements and (requirements[unit].is_global or pinned_here(requirements[unit]))}
    grew = True
    while grew:
        grew = False
        for unit in desired:
            req = requirements.get(unit)
            if unit not in keep and req is not None and req.machine_of and all(p in keep for p in req.machine_of):
                keep.add(unit)
                grew = True
    return frozenset(keep)
