"""Which machines are installed: the server's switch from the `install` profile to the `installed` one.

matchbox leaves this to the operator (edit the group, or boot with `?os=installed`); we do it from
what the machine's install tells us, so the second PXE boot of a freshly installed machine comes up
from its disk without anyone touching the data dir:

- a machine is marked installed when its live system's hook POSTs `/installed?mac=..` with the
  boot secret of the install boot (after the installer succeeded; boot_secrets.py), which also
  revokes that secret: one secret, one install. The operator can mark it too (admin API);
- from then on every query for that MAC that names no `os` gets the label `os=installed` added,
  so groups selecting `os: installed` match it (examples/cluster: iPXE `exit 1` -> local disk);
- only the operator forgets a mark (`provisioner machines reinstall MAC`, the admin API): nothing
  on the machine-facing port can make an installed machine install again.

The marks live in `<state dir>/installed.json` ({"installed": {mac: unix time}}), written atomically
and re-read when its mtime changes (at most once a second), so HTTP worker processes see them too.
This is the InstalledMarks interface of state.py.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from urllib.parse import urlencode

from provisioner.core.files import write_atomic
from provisioner.errors import ConfigError

LABEL, VALUE = "os", "installed"
CHECK_INTERVAL = 1.0


def with_installed_label(params: dict[str, str], installed: bool) -> dict[str, str] | None:
    """The query params with os=installed added, or None when nothing changes (pure).

    An explicit `os=` in the request always wins (matchbox's own way to ask for a profile)."""
    if not installed or LABEL in params:
        return None
    return {**params, LABEL: VALUE}


class InstalledMachines:
    """MAC -> time it was marked installed, backed by `path` (None: in memory only)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self.macs: dict[str, float] = {}
        self._mtime: int | None = None
        self._checked = 0.0
        self._load()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self.macs, self._mtime = {}, None
            return
        if stat.st_mtime_ns == self._mtime:
            return
        try:
            raw = json.loads(self.path.read_text())
            self.macs = {str(k): float(v) for k, v in raw.get("installed", {}).items()}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise ConfigError(f"{self.path}: cannot read installed machines: {exc}") from None
        self._mtime = stat.st_mtime_ns

    def refresh(self, now: float) -> None:
        """Re-read the file when it changed, at most once per CHECK_INTERVAL."""
        if now - self._checked >= CHECK_INTERVAL:
            self._checked = now
            try:
                self._load()
            except ConfigError:
                pass   # keep the marks we have; mark()/forget() rewrite the file

    def _reload_quietly(self) -> None:
        with contextlib.suppress(ConfigError):
            self._load()

    def is_installed(self, mac: str | None) -> bool:
        return mac is not None and mac in self.macs

    def mark(self, mac: str, now: float | None = None) -> bool:
        """Mark mac installed; True when it was not before. Raises OSError when the file cannot be written."""
        self._reload_quietly()   # another HTTP worker process may have written the file meanwhile
        if mac in self.macs:
            return False
        self.macs[mac] = time.time() if now is None else now
        self._save()
        return True

    def forget(self, mac: str) -> bool:
        self._reload_quietly()
        if self.macs.pop(mac, None) is None:
            return False
        self._save()
        return True

    def save(self) -> None:
        """Write the marks in memory to the file (a shared backend's cache); raises OSError."""
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        write_atomic(self.path, json.dumps({"installed": self.macs}, indent=1, sort_keys=True) + "\n",
                     mode=0o600)
        self._mtime = self.path.stat().st_mtime_ns


def rewritten_query(params: dict[str, str]) -> str:
    """The query string for params (the render cache key of a rewritten request; pure)."""
    return urlencode(params, safe=":")
