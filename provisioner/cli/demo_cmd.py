"""`provisioner demo`: what `make demo` runs."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from provisioner.demo.boot_chain import BootChain, ChainConfig, StageEvent
from provisioner.demo.render_summary import summarise
from provisioner.errors import PartialError, UsageError
from provisioner.inventory import load_inventory
from provisioner.inventory.check import check_inventory


def demo_command(
    data_dir: Path = typer.Option(Path("examples/cluster"), "--data-dir", "-D"),
    server_url: str = typer.Option("http://10.99.0.1:8080", "--server-url",
                                   help="URL the machines use (the demo's lab address)."),
    render_only: bool = typer.Option(False, "--render-only", help="Only stage 0: render and validate every machine."),
    firmware: str = typer.Option("bios", "--firmware", envvar="FIRMWARE", help="bios (SeaBIOS) or uefi (OVMF)."),
    keep: bool = typer.Option(False, "--keep", help="Leave the server and the VM running and print how to reach them."),
    release_dir: Path = typer.Option(Path("build/release/stable/current"), "--release-dir",
                                     help="What `make image` built."),
    workdir: Path = typer.Option(Path("build/demo"), "--workdir", help="Data dir copy, SSH key, disk, logs."),
    mac: str = typer.Option("52:54:00:00:00:01", "--mac", help="The VM's MAC: a machine of the data dir."),
) -> None:
    """Render and validate every machine, then boot one VM from blank disk to an installed system (root)."""
    if firmware not in ("bios", "uefi"):
        raise UsageError(f"--firmware: {firmware!r} is not bios or uefi")
    console = Console(width=None if Console().is_terminal else 140)
    render_stage(console, data_dir, server_url)
    if render_only:
        return
    console.print(f"[bold]boot chain[/bold]: {firmware}, machine {mac}, lab network 10.99.0.0/24 (no uplink)")
    chain = BootChain(ChainConfig(data_dir=data_dir, release_dir=release_dir, workdir=workdir, mac=mac,
                                  firmware=firmware), keep=keep)

    def show(event: StageEvent) -> None:
        console.print(f"  {event.at:7.1f} s  {event.stage}" + (f"  ({event.detail})" if event.detail else ""))

    # SIGTERM (timeout, kill, CI) unwinds like Ctrl-C, so the VM, the server and the namespace go too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        result = chain.run(on_stage=show)
    except BaseException:
        logs = [path for path in (chain.server_log, *chain.serial_logs()) if path.exists()]
        if logs:
            console.print(f"logs: {' '.join(str(path) for path in logs)}")
        raise
    console.print(result.remote_report.rstrip(), markup=False, highlight=False)
    console.print(f"booted slot: {result.boot_slot or 'unknown'}")
    console.print(f"[bold]total {result.total:.1f} s[/bold] from power on to SSH")
    if keep:
        console.print(chain.how_to_reach())


def render_stage(console: Console, data_dir: Path, server_url: str) -> None:
    """Stage 0: check the data dir, then render and validate every machine's iPXE script and cloud-config."""
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
