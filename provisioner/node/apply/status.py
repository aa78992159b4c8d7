"""What an apply did, per source and module: kept in /run/provisioner/cloudinit.json for `provisioner node status`.

/run because the status is the current boot's: the applier runs on every boot, and a status left from
an earlier boot would say things about files and units that no longer hold. The exit code of both
`node cloudinit` and `node status` comes from it: 0 everything applied, 3 some module failed, 1 no
source could be read or a document was invalid (nothing of it applied).
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, ConfigError

STATUS_PATH = "/run/provisioner/cloudinit.json"


class SourceState(enum.Enum):
    APPLIED = "applied"          # every module ran without error
    PARTIAL = "partial"          # some module failed; the others were applied
    INVALID = "invalid"          # validator errors or a parse error: nothing applied
    UNREACHABLE = "unreachable"  # could not be read or fetched
    EMPTY = "empty"              # nothing in it
    IGNORED = "ignored"          # a kind this OS does not apply (a #! script)


class ModuleState(enum.Enum):
    OK = "ok"
    FAILED = "failed"


@dataclass
class ModuleResult:
    name: str
    state: ModuleState
    changes: list[str] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    error: str = ""


@dataclass
class SourceResult:
    source: str
    state: SourceState
    kind: str = ""
    messages: list[str] = field(default_factory=list)   # the validator's report lines
    modules: list[ModuleResult] = field(default_factory=list)
    error: str = ""


@dataclass
class ApplyStatus:
    started: float = 0.0
    finished: float = 0.0
    root: str = "/"
    dry_run: bool = False
    addresses: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sources: list[SourceResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        states = {source.state for source in self.sources}
        if states & {SourceState.INVALID, SourceState.UNREACHABLE}:
            return EXIT_ERROR
        if SourceState.PARTIAL in states:
            return EXIT_PARTIAL
        return EXIT_OK

    @property
    def changes(self) -> list[str]:
        return [change for source in self.sources for module in source.modules for change in module.changes]

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started, "finished": self.finished, "root": self.root, "dry_run": self.dry_run,
            "addresses": self.addresses, "notes": self.notes, "exit_code": self.exit_code,
            "sources": [{"source": s.source, "state": s.state.value, "kind": s.kind, "messages": s.messages,
                         "error": s.error,
                         "modules": [{"name": m.name, "state": m.state.value, "changes": m.changes,
                                      "commands": m.commands, "error": m.error} for m in s.modules]}
                        for s in self.sources],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ApplyStatus:
        """Raises KeyError/ValueError/TypeError on a malformed document."""
        return cls(
            started=float(doc["started"]), finished=float(doc["finished"]), root=str(doc["root"]),
            dry_run=bool(doc["dry_run"]), addresses=dict(doc["addresses"]), notes=list(doc.get("notes", [])),
            sources=[SourceResult(s["source"], SourceState(s["state"]), s["kind"], list(s["messages"]),
                                  [ModuleResult(m["name"], ModuleState(m["state"]), list(m["changes"]),
                                                list(m["commands"]), m["error"]) for m in s["modules"]],
                                  s["error"]) for s in doc["sources"]],
        )


def summary_lines(status: ApplyStatus) -> list[str]:
    """One line per source and one per module that changed something or failed (pure)."""
    lines = []
    if not status.sources:
        lines.append("no user data found (nothing applied)")
    for source in status.sources:
        failed = [m for m in source.modules if m.state is ModuleState.FAILED]
        counts = f": {len(source.modules) - len(failed)} module(s) ok, {len(failed)} failed" if source.modules else ""
        if source.error.startswith(source.source):   # the error names the source already
            lines.append(f"{source.state.value} {source.error}")
        else:
            error = f" ({source.error})" if source.error else ""
            lines.append(f"{source.state.value} {source.source}{counts}{error}")
        lines += [f"  {message}" for message in source.messages]
        for module in source.modules:
            if module.state is ModuleState.FAILED:
                lines.append(f"  {module.name}: failed: {module.error}")
            elif module.changes:
                lines.append(f"  {module.name}: {'; '.join(module.changes)}")
    lines += [f"note: {note}" for note in status.notes]
    return lines


def write_status(root: Path, status: ApplyStatus) -> Path:
    """Write the status atomically under `root`; returns its path. Raises OSError."""
    path = root / STATUS_PATH.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".cloudinit-")
    with os.fdopen(handle, "w") as out:
        json.dump(status.to_json(), out, indent=1)
    os.chmod(temporary, 0o644)
    os.rename(temporary, path)
    return path


def read_status(root: Path) -> ApplyStatus | None:
    """The last status under `root`, None when there is none. Raises ConfigError for an unreadable one."""
    path = root / STATUS_PATH.lstrip("/")
    try:
        return ApplyStatus.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable apply status: {exc}") from None
