"""`provisioner demo`: what `make demo` runs."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from provisioner.cli.output import emit, emit_table
from provisioner.demo.boot_chain import BootChain, ChainConfig, StageEvent
from provisioner.demo.render_summary import summarise
from provisioner.errors import PartialError
from provisioner.inventory import load_inventory
from provisioner.lab.qemu import Firmware
from provisioner.render.check import check_inventory


def demo_command(
    data_dir: Path = typer.Option(Path("examples/cluster"), "--data-dir", "-D"),
    server_url: str = typer.Option("http://10.99.0.1:8080", "--server-url",
                                   help="URL the machines use (the demo's lab address)."),
    render_only: bool = typer.Option(False, "--render-only", help="Only stage 0: render and validate every machine."),
    firmware: Firmware = typer.Option(Firmware.BIOS, "--firmware", envvar="FIRMWARE",
                                      help="bios (SeaBIOS) or uefi (OVMF)."),
    keep: bool = typer.Option(False, "--keep", help="Leave the server and the VM running and print how to reach them."),
    release_dir: Path = typer.Option(Path("build/release/stable/current"), "--release-dir",
                                     help="What `make image` built."),
    workdir: Path = typer.Option(Path("build/demo"), "--workdir", help="Data dir copy, SSH key, disk, logs."),
    mac: str = typer.Option("52:54:00:00:00:01", "--mac", help="The VM's MAC: a machine of the data dir."),
) -> None:
    """Render and validate every machine, then boot one VM from blank disk to an installed system (root)."""
    render_stage(data_dir, server_url)
    if render_only:
        return
    emit(f"boot chain: {firmware}, machine {mac}, lab network 10.99.0.0/24 (no uplink)")
    chain = BootChain(ChainConfig(data_dir=data_dir, release_dir=release_dir, workdir=workdir, mac=mac,
                                  firmware=firmware), keep=keep)

    def show(event: StageEvent) -> None:
        emit(f"  {event.at:7.1f} s  {event.stage}" + (f"  ({event.detail})" if event.detail else ""))

    # SIGTERM (timeout, kill, CI) unwinds like Ctrl-C, so the VM, the server and the namespace go too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        result = chain.run(on_stage=show)
    except BaseException:
        logs = [path for path in (chain.server_log, *chain.serial_logs()) if path.exists()]
        if logs:
            emit(f"logs: {' '.join(str(path) for path in logs)}")
        raise
    emit(result.remote_report.rstrip())
    emit(f"booted slot: {result.boot_slot or 'unknown'}")
    emit(f"total {result.total:.1f} s from power on to SSH")
    if keep:
        emit(chain.how_to_reach())


def render_stage(data_dir: Path, server_url: str) -> None:
    """Stage 0: check the data dir, then render and validate every machine's iPXE script and cloud-config."""
    inventory = load_inventory(data_dir)
    problems = check_inventory(inventory, server_url=server_url)
    for problem in problems:
        emit(str(problem))
    rows, seconds = summarise(inventory, server_url)
    emit(f"{data_dir}: what each machine is served")
    emit_table(("GROUP", "SELECTOR", "PROFILE", "IPXE", "CLOUD-CONFIG"),
               [(row.group, row.selector, row.profile, row.ipxe, row.cloud_config) for row in rows])
    failed = [r for r in rows if not r.ok]
    emit(f"{len(rows)} machines rendered and validated in {seconds * 1000:.1f} ms; "
         f"{len(failed)} failed; inventory check: {len(problems)} problems")
    if failed or any(p.severity == "error" for p in problems):
        raise PartialError(f"{len(failed)} of {len(rows)} machines failed to render (see the table)")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
