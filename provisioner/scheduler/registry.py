"""The scheduler's state in etcd: key layout, parsing at the boundary, guarded writes.

Keys live under fleet's prefix (`/_coreos.com/fleet/`, FLEET_ETCD_KEY_PREFIX) with fleet's names
where fleet had the same thing, so `etcdctl get --prefix /_coreos.com/fleet/` reads familiar:

| key | value | written by | bound to |
|---|---|---|---|
| unit/<sha1> | {"Raw": unit file} | fleetctl | - |
| job/<name>/object | {"Name", "UnitHash": hex} | fleetctl | - |
| job/<name>/target-state | inactive / loaded / launched | fleetctl | - |
| schedule/<machine>/<name> | {"UnitHash", "TargetState"} | engine leader | - |
| machines/<id>/object | {"ID", "PublicIP", "Metadata", "Backend", "RuntimeDirectory", ...} | agent | lease |
| states/<name>/<machine> | {"loadState", "activeState", "subState", "unitHash", "jobState", ...} | agent | lease |
| lease/engine-leader | {"MachineID", "Version"} | engine | the leader's machine lease |

Differences from fleet's v2 layout: TTL keys became keys bound to one lease per machine (presence,
unit states and engine leadership expire together); fleet's `job/<name>/target` became
`schedule/<machine>/<name>` so an agent reads and watches only its own entries (fleet's agents all
re-read every job on every change, its documented scaling limit); the schedule entry carries the
target state, and global units get an entry per machine, so the agent needs nothing else.

Values read from etcd are parsed here into model.py's frozen types; a malformed value (someone
wrote it by hand) is logged with its key and skipped, never allowed to stop the daemon.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provisioner import __version__
from provisioner.errors import ConfigError
from provisioner.scheduler import etcd
from provisioner.scheduler.engine import Action, ClusterSnapshot, Put, Remove
from provisioner.scheduler.model import (
    Assignment,
    Backend,
    DesiredState,
    Job,
    Machine,
    PublishedState,
    UnitStatus,
)
from provisioner.scheduler.requirements import Requirements, requirements_of
from provisioner.scheduler.unitfile import UnitFile

log = logging.getLogger("provisioner.scheduler.registry")

DEFAULT_PREFIX = "/_coreos.com/fleet/"
LEADER_VERSION = 1
# etcd refuses a txn with more than 128 operations or compares (--max-txn-ops).
BATCH = 120


class Keys:
    """Where each thing lives under the prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX):
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"

    def unit(self, unit_hash: str) -> str:
        return f"{self.prefix}unit/{unit_hash}"

    @property
    def units(self) -> str:
        return f"{self.prefix}unit/"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}job/"

    def job(self, name: str) -> str:
        return f"{self.prefix}job/{name}/"

    def job_object(self, name: str) -> str:
        return f"{self.job(name)}object"

    def target_state(self, name: str) -> str:
        return f"{self.job(name)}target-state"

    @property
    def schedule_all(self) -> str:
        return f"{self.prefix}schedule/"

    def schedule_of(self, machine: str) -> str:
        return f"{self.prefix}schedule/{machine}/"

    def schedule(self, machine: str, unit: str) -> str:
        return f"{self.schedule_of(machine)}{unit}"

    @property
    def machines(self) -> str:
        return f"{self.prefix}machines/"

    def machine(self, machine: str) -> str:
        return f"{self.prefix}machines/{machine}/object"

    @property
    def states(self) -> str:
        return f"{self.prefix}states/"

    def state(self, unit: str, machine: str) -> str:
        return f"{self.prefix}states/{unit}/{machine}"

    @property
    def leader(self) -> str:
        return f"{self.prefix}lease/engine-leader"

    def relative(self, key: str, section: str) -> list[str]:
        """'<prefix>job/a.service/object', 'job/' -> ['a.service', 'object']."""
        return key[len(self.prefix) + len(section):].split("/")


def _json(kv: etcd.KeyValue) -> dict[str, Any] | None:
    try:
        value = json.loads(kv.value)
    except ValueError:
        log.warning("etcd key %s: not JSON, ignored: %r", kv.key, kv.value[:80])
        return None
    if not isinstance(value, dict):
        log.warning("etcd key %s: not a JSON object, ignored", kv.key)
        return None
    return value


def _desired(kv: etcd.KeyValue) -> DesiredState | None:
    try:
        return DesiredState(kv.value)
    except ValueError:
        log.warning("etcd key %s: %r is not inactive, loaded or launched; ignored", kv.key, kv.value)
        return None


def machine_from(kv: etcd.KeyValue) -> Machine | None:
    value = _json(kv)
    if value is None:
        return None
    try:
        metadata = value.get("Metadata") or {}
        return Machine(id=str(value["ID"]), public_ip=str(value.get("PublicIP", "")),
                       metadata=tuple(sorted((str(k), str(v)) for k, v in metadata.items())),
                       backend=Backend(value.get("Backend", "systemd")),
                       runtime_dir=str(value.get("RuntimeDirectory", "/run/fleet")))
    except (KeyError, ValueError, AttributeError) as exc:
        log.warning("etcd key %s: malformed machine object (%s); ignored", kv.key, exc)
        return None


def machine_value(machine: Machine) -> str:
    return json.dumps({"ID": machine.id, "PublicIP": machine.public_ip, "Metadata": machine.metadata_dict,
                       "Backend": machine.backend.value, "RuntimeDirectory": machine.runtime_dir,
                       "Version": __version__}, sort_keys=True)


def _assignment(keys: Keys, kv: etcd.KeyValue) -> Assignment | None:
    parts = keys.relative(kv.key, "schedule/")
    value = _json(kv)
    if value is None or len(parts) != 2:
        return None
    try:
        return Assignment(parts[1], parts[0], str(value["UnitHash"]), DesiredState(value["TargetState"]))
    except (KeyError, ValueError) as exc:
        log.warning("etcd key %s: malformed schedule entry (%s); ignored", kv.key, exc)
        return None


def assignment_value(assignment: Assignment) -> str:
    return json.dumps({"UnitHash": assignment.unit_hash, "TargetState": assignment.target_state.value},
                      sort_keys=True)


def _published(keys: Keys, kv: etcd.KeyValue) -> PublishedState | None:
    parts = keys.relative(kv.key, "states/")
    value = _json(kv)
    if value is None or len(parts) != 2:
        return None
    try:
        return PublishedState(unit=parts[0], machine=parts[1],
                              status=UnitStatus(str(value["loadState"]), str(value["activeState"]),
                                                str(value["subState"])),
                              unit_hash=str(value.get("unitHash", "")),
                              job_state=DesiredState(value.get("jobState", "loaded")))
    except (KeyError, ValueError) as exc:
        log.warning("etcd key %s: malformed unit state (%s); ignored", kv.key, exc)
        return None


def published_value(state: PublishedState, machine: Machine) -> str:
    return json.dumps({"loadState": state.status.load, "activeState": state.status.active,
                       "subState": state.status.sub, "unitHash": state.unit_hash, "jobState": state.job_state.value,
                       "machineState": {"ID": machine.id, "PublicIP": machine.public_ip,
                                        "Metadata": machine.metadata_dict}}, sort_keys=True)


def unit_value(unit: UnitFile) -> str:
    return json.dumps({"Raw": unit.serialize()})


def _unit_from(kv: etcd.KeyValue) -> UnitFile | None:
    value = _json(kv)
    try:
        return UnitFile.parse(str(value["Raw"]), kv.key) if value is not None else None
    except (KeyError, ConfigError) as exc:
        log.warning("etcd key %s: malformed unit (%s); ignored", kv.key, exc)
        return None


@dataclass(frozen=True)
class JobRecord:
    """A submitted unit as stored: name, file hash and desired state (with their key revisions)."""

    name: str
    unit_hash: str
    desired: DesiredState
    object_revision: int
    state_revision: int


@dataclass(frozen=True)
class EngineView:
    """What the engine decides on, and the revisions its writes are guarded with."""

    snapshot: ClusterSnapshot
    jobs: Mapping[str, JobRecord]
    revision: int


@dataclass(frozen=True)
class ClusterView:
    """Everything fleetctl lists, read at one revision."""

    jobs: Mapping[str, JobRecord]
    units: Mapping[str, UnitFile]  # by hash
    machines: Mapping[str, Machine]
    schedule: tuple[Assignment, ...]
    states: tuple[PublishedState, ...]
    revision: int

    def unit_of(self, name: str) -> UnitFile | None:
        job = self.jobs.get(name)
        return self.units.get(job.unit_hash) if job else None

    def requirements(self, name: str) -> Requirements:
        unit = self.unit_of(name)
        return requirements_of(unit, name) if unit is not None else Requirements()

    def target_of(self, name: str) -> str | None:
        """The machine a non-global unit is scheduled to (None: unscheduled)."""
        return next((a.machine for a in self.schedule if a.unit == name), None)

    def current_state(self, name: str) -> DesiredState:
        """fleet's job state: inactive unless the target machine reports it; launched once started there."""
        target = self.target_of(name)
        if target is None:
            return DesiredState.INACTIVE
        state = next((s for s in self.states if s.unit == name and s.machine == target), None)
        return DesiredState.INACTIVE if state is None else state.job_state


class UnitFiles:
    """Unit files by hash, fetched once (a hash names immutable content)."""

    def __init__(self) -> None:
        self._files: dict[str, UnitFile] = {}
        self._requirements: dict[tuple[str, str], Requirements] = {}

    def get(self, unit_hash: str) -> UnitFile | None:
        return self._files.get(unit_hash)

    def fetch(self, client: etcd.EtcdClient, keys: Keys, hashes: Iterable[str], revision: int = 0) -> None:
        """Load the files of `hashes` not yet known: one range when many are missing, else one get each."""
        missing = sorted({h for h in hashes if h not in self._files})
        if not missing:
            return
        if len(missing) > 16:
            kvs: Iterable[etcd.KeyValue] = client.range(keys.units, prefix=True, revision=revision).kvs
        else:
            kvs = [kv for h in missing for kv in client.range(keys.unit(h), revision=revision).kvs]
        for kv in kvs:
            unit = _unit_from(kv)
            if unit is not None:
                self._files[kv.key.rsplit("/", 1)[-1]] = unit

    def requirements(self, unit_hash: str, name: str) -> Requirements | None:
        key = (unit_hash, name)
        found = self._requirements.get(key)
        if found is None:
            unit = self._files.get(unit_hash)
            if unit is None:
                return None
            found = self._requirements[key] = requirements_of(unit, name)
        return found


class Registry:
    """Typed reads and guarded writes of the scheduler's keys (one instance per thread)."""

    def __init__(self, client: etcd.EtcdClient, prefix: str = DEFAULT_PREFIX):
        self.client = client
        self.keys = Keys(prefix)

    # -- reads ------------------------------------------------------------------------------------

    def _jobs(self, revision: int) -> tuple[dict[str, JobRecord], int]:
        result = self.client.range(self.keys.jobs, prefix=True, revision=revision)
        objects: dict[str, tuple[str, int]] = {}
        states: dict[str, tuple[DesiredState, int]] = {}
        for kv in result.kvs:
            parts = self.keys.relative(kv.key, "job/")
            if len(parts) != 2:
                continue
            name, leaf = parts
            if leaf == "object":
                value = _json(kv)
                if value is not None and isinstance(value.get("UnitHash"), str):
                    objects[name] = (value["UnitHash"], kv.mod_revision)
            elif leaf == "target-state":
                desired = _desired(kv)
                if desired is not None:
                    states[name] = (desired, kv.mod_revision)
        jobs = {name: JobRecord(name, unit_hash, states.get(name, (DesiredState.INACTIVE, 0))[0], revision_,
                                states.get(name, (DesiredState.INACTIVE, 0))[1])
                for name, (unit_hash, revision_) in objects.items()}
        return jobs, result.revision

    def machines(self, revision: int = 0) -> dict[str, Machine]:
        found: dict[str, Machine] = {}
        for kv in self.client.range(self.keys.machines, prefix=True, revision=revision).kvs:
            parts = self.keys.relative(kv.key, "machines/")
            if len(parts) == 2 and parts[1] == "object":
                machine = machine_from(kv)
                if machine is not None and machine.id == parts[0]:
                    found[machine.id] = machine
        return found

    def schedule(self, revision: int = 0, machine: str | None = None) -> tuple[tuple[Assignment, ...], int]:
        prefix = self.keys.schedule_of(machine) if machine else self.keys.schedule_all
        result = self.client.range(prefix, prefix=True, revision=revision)
        entries = tuple(a for a in (_assignment(self.keys, kv) for kv in result.kvs) if a is not None)
        return entries, result.revision

    def states(self, revision: int = 0) -> tuple[PublishedState, ...]:
        kvs = self.client.range(self.keys.states, prefix=True, revision=revision).kvs
        return tuple(s for s in (_published(self.keys, kv) for kv in kvs) if s is not None)

    def engine_view(self, files: UnitFiles) -> EngineView:
        """Jobs, live machines and the schedule, all at one revision."""
        records, revision = self._jobs(0)
        machines = self.machines(revision)
        schedule, _ = self.schedule(revision)
        files.fetch(self.client, self.keys, (r.unit_hash for r in records.values()), revision)
        jobs: dict[str, Job] = {}
        for name, record in records.items():
            requirements = files.requirements(record.unit_hash, name)
            if requirements is None:
                log.warning("unit %s: its file %s is missing from etcd; not scheduled", name, record.unit_hash)
                continue
            jobs[name] = Job(name, record.unit_hash, record.desired, requirements)
        return EngineView(ClusterSnapshot(jobs, machines, schedule), records, revision)

    def cluster_view(self) -> ClusterView:
        records, revision = self._jobs(0)
        files = UnitFiles()
        files.fetch(self.client, self.keys, (r.unit_hash for r in records.values()), revision)
        units = {r.unit_hash: f for r in records.values() if (f := files.get(r.unit_hash)) is not None}
        schedule, _ = self.schedule(revision)
        return ClusterView(records, units, self.machines(revision), schedule, self.states(revision), revision)

    def job(self, name: str) -> tuple[JobRecord, UnitFile] | None:
        """One unit and its file, or None when it was never submitted (or was destroyed)."""
        result = self.client.range(self.keys.job(name), prefix=True)
        unit_hash, desired, object_revision, state_revision = None, DesiredState.INACTIVE, 0, 0
        for kv in result.kvs:
            if kv.key == self.keys.job_object(name):
                value = _json(kv)
                unit_hash = value.get("UnitHash") if value else None
                object_revision = kv.mod_revision
            elif kv.key == self.keys.target_state(name):
                desired = _desired(kv) or DesiredState.INACTIVE
                state_revision = kv.mod_revision
        if not isinstance(unit_hash, str):
            return None
        unit_kv = self.client.get(self.keys.unit(unit_hash))
        unit = _unit_from(unit_kv) if unit_kv is not None else None
        if unit is None:
            return None
        return JobRecord(name, unit_hash, desired, object_revision, state_revision), unit

    # -- the engine -------------------------------------------------------------------------------

    def leader(self) -> tuple[str, etcd.KeyValue] | None:
        """(machine ID, key) of the current engine leader, if any."""
        kv = self.client.get(self.keys.leader)
        if kv is None:
            return None
        value = _json(kv)
        return (str(value.get("MachineID", "")), kv) if value else None

    def campaign(self, machine_id: str, lease: int) -> int | None:
        """Become engine leader if nobody is; returns the leader key's create revision when we lead."""
        value = json.dumps({"MachineID": machine_id, "Version": LEADER_VERSION})
        result = self.client.txn([etcd.absent(self.keys.leader)], [etcd.put(self.keys.leader, value, lease)],
                                 [etcd.get(self.keys.leader)])
        if result.succeeded:
            return result.revision
        current = result.ranges[0][0] if result.ranges and result.ranges[0] else None
        if current is not None and current.lease == lease:
            return current.create_revision  # ours already (a restart that kept its lease)
        return None

    def apply(self, actions: Sequence[Action], leader_revision: int, revision: int,
              jobs: Mapping[str, JobRecord]) -> bool:
        """Write `actions` in guarded transactions; False when a guard failed (re-read and decide again).

        Every batch requires that we still hold the leader key we created, that no unit was submitted,
        replaced or given another desired state since the engine read them (one compare over job/, at
        `revision`), and that each unit it writes still exists (a deleted key escapes a range compare).
        """
        batch: list[dict] = []
        compares = self._guards(leader_revision, revision)
        for action in actions:
            if isinstance(action, Put):
                entry = action.assignment
                batch.append(etcd.put(self.keys.schedule(entry.machine, entry.unit), assignment_value(entry)))
                record = jobs.get(entry.unit)
                key = self.keys.job_object(entry.unit)
                if record is not None and all(c.key != key for c in compares):
                    compares.append(etcd.modified_at(key, record.object_revision))
            elif isinstance(action, Remove):
                batch.append(etcd.delete(self.keys.schedule(action.machine, action.unit)))
            if len(batch) >= BATCH or len(compares) >= BATCH:
                if not self.client.txn(compares, batch).succeeded:
                    return False
                batch, compares = [], self._guards(leader_revision, revision)
        return not batch or self.client.txn(compares, batch).succeeded

    def _guards(self, leader_revision: int, revision: int) -> list[etcd.Compare]:
        return [etcd.created_at(self.keys.leader, leader_revision), etcd.unchanged_since(self.keys.jobs, revision)]

    # -- the agent --------------------------------------------------------------------------------

    def register(self, machine: Machine, lease: int) -> etcd.KeyValue | None:
        """Create our machine object bound to `lease`; returns the existing object when the ID is taken."""
        key = self.keys.machine(machine.id)
        result = self.client.txn([etcd.absent(key)], [etcd.put(key, machine_value(machine), lease)], [etcd.get(key)])
        if result.succeeded:
            return None
        return result.ranges[0][0] if result.ranges and result.ranges[0] else None

    def refresh_machine(self, machine: Machine, lease: int) -> None:
        """Rewrite our machine object (after taking back our own lease)."""
        self.client.put(self.keys.machine(machine.id), machine_value(machine), lease)

    def publish(self, machine: Machine, lease: int, states: Sequence[PublishedState], gone: Sequence[str]) -> None:
        """Write changed unit states (bound to our lease) and delete the states of units we no longer have."""
        ops = [etcd.put(self.keys.state(s.unit, machine.id), published_value(s, machine), lease) for s in states]
        ops += [etcd.delete(self.keys.state(unit, machine.id)) for unit in gone]
        for start in range(0, len(ops), 100):
            self.client.txn([], ops[start:start + 100])

    # -- fleetctl ---------------------------------------------------------------------------------

    def create_unit(self, name: str, unit: UnitFile) -> bool:
        """Submit a new unit (desired state inactive); False when a unit of that name exists."""
        unit_hash = unit.hash()
        object_value = json.dumps({"Name": name, "UnitHash": unit_hash})
        return self.client.txn([etcd.absent(self.keys.job_object(name))],
                               [etcd.put(self.keys.unit(unit_hash), unit_value(unit)),
                                etcd.put(self.keys.job_object(name), object_value),
                                etcd.put(self.keys.target_state(name), DesiredState.INACTIVE.value)]).succeeded

    def replace_unit(self, name: str, unit: UnitFile) -> bool:
        """Point an existing unit at new contents; False if it does not exist.

        As fleet's CreateUnit on an existing name: the desired state goes back to inactive (the old
        contents stop and unload), and fleetctl then sets the state it was asked for.
        """
        unit_hash = unit.hash()
        object_value = json.dumps({"Name": name, "UnitHash": unit_hash})
        return self.client.txn([etcd.exists(self.keys.job_object(name))],
                               [etcd.put(self.keys.unit(unit_hash), unit_value(unit)),
                                etcd.put(self.keys.job_object(name), object_value),
                                etcd.put(self.keys.target_state(name), DesiredState.INACTIVE.value)]).succeeded

    def set_target_state(self, name: str, state: DesiredState) -> bool:
        """Set a unit's desired state; False when the unit does not exist."""
        return self.client.txn([etcd.exists(self.keys.job_object(name))],
                               [etcd.put(self.keys.target_state(name), state.value)]).succeeded

    def destroy(self, name: str) -> bool:
        """Remove a unit (the engine then removes its schedule entries); False when it did not exist."""
        return self.client.delete(self.keys.job(name), prefix=True) > 0
