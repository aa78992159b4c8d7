"""`provisioner serve`, `provisioner dnsmasq-config`, `provisioner machines`."""

from __future__ import annotations

from pathlib import Path

import typer

from provisioner.cli.output import emit, emit_json, emit_table
from provisioner.errors import UsageError
from provisioner.pxe.dnsmasq import dnsmasq_config
from provisioner.pxe.machines import load_machines, machine_rows
from provisioner.pxe.serve_config import ServeConfig, ServeOptions, static_leases_from_inventory
from provisioner.pxe.server import run_server


def serve_command(
    data_dir: Path = typer.Option(..., "--data-dir", "-D", help="matchbox-style data dir (profiles/, groups/, ...)."),
    interface: str = typer.Option(None, "--interface", "-i", help="The only interface DHCP answers on."),
    dhcp: str = typer.Option("proxy", "--dhcp", help="proxy (default) or off; full DHCP when --dhcp-range is given."),
    dhcp_range: str = typer.Option(None, "--dhcp-range",
                                   help="START,END: be the DHCP server (isolated networks only)."),
    router: str = typer.Option(None, "--router", help="Router (option 3) in full-DHCP mode."),
    dns: list[str] = typer.Option([], "--dns", help="DNS server (option 6) in full-DHCP mode; repeatable."),
    lease_time: int = typer.Option(3600, "--lease-time", help="Lease time in seconds (full DHCP)."),
    http_addr: str = typer.Option("0.0.0.0:8080", "--http-addr", help="HOST:PORT for HTTP."),
    server_url: str = typer.Option(None, "--server-url",
                                   help="URL machines use to reach us (default http://<interface ip>:<port>)."),
    server_ip: str = typer.Option(None, "--server-ip",
                                  help="Our address as DHCP clients see it (default: the interface's)."),
    tftp: bool = typer.Option(True, "--tftp/--no-tftp", help="Serve TFTP (iPXE binaries and --tftp-root)."),
    tftp_root: Path = typer.Option(None, "--tftp-root", help="Extra files to serve over TFTP (read-only)."),
    tftp_addr: str = typer.Option("0.0.0.0:69", "--tftp-addr", help="HOST:PORT for TFTP."),
    efi_binary: str = typer.Option("ipxe.efi", "--efi-binary", help="iPXE for x64 UEFI: ipxe.efi or snponly.efi."),
    chain_ipxe_roms: bool = typer.Option(False, "--chain-ipxe-roms",
                                         help="Load our iPXE over TFTP even into firmware that is already iPXE "
                                               "(NIC ROMs)."),
    http_workers: int = typer.Option(1, "--http-workers",
                                     help="HTTP processes sharing the socket (Python uses one core each)."),
    ipv6_ra: bool = typer.Option(True, "--ipv6-ra/--no-ipv6-ra",
                                 help="Full DHCP only: answer IPv6 router solicitations with 'no router here' "
                                       "(iPXE waits ~16 s for one otherwise)."),
    state_dir: Path = typer.Option(None, "--state-dir",
                                   help="Leases, machine state, discovery (default DATA_DIR/state)."),
    assets_dir: Path = typer.Option(None, "--assets-dir", help="Files under /assets/ (default DATA_DIR/assets)."),
    registry_addr: str = typer.Option(None, "--registry-addr", help="HOST:PORT: run the container registry "
                                      "(images in DATA_DIR/registry) there; nodes use it as their Docker Hub mirror."),
) -> None:
    """Run the PXE boot server: DHCP/proxyDHCP + TFTP + HTTP (+ etcd discovery) until SIGTERM."""
    options = ServeOptions(
        data_dir=data_dir, interface=interface, http_addr=http_addr, dhcp=dhcp, dhcp_range=dhcp_range,
        router=router, dns=tuple(dns), lease_time=lease_time, tftp=tftp, tftp_root=tftp_root, tftp_addr=tftp_addr,
        server_url=server_url, state_dir=state_dir, assets_dir=assets_dir, server_ip=server_ip,
        efi_binary=efi_binary, chain_ipxe_roms=chain_ipxe_roms, http_workers=http_workers, ipv6_ra=ipv6_ra,
        registry_addr=registry_addr)
    run_server(ServeConfig.from_options(options))


def dnsmasq_config_command(
    data_dir: Path = typer.Option(..., "--data-dir", "-D",
                                  help="Data dir (static leases: group selector mac + metadata ip)."),
    server_url: str = typer.Option(..., "--server-url", help="Where machines reach `provisioner serve` over HTTP."),
    interface: str = typer.Option(None, "--interface", "-i"),
    proxy_network: str = typer.Option(None, "--proxy-network", help="Network address for proxyDHCP, e.g. 10.9.0.0."),
    dhcp_range: str = typer.Option(None, "--dhcp-range", help="START,END for full DHCP."),
    tftp_root: str = typer.Option("/var/lib/tftpboot", "--tftp-root", help="Where undionly.kpxe and ipxe.efi are."),
) -> None:
    """Print a dnsmasq config that chains PXE clients to this server's /boot.ipxe."""
    static = static_leases_from_inventory(data_dir) if dhcp_range else {}
    emit(dnsmasq_config(server_url, interface=interface, proxy_network=proxy_network, dhcp_range=dhcp_range,
                        tftp_root=tftp_root, static_leases=static), newline=False)


def machines_command(
    data_dir: Path = typer.Option(None, "--data-dir", "-D"),
    state_dir: Path = typer.Option(None, "--state-dir", help="Default DATA_DIR/state."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """List the machines the boot server has seen, with their last boot stage."""
    if state_dir is None:
        if data_dir is None:
            raise UsageError("give --data-dir or --state-dir")
        state_dir = data_dir / "state"
    rows = machine_rows(load_machines(state_dir / "machines.json"))
    if as_json:
        emit_json({"machines": rows})
        return
    emit_table(("MAC", "IP", "ARCH", "LAST STAGE", "INSTALL", "LAST SEEN"),
               [(row["mac"], row["ip"], row["arch"], row["last_stage"], row["install"], row["last_seen"])
                for row in rows])


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    app.command("dnsmasq-config")(dnsmasq_config_command)
    app.command("machines")(machines_command)
