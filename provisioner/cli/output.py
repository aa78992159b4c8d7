"""How every `provisioner` command talks to its caller: data on stdout, questions on stderr.

- `emit(text)` / `emit_json(data)` / `emit_table(headers, rows)`: the command's result, on stdout,
  so `provisioner ... --json | jq` and `... > file` work. Logs and progress go to stderr through
  `logging` (core/logs.py), never here.
- `confirm(question, yes=...)`: the one prompt before a destructive change. `--yes` skips it; with
  no terminal to ask on, the command refuses (UsageError) rather than guess.
- A command that ran but found problems (a check, a validation) prints its report with emit and
  then raises `CheckFailed`: one error line on stderr and exit 1, like every other failure
  (core/entry.py). Commands never call `typer.Exit` with a failure code themselves.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import typer

from provisioner.errors import EXIT_OK, EXIT_PARTIAL, PartialError, ProvisionerError, UsageError


class CheckFailed(ProvisionerError):
    """A check ran to the end and found errors; its report is already on stdout."""


class Declined(ProvisionerError):
    """The operator answered no at the confirmation prompt; nothing was changed."""


def finish(exit_code: int, failure: str) -> None:
    """End a command whose report is already on stdout with `exit_code` (errors.py's codes): 0 returns,
    3 raises PartialError(failure), anything else CheckFailed(failure)."""
    if exit_code == EXIT_OK:
        return
    raise (PartialError if exit_code == EXIT_PARTIAL else CheckFailed)(failure)


def emit(text: str, *, newline: bool = True) -> None:
    """The command's data, on stdout."""
    typer.echo(text, nl=newline)


def emit_json(data: Any) -> None:
    """The command's data as one JSON document on stdout (stable key order, for diffs and scripts)."""
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, legend: bool = True) -> str:
    """Columns padded to their widest cell and separated by two spaces; None shows as '-' (pure)."""
    cells = [["-" if value is None or value == "" else str(value) for value in row] for row in rows]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"table row {row} has {len(row)} cells for {len(headers)} columns")
    lines = ([list(headers)] if legend else []) + cells
    if not lines:
        return ""
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def emit_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, legend: bool = True) -> None:
    """A table on stdout (format_table); nothing at all when there are no rows and no legend."""
    text = format_table(headers, rows, legend=legend)
    if text:
        typer.echo(text)


def require_terminal(refusal: str) -> None:
    """Raise UsageError(refusal) when there is no terminal to ask on (a script, CI, a pipe)."""
    if not sys.stdin.isatty():
        raise UsageError(refusal)


def confirm(question: str, *, yes: bool, refusal: str) -> None:
    """Ask `question` on the terminal unless `yes`; raise UsageError(refusal) when there is no terminal,
    Declined when the answer is no."""
    if yes:
        return
    require_terminal(refusal)
    if not typer.confirm(question, default=False, err=True):
        raise Declined(f"{question.rstrip('?')}: answered no; nothing was changed")
