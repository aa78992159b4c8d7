"""Unit backends: what actually runs a unit on a machine, behind one interface.

- `systemd`: runtime unit files linked into the system manager, started and stopped through
  systemctl, states from `systemctl show`; logs in the journal. For real nodes.
- `process`: fleetd itself runs the [Service] commands (ExecStartPre/ExecStart/ExecStartPost/
  ExecStop/ExecStopPost with systemd's prefixes, Restart=, timeouts, kill modes), capturing output
  into per-unit logs. For hosts where systemd is not PID 1 (containers, these test machines).

Start, stop and unload are asynchronous, as fleet's D-Bus calls were: they queue the job and return;
`statuses()` reports what the unit is doing and `on_change` is called when that changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from provisioner.scheduler.model import UnitStatus
from provisioner.scheduler.unitfile import UnitFile


@dataclass(frozen=True)
class ExistingUnit:
    """A unit a backend already holds when fleetd starts (the systemd backend keeps them across restarts)."""

    unit_hash: str
    active: bool


class UnitBackend(Protocol):
    def load(self, name: str, unit: UnitFile) -> None:
        """Make the unit known (write its file); raises ProvisionerError if it cannot be written."""

    def unload(self, name: str) -> None:
        """Stop the unit if it runs, then forget it and remove its file."""

    def start(self, name: str) -> None: ...

    def stop(self, name: str) -> None: ...

    def statuses(self) -> dict[str, UnitStatus]:
        """LoadState/ActiveState/SubState of every unit this backend holds."""

    def existing(self) -> dict[str, ExistingUnit]:
        """Units loaded before this fleetd started (to adopt instead of restarting them)."""

    def close(self) -> None:
        """Stop every unit this backend runs and release its resources."""


ChangeCallback = Callable[[], None]
