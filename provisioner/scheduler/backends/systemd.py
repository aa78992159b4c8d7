"""The systemd backend: fleet's agent on a real node, through the project's systemctl interface.

What fleet's agent did over D-Bus (agent/unit_manager.go, systemd/manager.go), done with systemctl:
- load: write the unit file to the units directory (/run/fleet/units), `systemctl link --runtime`
  it into /run/systemd/system, `enable --runtime` when it has an [Install] section, then one
  daemon-reload before the next start or stop;
- start/stop: `systemctl start|stop --no-block` (fleet queued jobs with mode "replace" and did not
  wait);
- unload: stop, then `disable --runtime` (which also removes the link), `reset-failed`, remove the file;
- states: `systemctl show -p LoadState,ActiveState,SubState` for the loaded units, polled once a
  second by a thread that calls `on_change` when something changed (fleet subscribed to D-Bus
  signals; systemctl has none).
Unit files stay in the units directory across a fleetd restart, so `existing()` lets the agent adopt
running units instead of restarting them.

The systemctl calls go through the object given as `systemctl` (provisioner.node.systemd.Systemctl on
a node); `SystemdControl` lists what is used of it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from provisioner.errors import ProvisionerError
from provisioner.scheduler.backends import ExistingUnit
from provisioner.scheduler.model import UnitStatus
from provisioner.scheduler.unitfile import UnitFile

log = logging.getLogger("provisioner.scheduler.systemd")

STATE_PROPERTIES = ("LoadState", "ActiveState", "SubState")


class SystemdControl(Protocol):
    def daemon_reload(self) -> None: ...

    def start(self, name: str, *, no_block: bool = False) -> None: ...

    def stop(self, name: str, *, no_block: bool = False) -> None: ...

    def link(self, path: Path, *, runtime: bool = False) -> None: ...

    def enable(self, names: Sequence[str], *, runtime: bool = False, force: bool = True) -> None: ...

    def disable(self, names: Sequence[str], *, runtime: bool = False) -> None: ...

    def reset_failed(self, name: str) -> None: ...

    def show(self, names: Sequence[str], properties: Iterable[str]) -> dict[str, dict[str, str]]: ...


class SystemdBackend:
    def __init__(self, systemctl: SystemdControl, units_dir: str | Path,
                 on_change: Callable[[], None] = lambda: None, poll_interval: float = 1.0):
        self.systemctl = systemctl
        self.units_dir = Path(units_dir)
        self.units_dir.mkdir(parents=True, exist_ok=True)
        self.on_change = on_change
        self.poll_interval = poll_interval
        self._lock = threading.RLock()
        self._units: dict[str, UnitFile] = {}
        for path in sorted(self.units_dir.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                try:
                    self._units[path.name] = UnitFile.parse(path.read_text(), str(path))
                except (OSError, ProvisionerError) as exc:
                    log.warning("%s: left over and unreadable (%s); ignored", path, exc)
        self._statuses: dict[str, UnitStatus] = {}
        self._reload_pending = True
        self._closing = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="systemd-states", daemon=True)
        self._poller.start()

    def load(self, name: str, unit: UnitFile) -> None:
        path = self.units_dir / name
        with self._lock:
            temporary = path.with_name(f".{name}.tmp")
            temporary.write_text(unit.serialize())
            temporary.replace(path)
            self.systemctl.link(path, runtime=True)
            if unit.section("Install"):
                self.systemctl.enable([name], runtime=True)
            self._units[name] = unit
            self._reload_pending = True

    def unload(self, name: str) -> None:
        with self._lock:
            self._reload()
            try:
                self.systemctl.stop(name)
            except ProvisionerError as exc:
                log.warning("unload %s: stop failed, unloading anyway: %s", name, exc)
            for step in (lambda: self.systemctl.disable([name], runtime=True),
                         lambda: self.systemctl.reset_failed(name)):
                try:
                    step()
                except ProvisionerError as exc:
                    log.debug("unload %s: %s", name, exc)
            (self.units_dir / name).unlink(missing_ok=True)
            self._units.pop(name, None)
            self._statuses.pop(name, None)
            self._reload_pending = True
            self._reload()  # systemd forgets the unit now, not at the next job

    def start(self, name: str) -> None:
        with self._lock:
            self._reload()
            self.systemctl.start(name, no_block=True)

    def stop(self, name: str) -> None:
        with self._lock:
            self._reload()
            self.systemctl.stop(name, no_block=True)

    def statuses(self) -> dict[str, UnitStatus]:
        with self._lock:
            if set(self._statuses) != set(self._units):
                self._refresh()
            return dict(self._statuses)

    def existing(self) -> dict[str, ExistingUnit]:
        with self._lock:
            self._reload()
            self._refresh()
            return {name: ExistingUnit(unit.hash(), self._statuses.get(name, UnitStatus()).active
                                       in ("active", "activating", "reloading"))
                    for name, unit in self._units.items()}

    def close(self) -> None:
        self._closing.set()
        self._poller.join(timeout=5)
        for name in list(self._units):
            self.unload(name)
        with self._lock:
            self._reload()

    def _reload(self) -> None:
        if self._reload_pending:
            self.systemctl.daemon_reload()
            self._reload_pending = False

    def _refresh(self) -> bool:
        """Ask systemd for the states of our units; True when something changed."""
        names = sorted(self._units)
        shown = self.systemctl.show(names, STATE_PROPERTIES) if names else {}
        statuses = {name: UnitStatus(values.get("LoadState", ""), values.get("ActiveState", ""),
                                     values.get("SubState", "")) for name, values in shown.items()}
        changed = statuses != self._statuses
        self._statuses = statuses
        return changed

    def _poll(self) -> None:
        while not self._closing.wait(self.poll_interval):
            try:
                with self._lock:
                    self._reload()
                    changed = self._refresh()
            except ProvisionerError as exc:
                log.warning("systemd backend: cannot read unit states: %s", exc)
                continue
            if changed:
                self.on_change()
