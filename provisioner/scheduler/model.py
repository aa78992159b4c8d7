"""The scheduler's data: desired states, machines, jobs, schedule entries and unit states.

Everything here is a frozen value parsed once at the registry boundary (registry.py); the engine
and the agent plan work on these only.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field

from provisioner.scheduler.requirements import Requirements

SHORT_ID_LENGTH = 8


class DesiredState(enum.Enum):
    """fleet's job states: what a unit should be (`dstate`) and, derived, what it is (`state`)."""

    INACTIVE = "inactive"
    LOADED = "loaded"
    LAUNCHED = "launched"


class Backend(enum.Enum):
    """How a machine runs its units (it says so in its machine object, so fleetctl knows how to read logs)."""

    SYSTEMD = "systemd"
    PROCESS = "process"


@dataclass(frozen=True)
class Machine:
    """A live machine (its lease-bound object exists in etcd)."""

    id: str
    public_ip: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    backend: Backend = Backend.SYSTEMD
    runtime_dir: str = "/run/fleet"

    @property
    def short_id(self) -> str:
        return self.id[:SHORT_ID_LENGTH]

    def matches_id(self, wanted: str) -> bool:
        """fleet's MachineState.MatchID: the full ID or the 8-character short ID."""
        return wanted in (self.id, self.short_id)

    @functools.cached_property
    def metadata_dict(self) -> dict[str, str]:
        return dict(self.metadata)

    def legend(self, full: bool) -> str:
        """fleetctl's machineFullLegend: '27435eb0.../10.0.0.2' (or the full ID with --full)."""
        text = self.id if full else f"{self.short_id}..."
        return f"{text}/{self.public_ip}" if self.public_ip else text


@dataclass(frozen=True)
class Job:
    """A submitted unit as the engine sees it."""

    name: str
    unit_hash: str
    target_state: DesiredState
    requirements: Requirements = field(default_factory=Requirements)


@dataclass(frozen=True)
class Assignment:
    """One schedule entry: `unit` should be `target_state` on `machine`, with the unit file `unit_hash`."""

    unit: str
    machine: str
    unit_hash: str
    target_state: DesiredState


@dataclass(frozen=True)
class UnitStatus:
    """What a backend reports for one unit (systemd's LoadState/ActiveState/SubState)."""

    load: str = "loaded"
    active: str = "inactive"
    sub: str = "dead"


@dataclass(frozen=True)
class PublishedState:
    """A unit's state as an agent publishes it (states/<unit>/<machine>)."""

    unit: str
    machine: str
    status: UnitStatus
    unit_hash: str
    job_state: DesiredState  # LOADED, or LAUNCHED once the agent has started it
