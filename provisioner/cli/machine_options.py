"""Options that describe a machine, shared by `inventory match` and `render ...`."""

from __future__ import annotations

from pathlib import Path

import typer

from provisioner.errors import UsageError
from provisioner.inventory import MachineQuery

DATA_DIR = typer.Option(Path("examples/cluster"), "--data-dir", "-D", help="matchbox-compatible data dir.")
MAC = typer.Option(None, "--mac", help="MAC address (any common spelling).")
UUID = typer.Option(None, "--uuid", help="SMBIOS UUID.")
HOSTNAME = typer.Option(None, "--hostname")
SERIAL = typer.Option(None, "--serial")
ARCH = typer.Option(None, "--arch", help="iPXE build arch, e.g. x86_64.")
LABEL = typer.Option(None, "--label", "-l", help="Extra label KEY=VALUE (repeatable), e.g. os=installed.")


def build_query(mac, uuid, hostname, serial, arch, labels: list[str] | None) -> MachineQuery:
    """A MachineQuery from CLI options. Raises UsageError for a label without '='."""
    parsed: dict[str, str] = {}
    for label in labels or []:
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {label!r}: want KEY=VALUE")
        parsed[key] = value
    params = {k: v for k, v in dict(mac=mac, uuid=uuid, hostname=hostname, serial=serial, arch=arch).items() if v}
    raw = "&".join(f"{k}={v}" for k, v in {**params, **parsed}.items())
    return MachineQuery.from_params({**parsed, **params}, raw_query=raw)
