"""`provisioner demo`: what `make demo` runs."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from provisioner.cli.output import emit, emit_table
from provisioner.demo.boot_chain import BootChain, ChainConfig, StageEvent
from provisioner.demo.cluster import STAGE_COLUMNS, ClusterConfig, ClusterDemo, ClusterEvent, stage_table
from provisioner.demo.render_summary import summarise
from provisioner.errors import PartialError, UsageError
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
    mac: str = typer.Option("52:54:00:00:00:01", "--mac", help="--machines 1: the VM's MAC (in the data dir)."),
    machines: int = typer.Option(3, "--machines", help="3: the cluster (node1-3 of the data dir); 1: one VM's boot "
                                                      "chain (with --firmware and --mac)."),
) -> None:
    """Render and validate every machine, then bring up three blank VMs as a cluster, or one VM (root)."""
    if machines not in (1, 3):
        raise UsageError(f"--machines: {machines} is not 1 or 3")
    render_stage(data_dir, server_url)
    if render_only:
        return
    # SIGTERM (timeout, kill, CI) unwinds like Ctrl-C, so the VMs, the server and the namespace go too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if machines == 3:
        cluster_demo(data_dir, release_dir, workdir, keep)
        return
    emit(f"boot chain: {firmware}, machine {mac}, lab network 10.99.0.0/24 (no uplink)")
    chain = BootChain(ChainConfig(data_dir=data_dir, release_dir=release_dir, workdir=workdir, mac=mac,
                                  firmware=firmware), keep=keep)

    def show(event: StageEvent) -> None:
        emit(f"  {event.at:7.1f} s  {event.stage}" + (f"  ({event.detail})" if event.detail else ""))

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


def cluster_demo(data_dir: Path, release_dir: Path, workdir: Path, keep: bool) -> None:
    """Three VMs to a cluster, printing each node's stage as it changes, then the cluster's state."""
    demo = ClusterDemo(ClusterConfig(data_dir=data_dir, release_dir=release_dir, workdir=workdir), keep=keep)
    emit("cluster: node1 (BIOS, PXE install), node2 (BIOS, rescue install), node3 (UEFI, PXE install); "
         "lab network 10.99.0.0/24 (no uplink)")

    def show(event: ClusterEvent) -> None:
        stages = "  ".join(f"{node.spec.name}: {node.stage}" for node in demo.nodes)
        emit(f"  {event.at:7.1f} s  {event.node:8} {event.stage}" + (f" ({event.detail})" if event.detail else "")
             + (f"    [{stages}]" if stages else ""))

    try:
        result = demo.run(on_event=show)
    except BaseException:
        if demo.logs():
            emit(f"logs: {' '.join(str(path) for path in demo.logs())}")
        if keep:
            emit(demo.how_to_reach())
        raise
    emit("\n== fleetctl list-machines\n" + result.machines.rstrip())
    emit("== fleetctl list-units (before the power-off)\n" + result.units.rstrip())
    emit("== fleetctl journal hello.service\n" + result.journal.rstrip())
    emit("== provisioner node etcd-health (all up)\n" + result.etcd_health.rstrip())
    emit(f"== powered off {result.powered_off}: web@1 moved to {result.moved_to} in {result.failover_seconds} s")
    emit("== provisioner node etcd-health (after the power-off)\n" + result.health_after.rstrip())
    emit("== seconds since the first power on, per node")
    emit_table(STAGE_COLUMNS, stage_table(result, demo.config.nodes))
    emit(f"total {result.total:.1f} s from power on to the failover")
    if keep:
        emit(demo.how_to_reach())


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
