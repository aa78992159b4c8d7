"""The agent's memory: `/var/lib/provisioner/update/state.json` on ROOT (survives reboots), plus the
marker `/run/update_engine_autoupdate_completed` (tmpfs: gone after the reboot), whose content is the
version waiting for a reboot. locksmithd (node/update/rebootlock.py) watches that marker, as CoreOS's
locksmithd waits for update_engine's UPDATED_NEED_REBOOT.

After a reboot, `after_boot` settles a pending update: booted into its slot, it took; booted into
the other slot, GRUB fell back (the new slot ran out of tries without being marked successful), and
that version is recorded as failed: the agent never offers it again (update_engine would retry, and
Flatcar users saw install-reboot-rollback loops, flatcar/Flatcar#130).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from provisioner.core.files import write_atomic

STATE_DIR = Path("/var/lib/provisioner/update")
STATE_FILE = "state.json"
MARKER = Path("/run/update_engine_autoupdate_completed")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

# update_engine's status names (UPDATE_STATUS_<name>), as `update_engine_client -status` prints them.
IDLE = "IDLE"
CHECKING = "CHECKING_FOR_UPDATE"
AVAILABLE = "UPDATE_AVAILABLE"
DOWNLOADING = "DOWNLOADING"
FINALIZING = "FINALIZING"
NEED_REBOOT = "UPDATED_NEED_REBOOT"
ERROR = "REPORTING_ERROR_EVENT"


@dataclass(frozen=True)
class Pending:
    version: str
    slot: str        # "a" or "b"
    boot_id: str     # the boot that wrote it


@dataclass(frozen=True)
class UpdateState:
    status: str = IDLE
    last_checked: float | None = None
    available: str | None = None            # newest version the channel offered at the last check
    message: str = ""                       # the last check's or apply's outcome, one line
    pending: Pending | None = None
    failed: tuple[str, ...] = ()            # versions that fell back: never tried again
    slot_versions: dict[str, str] = field(default_factory=dict)   # what the agent wrote where

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["failed"] = list(self.failed)
        return doc


def state_from_json(doc: dict) -> UpdateState:
    """Tolerant: an unreadable field falls back to its default (the state is the agent's own file)."""
    pending = doc.get("pending")
    try:
        pending_value = Pending(str(pending["version"]), str(pending["slot"]), str(pending["boot_id"])) \
            if isinstance(pending, dict) else None
    except KeyError:
        pending_value = None
    failed = doc.get("failed")
    slots = doc.get("slot_versions")
    checked = doc.get("last_checked")
    return UpdateState(
        status=str(doc.get("status") or IDLE),
        last_checked=float(checked) if isinstance(checked, (int, float)) else None,
        available=str(doc["available"]) if doc.get("available") else None,
        message=str(doc.get("message") or ""),
        pending=pending_value,
        failed=tuple(str(v) for v in failed) if isinstance(failed, list) else (),
        slot_versions={str(k): str(v) for k, v in slots.items()} if isinstance(slots, dict) else {},
    )


def after_boot(state: UpdateState, booted_slot: str | None, boot_id: str) -> tuple[UpdateState, str | None]:
    """Settle a pending update once the machine has rebooted (pure); returns (state, note or None)."""
    pending = state.pending
    if pending is None or pending.boot_id == boot_id:
        return state, None
    if booted_slot == pending.slot:
        return (replace(state, pending=None, status=IDLE, message=f"booted {pending.version}"),
                f"booted the new version {pending.version} in slot {pending.slot.upper()}")
    failed = state.failed if pending.version in state.failed else (*state.failed, pending.version)
    slots = {k: v for k, v in state.slot_versions.items() if k != pending.slot}
    note = (f"version {pending.version} in slot {pending.slot.upper()} did not come up (fell back): "
            f"recorded as failed, it will not be tried again")
    return replace(state, pending=None, failed=failed, slot_versions=slots, status=IDLE, message=note), note


class StateStore:
    def __init__(self, directory: Path = STATE_DIR, marker: Path = MARKER):
        self.directory = directory
        self.marker = marker

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def load(self) -> UpdateState:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return UpdateState()
        except (OSError, ValueError):
            return UpdateState(message=f"{self.path}: unreadable, started afresh")
        return state_from_json(doc) if isinstance(doc, dict) else UpdateState()

    def save(self, state: UpdateState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")

    def need_reboot(self) -> str | None:
        """The version the marker names, when an update waits for a reboot in this boot."""
        try:
            return self.marker.read_text().strip() or "unknown"
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One agent run at a time: the timer's and an operator's `apply` wait for each other."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def mark_need_reboot(self, version: str) -> None:
        write_atomic(self.marker, version + "\n")


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return f"unknown-{time.time():.0f}"
