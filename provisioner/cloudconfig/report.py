"""Validation report entries, printed as coreos-cloudinit prints them: `line N: KIND: MESSAGE`."""

from __future__ import annotations

from dataclasses import dataclass, field

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True)
class Entry:
    line: int
    kind: str  # error | warning | info
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.message}"

    def as_json(self) -> dict:
        # Same keys as coreos-cloudinit's Entry.MarshalJSON.
        return {"kind": self.kind, "line": self.line, "message": self.message}


@dataclass
class Report:
    entries: list[Entry] = field(default_factory=list)

    def error(self, line: int, message: str) -> None:
        self.entries.append(Entry(line, ERROR, message))

    def warning(self, line: int, message: str) -> None:
        self.entries.append(Entry(line, WARNING, message))

    def info(self, line: int, message: str) -> None:
        self.entries.append(Entry(line, INFO, message))

    @property
    def has_errors(self) -> bool:
        return any(e.kind == ERROR for e in self.entries)

    def sorted(self) -> list[Entry]:
        order = {ERROR: 0, WARNING: 1, INFO: 2}
        return sorted(self.entries, key=lambda e: (e.line, order[e.kind], e.message))
