"""`provisioner demo`: what `make demo` runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from provisioner.demo.render_summary import summarise
from provisioner.errors import PartialError
from provisioner.inventory import load_inventory
from provisioner.inventory.check import check_inventory


def demo_command(
    data_dir: Path = typer.Option(Path("examples/cluster"), "--data-dir", "-D"),
    server_url: str = typer.Option("http://10.99.0.1:8080", "--server-url", help="URL the machines would use."),
) -> None:
    """Check the data dir, then render and validate every machine's iPXE script and cloud-config."""
    console = Console(width=None if Console().is_terminal else 140)
    inventory = load_inventory(data_dir)
    problems = check_inventory(inventory, server_url=server_url)
    for problem in problems:
        console.print(str(problem), style="red" if problem.severity == "error" else "yellow")
    rows, seconds = summarise(inventory, server_url)
    table = Table(title=f"{data_dir}: what each machine is served")
    for column in ("group", "selector", "profile", "iPXE", "cloud-config"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row.group, row.selector, row.profile, row.ipxe, row.cloud_config,
                      style=None if row.ok else "red")
    console.print(table)
    failed = [r for r in rows if not r.ok]
    console.print(f"{len(rows)} machines rendered and validated in {seconds * 1000:.1f} ms; "
                  f"{len(failed)} failed; inventory check: {len(problems)} problems")
    if failed or any(p.severity == "error" for p in problems):
        raise PartialError(f"{len(failed)} of {len(rows)} machines failed to render (see the table)")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
