"""A crash-safe journal of disk steps, so every `provisioner disk` command can be resumed.

Layout: `<state-dir>/<disk-guid>/job/` is the unfinished job of that disk (at most one):
`journal.json` (the command key, the whole plan as it was made and the table before; written once,
atomically and durably with core/files.write_atomic, before the disk is touched), `gpt-before.bin`
(`sgdisk --backup` taken before the first change), `steps.log`, and `<step>.e2undo` while an
offline resize2fs runs (provisioner/disk/e2undo.py). steps.log gets one line per finished step. It is
appended without fsync on purpose: every step is idempotent (see resize.apply_step), so a mark lost
to a power cut only means the re-run repeats one step, and the disk work is not slowed by two fsyncs
per step.

When a job finishes, its directory is renamed to `<disk-guid>/history/<time>-<command>/` in one
rename, so a kill at any moment leaves either the whole unfinished job or none (the backup stays
there for `sgdisk --load-backup` by hand; undo files are deleted first, they can be large).

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

from provisioner.core.files import fsync_path, write_atomic
from provisioner.disk.gpt import Partition
from provisioner.disk.plan import Plan
from provisioner.disk.table import DiskTable
from provisioner.errors import DiskError

STATE_ENV = "PROVISIONER_STATE_DIR"
FAULT_ENV = "PROVISIONER_FAULT"
DEFAULT_STATE_DIR = "/var/lib/provisioner/disk-journal"
JOB_DIR = "job"
HISTORY_DIR = "history"
JOURNAL_NAME = "journal.json"
STEPS_NAME = "steps.log"
BACKUP_NAME = "gpt-before.bin"
UNDO_SUFFIX = ".e2undo"


def state_dir(override: str | None = None) -> Path:
    return Path(override or os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR)


def fault_point(when: str, step: str) -> None:
    """Test hook: SIGKILL this process if PROVISIONER_FAULT names this moment ('after:write-table')."""
    if os.environ.get(FAULT_ENV) == f"{when}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


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
    def steps_path(self) -> Path:
        return self.directory / STEPS_NAME

    def undo_path(self, step: str) -> Path:
        """Where the offline resize2fs of `step` keeps its undo file."""
        return self.directory / f"{step}{UNDO_SUFFIX}"

    @property
    def done(self) -> list[str]:
        """Names of finished steps (a torn last line, from a crash mid-append, is ignored)."""
        try:
            text = self.steps_path.read_text()
        except FileNotFoundError:
            return []
        lines = text.split("\n")
        return [line for line in lines[:-1] if line]  # the last element is '' or a torn line

    @property
    def table_before(self) -> tuple[Partition, ...]:
        return tuple(Partition.from_dict(p) for p in self.data["table_before"])

    @classmethod
    def load(cls, root: Path, disk_guid: str) -> Journal | None:
        """The unfinished journal of the disk, or None. Raises DiskError if it is unreadable."""
        directory = root / disk_guid.upper() / JOB_DIR
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
            data["table_before"]  # noqa: B018 - presence check
        except (ValueError, KeyError, TypeError) as exc:
            raise DiskError(f"{path}: damaged disk journal ({exc}); inspect it, then move it away") from None
        return cls(directory, data)

    @classmethod
    def last_finished(cls, root: Path, disk_guid: str) -> Journal | None:
        """The newest job in the disk's history/ (finished or rolled back), or None."""
        history = root / disk_guid.upper() / HISTORY_DIR
        try:
            names = sorted(os.listdir(history))  # <UTC time>-<command>: sorts by when it finished
        except OSError:
            return None
        for name in reversed(names):
            try:
                return cls(history / name, json.loads((history / name / JOURNAL_NAME).read_text()))
            except (OSError, ValueError):
                continue
        return None

    @classmethod
    def start(cls, root: Path, table: DiskTable, plan: Plan, device: str) -> Journal:
        """Write a new journal for `plan`. Raises DiskError when the state dir is not writable."""
        directory = root / table.disk_guid.upper() / JOB_DIR
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
        }
        journal = cls(directory, data)
        for stale in directory.iterdir():  # left by a job whose journal.json never got written
            stale.unlink()
        write_atomic(journal.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
        return journal

    def mark_done(self, step: str) -> None:
        with open(self.steps_path, "a") as handle:
            handle.write(step + "\n")

    def finish(self, outcome: str = "") -> Path:
        """Move the job into history/ (one rename); returns that directory.

        `outcome` tags the directory name (e.g. 'restored' when the job was rolled back).
        """
        for undo in self.directory.glob(f"*{UNDO_SUFFIX}"):
            undo.unlink()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{stamp}-{self.data['plan']['command']}" + (f"-{outcome}" if outcome else "")
        history = self.directory.parent / HISTORY_DIR
        history.mkdir(exist_ok=True)
        target = history / name
        suffix = 1
        while target.exists():
            suffix += 1
            target = target.with_name(f"{name}-{suffix}")
        os.replace(self.directory, target)
        fsync_path(self.directory.parent)
        fsync_path(history)
        return target
