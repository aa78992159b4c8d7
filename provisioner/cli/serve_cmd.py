"""`provisioner serve`, `provisioner dnsmasq-config`, `provisioner machines [reinstall|forget|mark-installed|...]`."""

from __future__ import annotations

from pathlib import Path

import typer

from provisioner.cli.output import confirm, emit, emit_json, emit_table
from provisioner.errors import UsageError
from provisioner.inventory.identifiers import normalize_mac_or_none
from provisioner.pxe.admin_access import admin_request, new_token
from provisioner.pxe.boot_secrets import DEFAULT_TTL
from provisioner.pxe.dnsmasq import dnsmasq_config
from provisioner.pxe.installed import InstalledMachines
from provisioner.pxe.machines import load_machines, machine_rows


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
    admin_addr: str = typer.Option("127.0.0.1:8081", "--admin-addr",
                                   help="HOST:PORT of the admin API (reinstall, forget, mark installed; token in "
                                        "STATE_DIR/admin-token). Never the --http-addr."),
    admin_allow: list[str] = typer.Option([], "--admin-allow", help="Address or network (CIDR) besides loopback "
                                          "that may use the admin API; repeatable."),
    boot_secret_ttl: float = typer.Option(DEFAULT_TTL, "--boot-secret-ttl",
                                          help="Seconds an install boot's secret stays valid (docs/security.md)."),
    state_etcd: str = typer.Option(None, "--state-etcd", help="http://a:2379,http://b:2379: keep the state "
                                   "(installed marks, machine events, boot secrets) in etcd, shared by every "
                                   "server of the site (docs/pxe-server.md)."),
    state_site: str = typer.Option("default", "--state-site", help="The site's name: its keys are under "
                                   "/provisioner/SITE/ in etcd."),
    inventory_etcd: bool = typer.Option(False, "--inventory-etcd", help="Serve the inventory pushed to etcd "
                                        "(`provisioner inventory push`), not the data dir's."),
) -> None:
    """Run the PXE boot server: DHCP/proxyDHCP + TFTP + HTTP (+ etcd discovery) until SIGTERM."""
    # Imported here: `provisioner machines ...` should not pay for aiohttp at every start.
    from provisioner.pxe.serve_config import ServeConfig, ServeOptions
    from provisioner.pxe.server import run_server

    options = ServeOptions(
        data_dir=data_dir, interface=interface, http_addr=http_addr, dhcp=dhcp, dhcp_range=dhcp_range,
        router=router, dns=tuple(dns), lease_time=lease_time, tftp=tftp, tftp_root=tftp_root, tftp_addr=tftp_addr,
        server_url=server_url, state_dir=state_dir, assets_dir=assets_dir, server_ip=server_ip,
        efi_binary=efi_binary, chain_ipxe_roms=chain_ipxe_roms, http_workers=http_workers, ipv6_ra=ipv6_ra,
        registry_addr=registry_addr, admin_addr=admin_addr, admin_allow=tuple(admin_allow),
        boot_secret_ttl=boot_secret_ttl, state_etcd=state_etcd, state_site=state_site,
        inventory_etcd=inventory_etcd)
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
    from provisioner.pxe.serve_config import static_leases_from_inventory

    static = static_leases_from_inventory(data_dir) if dhcp_range else {}
    emit(dnsmasq_config(server_url, interface=interface, proxy_network=proxy_network, dhcp_range=dhcp_range,
                        tftp_root=tftp_root, static_leases=static), newline=False)


machines_app = typer.Typer(help="List the machines the boot server has seen, with their last boot stage.\n\n"
                                "The subcommands act through the running server's admin API (docs/security.md).",
                           invoke_without_command=True)

DATA_DIR_OPTION = typer.Option(None, "--data-dir", "-D", help="The server's data dir (state in DATA_DIR/state).")
STATE_DIR_OPTION = typer.Option(None, "--state-dir", help="The server's --state-dir (default DATA_DIR/state).")
STATE_ETCD_OPTION = typer.Option(None, "--state-etcd", help="http://a:2379,...: list every machine of the site "
                                 "from etcd (the servers' --state-etcd), with the servers that saw it.")
STATE_SITE_OPTION = typer.Option("default", "--state-site", help="The site's name (the servers' --state-site).")
JSON_OPTION = typer.Option(False, "--json", help="One JSON document on stdout.")


def _state_dir(data_dir: Path | None, state_dir: Path | None) -> Path:
    if state_dir is not None:
        return state_dir
    if data_dir is None:
        raise UsageError("give --data-dir or --state-dir")
    return data_dir / "state"


def _mac(text: str) -> str:
    mac = normalize_mac_or_none(text)
    if mac is None:
        raise UsageError(f"MAC: {text!r} is not a MAC address")
    return mac


@machines_app.callback()
def machines_command(
    ctx: typer.Context,
    data_dir: Path = DATA_DIR_OPTION,
    state_dir: Path = STATE_DIR_OPTION,
    state_etcd: str = STATE_ETCD_OPTION,
    state_site: str = STATE_SITE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List the machines the boot server has seen, with their last boot stage."""
    if ctx.invoked_subcommand is not None:
        return
    if state_etcd:
        from provisioner.pxe.state_sync import read_site
        from provisioner.scheduler.etcd import EtcdClient, parse_endpoints

        client = EtcdClient(parse_endpoints(state_etcd), timeout=5.0)
        try:
            machines, installed = read_site(client, state_site)
        finally:
            client.close()
        rows = machine_rows(machines, installed)
    else:
        folder = _state_dir(data_dir, state_dir)
        rows = machine_rows(load_machines(folder / "machines.json"),
                            InstalledMachines(folder / "installed.json").macs)
    if as_json:
        emit_json({"machines": rows})
        return
    servers = ("SERVERS",) if state_etcd else ()
    emit_table(("MAC", "IP", "ARCH", "LAST STAGE", "INSTALL", "INSTALLED", "UPDATE", "LAST SEEN", *servers),
               [(row["mac"], row["ip"], row["arch"], row["last_stage"], row["install"],
                 "yes" if row["installed"] else "no", row["update"], row["last_seen"],
                 *((",".join(row["servers"]),) if state_etcd else ())) for row in rows])


MAC_ARGUMENT = typer.Argument(..., help="The machine's MAC address.")
YES_OPTION = typer.Option(False, "--yes", help="Do not ask.")


def _act(mac_text: str, method: str, path: str, state_dir: Path, as_json: bool, answers: tuple[str, str],
         question: str | None = None, yes: bool = False) -> None:
    """Send one action for a MAC to the admin API (after the confirmation `question`, if any); print
    answers[0] when it changed something, answers[1] when there was nothing to change."""
    mac = _mac(mac_text)
    if question is not None:
        confirm(question.format(mac=mac), yes=yes, refusal=f"{mac}: give --yes to confirm (no terminal to ask on)")
    answer = admin_request(state_dir, method, f"/machines/{mac}{path}")
    if as_json:
        emit_json(answer)
    else:
        emit((answers[0] if answer.get("changed") else answers[1]).format(mac=mac))


@machines_app.command("reinstall")
def reinstall_command(mac: str = MAC_ARGUMENT, data_dir: Path = DATA_DIR_OPTION, state_dir: Path = STATE_DIR_OPTION,
                      yes: bool = YES_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Install MAC again at its next PXE boot (its disk is overwritten then)."""
    _act(mac, "POST", "/reinstall", _state_dir(data_dir, state_dir), as_json,
         ("{mac}: its next PXE boot installs it again",
          "{mac}: was not marked installed; its next PXE boot installs it"),
         "Reinstall {mac}: its disk is overwritten at its next PXE boot?", yes)


@machines_app.command("mark-installed")
def mark_installed_command(mac: str = MAC_ARGUMENT, data_dir: Path = DATA_DIR_OPTION,
                           state_dir: Path = STATE_DIR_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Boot MAC from its disk from now on, without installing it."""
    _act(mac, "POST", "/mark-installed", _state_dir(data_dir, state_dir), as_json,
         ("{mac}: marked installed; its next PXE boot goes to its disk", "{mac}: was already marked installed"))


@machines_app.command("forget")
def forget_command(mac: str = MAC_ARGUMENT, data_dir: Path = DATA_DIR_OPTION, state_dir: Path = STATE_DIR_OPTION,
                   yes: bool = YES_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Forget MAC: its history and installed mark; its next PXE boot is that of a new machine."""
    _act(mac, "DELETE", "", _state_dir(data_dir, state_dir), as_json,
         ("{mac}: forgotten", "{mac}: the server knew nothing about it"),
         "Forget {mac}: its history goes, and its next PXE boot installs it?", yes)


@machines_app.command("rotate-token")
def rotate_token_command(
    data_dir: Path = DATA_DIR_OPTION,
    state_dir: Path = STATE_DIR_OPTION,
) -> None:
    """Replace the admin API's token; the old one stops working at once. Prints the token file's path."""
    folder = _state_dir(data_dir, state_dir)
    try:
        emit(str(new_token(folder)))
    except OSError as exc:
        raise UsageError(f"{folder}: cannot write the admin token: {exc.strerror}") from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    app.command("dnsmasq-config")(dnsmasq_config_command)
    app.add_typer(machines_app, name="machines")
