"""`provisioner validate FILE...`: coreos-cloudinit-compatible cloud-config validation."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from provisioner.cli.output import CheckFailed, emit, emit_json
from provisioner.cloudconfig import validate
from provisioner.errors import ConfigError


def validate_command(
    files: list[Path] = typer.Argument(..., help="User-data files to check ('-' reads standard input)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Validate cloud-configs with coreos-cloudinit v1.13.0's rules and messages. Exit 1 on any error."""
    entries: list[dict] = []
    failed: list[str] = []
    for path in files:
        data = _read(path)
        report = validate(data)
        if report.has_errors:
            failed.append(str(path))
        for entry in report.sorted():
            entries.append({"file": str(path), **entry.as_json()})
            if not as_json:
                prefix = f"{path}: " if len(files) > 1 else ""
                emit(f"{prefix}{entry}")
    if as_json:
        emit_json({"valid": not failed, "entries": entries})
    if failed:
        raise CheckFailed(f"{', '.join(failed)}: not a valid cloud-config (see the report)")


def _read(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
