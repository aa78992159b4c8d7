"""A crash-safe journal of disk steps, so every `provisioner disk` command can be resumed.

Layout: `<state-dir>/<disk-guid>/journal.json` is the unfinished job of that disk (at most one),
next to `gpt-before.bin` (`sgdisk --backup` taken before the first change). The journal holds
the command key, the whole plan as it was made, the table before, and the names of finished
steps. It is rewritten atomically (temp file, fsync, rename, fsync of the directory) after each
step, so a power cut or `kill -9` leaves either the old or the new version.

When a job finishes, its journal and backup move to `<disk-guid>/history/<time>-<command>/`
(the backup stays there for `sgdisk --load-backup` by hand).

State dir: `--state-dir`, else $PROVISIONER_STATE_DIR, else /var/lib/provisioner/disk-journal.

Test hook (documented in docs/resize.md): PROVISIONER_FAULT=before:<step> or after:<step> makes
the process SIGKILL itself right before a step starts, or right after it finished but before
the journal records it (the worst moment: the step's effect is on disk, the journal does not
know). Tests use it to prove that re-running the command finishes the job.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from provisioner.disk.plan import Plan
from provisioner.disk.table import DiskTable, Partition
from provisioner.errors import DiskError

STATE_ENV = "PROVISIONER_STATE_DIR"
FAULT_ENV = "PROVISIONER_FAULT"
DEFAULT_STATE_DIR = "/var/lib/provisioner/disk-journal"
JOURNAL_NAME = "journal.json"
BACKUP_NAME = "gpt-before.bin"


def state_dir(override: str | None = None) -> Path:
    return Path(override or os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR)


def fault_point(when: str, step: str) -> None:
    """Test hook: SIGKILL this process if PROVISIONER_FAULT names this moment ('after:write-table')."""
    if os.environ.get(FAULT_ENV) == f"{when}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The unfinished job of one disk. Create with `start`, find with `load`."""

    def __init__(self, directory: Path, data: dict):
        self.directory = directory
        self.data = data

    @property
    def path(self) -> Path:
        return self.directory / JOURNAL_NAME

    @property
    def backup_path(self) -> Path:
        return self.directory / BACKUP_NAME

    @property
    def plan(self) -> Plan:
        return Plan.from_dict(self.data["plan"])

    @property
    def done(self) -> list[str]:
        return list(self.data["done"])

    @property
    def table_before(self) -> tuple[Partition, ...]:
        return tuple(Partition.from_dict(p) for p in self.data["table_before"])

    @classmethod
    def load(cls, root: Path, disk_guid: str) -> "Journal | None":
        """The unfinished journal of the disk, or None. Raises DiskError if it is unreadable."""
        directory = root / disk_guid.upper()
        path = directory / JOURNAL_NAME
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DiskError(f"{path}: cannot read the disk journal: {exc.strerror}") from None
        try:
            data = json.loads(text)
            Plan.from_dict(data["plan"])
            data["done"], data["table_before"]  # noqa: B018 - presence check
        except (ValueError, KeyError, TypeError) as exc:
            raise DiskError(f"{path}: damaged disk journal ({exc}); inspect it, then move it away") from None
        return cls(directory, data)

    @classmethod
    def start(cls, root: Path, table: DiskTable, plan: Plan, device: str) -> "Journal":
        """Write a new journal for `plan`. Raises DiskError when the state dir is not writable."""
        directory = root / table.disk_guid.upper()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DiskError(f"{directory}: cannot create the journal directory: {exc.strerror}") from None
        data = {
            "version": 1,
            "device": device,
            "disk_guid": table.disk_guid.upper(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "plan": plan.to_dict(),
            "table_before": [p.to_dict() for p in table.partitions],
            "done": [],
        }
        journal = cls(directory, data)
        journal._save()
        return journal

    def _save(self) -> None:
        _write_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")

    def mark_done(self, step: str) -> None:
        self.data["done"].append(step)
        self._save()

    def finish(self) -> Path:
        """Move the journal and the table backup into history/; returns that directory."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.directory / "history" / f"{stamp}-{self.data['plan']['command']}"
        suffix = 1
        while target.exists():
            suffix += 1
            target = target.with_name(f"{stamp}-{self.data['plan']['command']}-{suffix}")
        target.mkdir(parents=True)
        if self.backup_path.exists():
            os.replace(self.backup_path, target / BACKUP_NAME)
        os.replace(self.path, target / JOURNAL_NAME)
        _fsync_dir(self.directory)
        return target
