"""Where a unit's status and log are on a process-backend machine: written here, shown by fleetctl.

`fleetctl status` and `fleetctl journal` run a command on the unit's machine, as fleet did. On a systemd
machine it is fleet's own command (`systemctl status -l`, `journalctl --unit ... -n N --output short
[-f]`). On a process-backend machine the agent keeps the same information in files
(backends/process.py): the status header in <runtime>/status/<unit> and the unit's log, in journalctl's
short format, in <runtime>/journal/<unit>.log (rotated to .log.1); they are read with cat and tail.
Logs never pass through etcd (they would fill its history at every line), and reaching the machine is
SSH, already how an operator is allowed on it (cli/fleetctl_ssh.py).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from provisioner.errors import UsageError
from provisioner.scheduler.model import Backend, Machine

log = logging.getLogger("provisioner.scheduler.unitlogs")

LOG_LIMIT = 1 << 20


class UnitLogFiles:
    """The process backend's side: unit log lines (journalctl short format, rotated) and status headers."""

    def __init__(self, runtime_dir: Path, hostname: str, limit: int = LOG_LIMIT):
        self.journal = runtime_dir / "journal"
        self.status_dir = runtime_dir / "status"
        self.hostname = hostname
        self.limit = limit
        for directory in (self.journal, self.status_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def line(self, unit: str, identifier: str, message: str) -> None:
        """Append `Nov 23 19:36:06 host bash[1234]: message` to the unit's log (never raises)."""
        path = self.journal / f"{unit}.log"
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
        try:
            if path.exists() and path.stat().st_size > self.limit:
                os.replace(path, path.with_name(f"{unit}.log.1"))
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(f"{stamp} {self.hostname} {identifier}: {message}\n")
        except OSError as exc:
            log.warning("%s: cannot write the unit log: %s", path, exc.strerror)

    def status(self, unit: str, lines: list[str]) -> None:
        """Replace the unit's status header atomically (never raises)."""
        path = self.status_dir / unit
        temporary = path.with_name(f".{unit}.tmp")
        try:
            temporary.write_text("\n".join(lines) + "\n")
            os.replace(temporary, path)
        except OSError as exc:
            log.warning("%s: cannot write the unit status: %s", path, exc.strerror)

    def forget_status(self, unit: str | None = None) -> None:
        """Remove one unit's status header, or (None) every one a previous fleetd left."""
        for path in ([self.status_dir / unit] if unit else list(self.status_dir.iterdir())):
            path.unlink(missing_ok=True)

_PROCESS_STATUS = ('test -e "$1" || { echo "Unit $0 could not be found." >&2; exit 4; }; cat -- "$1"; echo; '
                   'tail -n 10 -- "$2" 2>/dev/null; grep -q "^     Active: active " -- "$1" || exit 3')
_PROCESS_JOURNAL = ('test -e "$1" || { echo "No journal entries for $0." >&2; exit 1; }; '
                    'if [ "$3" = follow ]; then exec tail -n "$2" -F -- "$1"; fi; '
                    'cat -- "$1.1" "$1" 2>/dev/null | tail -n "$2"')



def status_command(machine: Machine, unit: str, sudo: bool = False) -> list[str]:
    """`fleetctl status`: what runs on the unit's machine."""
    if machine.backend is Backend.PROCESS:
        root = Path(machine.runtime_dir)
        command = ["sh", "-c", _PROCESS_STATUS, unit, str(root / "status" / unit),
                   str(root / "journal" / f"{unit}.log")]
    else:
        command = ["systemctl", "status", "-l", unit]
    return ["sudo", *command] if sudo else command


def journal_command(machine: Machine, unit: str, lines: int, follow: bool, output: str, sudo: bool) -> list[str]:
    """`fleetctl journal`: fleet's journalctl call, or the process backend's log file read the same way.

    Raises UsageError for an --output the process backend cannot produce (it writes `short` only).
    """
    if machine.backend is Backend.PROCESS:
        if output != "short":
            raise UsageError(f"--output={output}: machine {machine.short_id} runs units with the process backend, "
                             f"whose logs are in the short format only")
        log = Path(machine.runtime_dir) / "journal" / f"{unit}.log"
        command = ["sh", "-c", _PROCESS_JOURNAL, unit, str(log), str(lines), "follow" if follow else ""]
    else:
        command = ["journalctl", "--unit", unit, "--no-pager", "-n", str(lines), "--output", output]
        if follow:
            command.append("-f")
    return ["sudo", *command] if sudo else command


def local_machine_id(path: str = "/etc/machine-id") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""
