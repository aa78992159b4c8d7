"""The engine's decision: where every unit should run, as a pure function of the cluster's state.

`decide(snapshot)` returns the schedule entries to write and to remove. fleet's engine
(engine/reconciler.go, scheduler.go, agent/state.go) is the model; what is kept and what differs:

- Placement is fleet's least-loaded rule: machines ordered by the number of units assigned to them
  (non-global units whose target state is not inactive, plus the global units that run there), ties
  broken by machine ID; the first machine able to run the unit wins. fleet walked a Go map, so its
  order was random; here units are decided in name order, and a MachineOf follower whose peer is
  placed in the same pass is placed in that pass too.
- AbleToRun is fleet's, in fleet's order: MachineID (full or 8-character ID), MachineMetadata,
  every MachineOf peer already on the machine, Conflicts in both directions, then Replaces.
- Replaces: a unit is placed on the machine of the unit it replaces when it can run there, and the
  replaced unit moves to the least-loaded other machine able to run it (fleet only did this when
  least-loaded happened to pick that machine, and moved the replaced unit without checking it could
  run there). Circular replaces are ignored, as in fleet.
- Global units get one entry per live machine whose metadata matches and which holds no conflicting
  unit (fleet computed these in every agent; here the engine writes them, so an agent reads only its
  own entries).
- A machine whose lease expired loses the units that can run elsewhere; a unit that no live machine
  can take (pinned by MachineID, a global unit, or nowhere eligible) keeps its entry, so the machine
  finds its units in place when it comes back instead of stopping and restarting them. fleet
  unscheduled everything of a vanished machine.

Nothing here does I/O; the daemon applies the result in guarded etcd transactions.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from provisioner.scheduler.model import Assignment, DesiredState, Job, Machine
from provisioner.scheduler.requirements import Requirements, glob_match


@dataclass(frozen=True)
class ClusterSnapshot:
    jobs: Mapping[str, Job]
    machines: Mapping[str, Machine]  # live machines only
    schedule: tuple[Assignment, ...]


@dataclass(frozen=True)
class Put:
    """Create or update a schedule entry."""

    assignment: Assignment
    reason: str


@dataclass(frozen=True)
class Remove:
    """Delete the schedule entry of `unit` on `machine`."""

    unit: str
    machine: str
    reason: str


Action = Put | Remove


@dataclass(frozen=True)
class _Verdict:
    able: bool
    reason: str = ""
    replaced: str | None = None  # able, and this unit on the machine is to be moved away (Replaces)


class _Placement:
    """The working copy of the schedule while deciding (mutable, private to one decide() call).

    Conflicts are checked through counters per glob pattern and machine instead of matching every
    pair of units: with thousands of units sharing `Conflicts=web@*.service` a pairwise check made
    placement quadratic.
    """

    def __init__(self, machines: Mapping[str, Machine], requirements: dict[str, Requirements]):
        self.machines = machines
        self.requirements = requirements
        self.units_on: dict[str, set[str]] = {}
        self.where: dict[str, str] = {}  # non-global unit -> machine
        self.replace_holders: dict[str, set[str]] = {}
        self.patterns = sorted({p for req in requirements.values() for p in req.conflicts})
        self._matching: dict[str, tuple[str, ...]] = {}
        # pattern -> machine -> how many units there match the pattern / hold it in their Conflicts
        self.matched: dict[str, dict[str, int]] = {p: {} for p in self.patterns}
        self.holders: dict[str, dict[str, int]] = {p: {} for p in self.patterns}

    def matching(self, unit: str) -> tuple[str, ...]:
        """The Conflicts patterns (of any unit) that match `unit`'s name."""
        found = self._matching.get(unit)
        if found is None:
            found = self._matching[unit] = tuple(p for p in self.patterns if glob_match(p, unit))
        return found

    def place(self, unit: str, machine: str, is_global: bool = False) -> None:
        self.units_on.setdefault(machine, set()).add(unit)
        if not is_global:
            self.where[unit] = machine
        self._count(unit, machine, 1)
        if self.requirements[unit].replaces:
            self.replace_holders.setdefault(machine, set()).add(unit)

    def unplace(self, unit: str, machine: str) -> None:
        self.units_on.get(machine, set()).discard(unit)
        self.replace_holders.get(machine, set()).discard(unit)
        if self.where.get(unit) == machine:
            del self.where[unit]
        self._count(unit, machine, -1)

    def _count(self, unit: str, machine: str, step: int) -> None:
        for pattern in self.matching(unit):
            counts = self.matched[pattern]
            counts[machine] = counts.get(machine, 0) + step
        for pattern in set(self.requirements[unit].conflicts):
            counts = self.holders[pattern]
            counts[machine] = counts.get(machine, 0) + step

    def load(self, machine: str) -> int:
        return len(self.units_on.get(machine, ()))

    def blocked_everywhere(self, unit: str) -> bool:
        """A unit whose Conflicts match a unit on every live machine can go nowhere (fast path)."""
        live = len(self.machines)
        return any(sum(1 for m, n in self.matched[p].items() if n > 0 and m in self.machines) >= live
                   for p in set(self.requirements[unit].conflicts)) if live else True

    def conflicting(self, unit: str, machine_id: str) -> bool:
        here = unit in self.units_on.get(machine_id, ())
        req = self.requirements[unit]
        mine = self.matching(unit)
        for pattern in set(req.conflicts):
            if self.matched[pattern].get(machine_id, 0) - (1 if here and pattern in mine else 0) > 0:
                return True
        for pattern in mine:
            if self.holders[pattern].get(machine_id, 0) - (1 if here and pattern in req.conflicts else 0) > 0:
                return True
        return False

    def able(self, unit: str, machine_id: str) -> _Verdict:
        """fleet's AgentState.AbleToRun for `unit` on `machine_id` as currently placed."""
        req = self.requirements[unit]
        machine = self.machines[machine_id]
        if req.machine_id is not None and not machine.matches_id(req.machine_id):
            return _Verdict(False, f'agent ID "{machine.id}" does not match required "{req.machine_id}"')
        if req.metadata and not req.metadata_matches(machine.metadata_dict):
            return _Verdict(False, "local Machine metadata insufficient")
        for peer in req.machine_of:
            if self.where.get(peer) != machine_id:
                return _Verdict(False, f"required peer Unit({peer}) is not scheduled locally")
        if self.conflicting(unit, machine_id):
            other = min(o for o in self.units_on.get(machine_id, ())
                        if req.conflicts_with(unit, o, self.requirements[o]))
            return _Verdict(False, f"found conflict with locally-scheduled Unit({other})")
        return _Verdict(True, replaced=self.replaced_here(unit, req, machine_id))

    def replaced_here(self, unit: str, req: Requirements, machine_id: str) -> str | None:
        here = self.units_on.get(machine_id, set())
        candidates = here if req.replaces else self.replace_holders.get(machine_id, set())
        for other in sorted(candidates):
            if other == unit or other not in self.where:
                continue
            mine = any(glob_match(p, other) for p in req.replaces)
            theirs = any(glob_match(p, unit) for p in self.requirements[other].replaces)
            if mine != theirs:  # both ways is a circular replace: ignored, as in fleet
                return other
        return None


class _LeastLoaded:
    """Live machines ordered by (load, ID), kept current as units are placed (a heap with stale entries)."""

    def __init__(self, placement: _Placement):
        self.placement = placement
        self.heap = [(placement.load(m), m) for m in placement.machines]
        heapq.heapify(self.heap)

    def ordered(self) -> Iterable[str]:
        """Yield machines least-loaded first; the caller stops early and calls settle()."""
        popped: list[tuple[int, str]] = []
        try:
            while self.heap:
                load, machine = heapq.heappop(self.heap)
                if load != self.placement.load(machine):
                    continue  # stale: a fresher entry for this machine is in the heap
                popped.append((load, machine))
                yield machine
        finally:
            for entry in popped:
                heapq.heappush(self.heap, entry)

    def touched(self, machine: str) -> None:
        if machine in self.placement.machines:
            heapq.heappush(self.heap, (self.placement.load(machine), machine))


def decide(snapshot: ClusterSnapshot, hold: frozenset[str] = frozenset()) -> list[Action]:
    """The schedule changes that bring the cluster to where every unit should run (pure).

    Units of the vanished machines in `hold` stay where they are (see `machines_to_hold`).
    """
    jobs = snapshot.jobs
    placement = _Placement(machines=snapshot.machines,
                           requirements={name: job.requirements for name, job in jobs.items()})
    reasons: dict[tuple[str, str], str] = {}
    current: dict[tuple[str, str], Assignment] = {(a.unit, a.machine): a for a in snapshot.schedule}
    orphans: dict[str, str] = {}  # unit -> the vanished machine it was on

    for (unit, machine), _entry in sorted(current.items()):
        job = jobs.get(unit)
        if job is None:
            reasons[(unit, machine)] = "unit destroyed"
        elif job.target_state is DesiredState.INACTIVE:
            reasons[(unit, machine)] = "target state inactive"
        elif job.requirements.is_global:
            if machine not in snapshot.machines:
                placement.place(unit, machine, is_global=True)  # cannot move: kept for its machine's return
        elif unit in placement.where or unit in orphans:
            reasons[(unit, machine)] = "unit scheduled twice"
        elif machine in snapshot.machines:
            placement.place(unit, machine)
        elif machine in hold:
            placement.place(unit, machine)  # kept: its machine is probably only cut off (see machines_to_hold)
        else:
            orphans[unit] = machine
            reasons[(unit, machine)] = f"target Machine({machine}) went away"

    _check_scheduled(placement, reasons)
    _place_globals(snapshot, placement)
    _place_unscheduled(snapshot, placement, orphans, reasons)
    return _diff(jobs, placement, current, reasons)


# When at least this share of the machines vanished within MASS_WINDOW lease TTLs, the engine waits
# before moving their units: so many machines at once is far more often etcd overloaded, or a network
# split, than hardware dying together (Kubernetes' node controller stops evicting for the same reason).
MASS_SHARE = 0.5
MASS_WINDOW = 3


def machines_to_hold(live: frozenset[str], last_seen: Mapping[str, float], now: float, ttl: float) -> frozenset[str]:
    """The vanished machines whose units should not move yet (pure).

    `last_seen` maps every machine the engine has seen to when it last saw it alive. A machine gone for
    less than MASS_WINDOW x TTL counts as "recently vanished"; if those are at least MASS_SHARE of the
    machines (and more than one), they are all held. Held machines drop out of the window after it, and
    their units move then.
    """
    recent = frozenset(m for m, seen in last_seen.items() if m not in live and now - seen < MASS_WINDOW * ttl)
    if len(recent) > 1 and len(recent) >= MASS_SHARE * (len(live) + len(recent)):
        return recent
    return frozenset()


def _check_scheduled(placement: _Placement, reasons: dict[tuple[str, str], str]) -> None:
    """fleet's first pass: drop units their machine can no longer run; move units a newcomer replaces.

    Repeated while something changed (a moved unit can leave a MachineOf follower behind), bounded so
    that no combination of Replaces can keep it going.
    """
    for _round in range(8):
        changed = False
        for unit, machine in sorted(placement.where.items()):
            if placement.where.get(unit) != machine or machine not in placement.machines:
                continue  # moved meanwhile, or kept on a vanished machine
            verdict = placement.able(unit, machine)
            if not verdict.able:
                placement.unplace(unit, machine)
                reasons[(unit, machine)] = f"target Machine({machine}) unable to run unit: {verdict.reason}"
                changed = True
            elif verdict.replaced is not None and _move_replaced(placement, verdict.replaced, machine, reasons):
                changed = True
        if not changed:
            return


def _move_replaced(placement: _Placement, replaced: str, machine: str,
                   reasons: dict[tuple[str, str], str]) -> bool:
    """Move `replaced` off `machine` to the least-loaded other machine able to run it; False if none."""
    placement.unplace(replaced, machine)
    for other in sorted(placement.machines, key=lambda m: (placement.load(m), m)):
        if other != machine and placement.able(replaced, other).able and not _replacer_on(placement, other, replaced):
            placement.place(replaced, other)
            reasons[(replaced, machine)] = f"replaced on Machine({machine})"
            return True
    placement.place(replaced, machine)
    return False


def _replacer_on(placement: _Placement, machine: str, replaced: str) -> bool:
    """Does a unit on `machine` replace `replaced` (so moving it there would only move it again)?"""
    return any(placement.replaced_here(unit, placement.requirements[unit], machine) == replaced
               for unit in placement.replace_holders.get(machine, set()) if placement.where.get(unit) == machine)


def _place_globals(snapshot: ClusterSnapshot, placement: _Placement) -> None:
    for name, job in sorted(snapshot.jobs.items()):
        if not job.requirements.is_global or job.target_state is DesiredState.INACTIVE:
            continue
        for machine_id, machine in sorted(snapshot.machines.items()):
            if not job.requirements.metadata_matches(machine.metadata_dict):
                continue
            here = placement.units_on.get(machine_id, set())
            if any(job.requirements.conflicts_with(name, other, placement.requirements[other]) for other in here):
                continue
            placement.place(name, machine_id, is_global=True)


def _candidates(placement: _Placement, order: _LeastLoaded, unit: str) -> Iterable[str]:
    req = placement.requirements[unit]
    live = placement.machines
    wanted = req.machine_id
    if wanted is not None:
        return sorted(m for m in live if live[m].matches_id(wanted))
    if req.machine_of:
        host = placement.where.get(req.machine_of[0])
        return [host] if host is not None and host in live else []
    if req.replaces:
        # The machines holding a unit this one replaces come first (least loaded of them first).
        hosts = sorted({m for other, m in placement.where.items() if m in live
                        and any(glob_match(p, other) for p in req.replaces)},
                       key=lambda m: (placement.load(m), m))
        return [*hosts, *(m for m in order.ordered() if m not in hosts)]
    return order.ordered()


def _place_unscheduled(snapshot: ClusterSnapshot, placement: _Placement, orphans: dict[str, str],
                       reasons: dict[tuple[str, str], str]) -> None:
    """fleet's second pass: place every unit that should run and has no machine, least loaded first."""
    order = _LeastLoaded(placement)
    pending = sorted(name for name, job in snapshot.jobs.items()
                     if not job.requirements.is_global and job.target_state is not DesiredState.INACTIVE
                     and name not in placement.where)
    while pending:
        # Only a MachineOf follower can become placeable later in the pass (its peer got placed).
        waiting = [unit for unit in pending if not _place_one(placement, order, unit, reasons)
                   and placement.requirements[unit].machine_of]
        if len(waiting) == len(pending):
            break
        pending = waiting
    for unit, machine in orphans.items():
        if unit not in placement.where:
            placement.place(unit, machine)  # nowhere else to go: it waits for its machine


def _place_one(placement: _Placement, order: _LeastLoaded, unit: str, reasons: dict[tuple[str, str], str]) -> bool:
    if placement.requirements[unit].conflicts and placement.blocked_everywhere(unit):
        return False
    chosen: str | None = None
    verdict = _Verdict(False)
    candidates = iter(_candidates(placement, order, unit))
    try:
        for machine in candidates:
            verdict = placement.able(unit, machine)
            if verdict.able:
                chosen = machine
                break
    finally:
        close = getattr(candidates, "close", None)
        if close is not None:
            close()  # a lazy least-loaded walk puts the machines it popped back into its heap
    if chosen is None:
        return False
    placement.place(unit, chosen)
    if verdict.replaced is not None and _move_replaced(placement, verdict.replaced, chosen, reasons):
        order.touched(placement.where[verdict.replaced])
    order.touched(chosen)
    return True


def _diff(jobs: Mapping[str, Job], placement: _Placement, current: dict[tuple[str, str], Assignment],
          reasons: dict[tuple[str, str], str]) -> list[Action]:
    wanted: dict[tuple[str, str], Assignment] = {}
    for machine, units in placement.units_on.items():
        for unit in units:
            job = jobs[unit]
            wanted[(unit, machine)] = Assignment(unit, machine, job.unit_hash, job.target_state)
    actions: list[Action] = []
    for key in sorted(current.keys() - wanted.keys()):
        actions.append(Remove(key[0], key[1], reasons.get(key, "no longer scheduled here")))
    for key in sorted(wanted):
        entry = wanted[key]
        before = current.get(key)
        if before is None:
            actions.append(Put(entry, f"target state {entry.target_state.value} and unit not scheduled"))
        elif before != entry:
            actions.append(Put(entry, "unit file or target state changed"))
    return actions
