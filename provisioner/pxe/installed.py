"""Which machines are installed: the server's switch from the `install` profile to the `installed` one.

matchbox leaves this to the operator (edit the group, or boot with `?os=installed`); we do it from
what the machine itself tells us, so the second PXE boot of a freshly installed machine comes up
from its disk without anyone touching the data dir:

- a machine is marked installed when it fetches a config with `os=installed` and its MAC
  (`/cloud-config?mac=..&os=installed`: the live installer fetching the installed system's
  cloud-config, which it does only while installing), or when anything POSTs `/installed?mac=..`;
- from then on every query for that MAC that names no `os` gets the label `os=installed` added,
  so groups selecting `os: installed` match it (examples/cluster: iPXE `exit` -> local disk);
- `DELETE /installed?mac=..` forgets it (reinstall), and so does deleting `<state dir>/installed.json`.

The marks live in `<state dir>/installed.json` ({"installed": {mac: unix time}}), written atomically
and re-read when its mtime changes (at most once a second), so HTTP worker processes see them too.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
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


def marks_installed(endpoint: str, params: Mapping[str, str]) -> bool:
    """Does this request tell us the machine is being installed? (pure; see the module docstring)"""
    return endpoint in ("cloud-config", "ignition") and params.get(LABEL) == VALUE and bool(params.get("mac"))


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

    def _save(self) -> None:
        if self.path is None:
            return
        write_atomic(self.path, json.dumps({"installed": self.macs}, indent=1, sort_keys=True) + "\n",
                     mode=0o600)
        self._mtime = self.path.stat().st_mtime_ns


def rewritten_query(params: dict[str, str]) -> str:
    """The query string for params (the render cache key of a rewritten request; pure)."""
    return urlencode(params, safe=":")
