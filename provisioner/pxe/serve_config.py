"""`provisioner serve`'s configuration: the operator's options, checked and resolved once.

The command line becomes a ServeOptions (as typed); `ServeConfig.from_options` checks the
combination and works out what depends on the machine (the interface's address and network, the
server URL, static leases from the inventory, where Debian's iPXE binaries are). The server runs
with the frozen ServeConfig and never looks at the options again.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from provisioner.core.commands import run
from provisioner.errors import CommandError, UsageError
from provisioner.inventory import load_inventory
from provisioner.pxe.admin_access import LOOPBACK, IpNetwork
from provisioner.pxe.boot_secrets import DEFAULT_TTL
from provisioner.pxe.dhcp_leases import DhcpRange, parse_dhcp_range
from provisioner.pxe.ipxe import find_ipxe_dir
from provisioner.registry.process import RegistrySettings, node_registry_url, storage_dir
from provisioner.scheduler.etcd import parse_endpoints

log = logging.getLogger("provisioner.pxe")

MAX_HTTP_WORKERS = 64


class DhcpMode(StrEnum):
    PROXY = "proxy"     # answer PXE clients only, next to the site's DHCP server (PXE 2.1 proxyDHCP)
    FULL = "full"       # be the DHCP server of an isolated segment (--dhcp-range)
    OFF = "off"         # HTTP (and TFTP) only, e.g. behind the site's dnsmasq


class EfiBinary(StrEnum):
    """The iPXE binary x64 UEFI firmware loads: ipxe.efi has its own NIC drivers, snponly.efi uses
    the firmware's (for NICs iPXE has no driver for)."""

    IPXE = "ipxe.efi"
    SNPONLY = "snponly.efi"


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, option: str) -> ListenAddress:
        """'HOST:PORT' or ':PORT' (host 0.0.0.0); raises UsageError naming `option`."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise UsageError(f"{option}: {text!r} is not HOST:PORT (e.g. 0.0.0.0:8080)")
        return cls(host or "0.0.0.0", int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """The command line of `provisioner serve`, as given (see its --help for each option)."""

    data_dir: Path
    interface: str | None
    dhcp: str                      # "proxy" or "off"; full DHCP is asked for with dhcp_range
    dhcp_range: str | None
    router: str | None
    dns: tuple[str, ...]
    lease_time: int
    http_addr: str
    server_url: str | None
    server_ip: str | None
    tftp: bool
    tftp_root: Path | None
    tftp_addr: str
    efi_binary: str
    chain_ipxe_roms: bool
    http_workers: int
    ipv6_ra: bool
    state_dir: Path | None
    assets_dir: Path | None
    registry_addr: str | None = None
    admin_addr: str = "127.0.0.1:8081"
    admin_allow: tuple[str, ...] = ()
    boot_secret_ttl: float = DEFAULT_TTL
    state_etcd: str | None = None   # "http://a:2379,http://b:2379": the state in etcd (state_etcd.py)
    state_site: str = "default"
    inventory_etcd: bool = False


@dataclass(frozen=True)
class ServeConfig:
    data_dir: Path
    state_dir: Path
    assets_dir: Path | None
    http_addr: ListenAddress
    server_url: str                     # no trailing slash
    dhcp_mode: DhcpMode
    interface: str | None = None
    server_ip: str | None = None
    pool: DhcpRange | None = None       # full DHCP only
    tftp: bool = True
    tftp_root: Path | None = None
    tftp_addr: ListenAddress = ListenAddress("0.0.0.0", 69)
    ipxe_dir: Path | None = None
    efi_binary: EfiBinary = EfiBinary.IPXE
    static_leases: dict[str, str] = field(default_factory=dict)
    chain_ipxe_roms: bool = False
    http_workers: int = 1
    ipv6_ra: bool = False               # answer IPv6 router solicitations (full DHCP only, router_advert_service.py)
    registry: RegistrySettings | None = None   # the container registry child (provisioner/registry)
    registry_url: str | None = None            # ... as nodes reach it (templates' registry_url)
    admin_addr: ListenAddress = ListenAddress("127.0.0.1", 8081)   # the admin API (admin.py)
    admin_allow: tuple[IpNetwork, ...] = LOOPBACK                   # who may use it
    boot_secret_ttl: float = DEFAULT_TTL                            # boot_secrets.py
    state_etcd: tuple[str, ...] = ()    # etcd endpoints: the state is shared there (state_etcd.py)
    state_site: str = "default"         # ... under /provisioner/<site>/
    inventory_etcd: bool = False        # the inventory comes from etcd (inventory_etcd.py)

    @classmethod
    def from_options(cls, options: ServeOptions) -> ServeConfig:
        """Check the options and work out the addresses; raises UsageError naming the option at fault."""
        if not 1 <= options.http_workers <= MAX_HTTP_WORKERS:
            raise UsageError(f"--http-workers: {options.http_workers} is not between 1 and {MAX_HTTP_WORKERS}")
        if options.dhcp not in (DhcpMode.PROXY, DhcpMode.OFF):
            raise UsageError(f"--dhcp: {options.dhcp!r} is not 'proxy' or 'off' (full DHCP: give --dhcp-range)")
        if options.dhcp_range and options.dhcp == DhcpMode.OFF:
            raise UsageError("--dhcp-range needs DHCP: drop --dhcp off")
        try:
            efi_binary = EfiBinary(options.efi_binary)
        except ValueError:
            raise UsageError(f"--efi-binary: {options.efi_binary!r} is not "
                             f"{' or '.join(e.value for e in EfiBinary)}") from None
        mode = DhcpMode.OFF if options.dhcp == DhcpMode.OFF else (DhcpMode.FULL if options.dhcp_range
                                                                  else DhcpMode.PROXY)
        data_dir = Path(options.data_dir)
        if not data_dir.is_dir():
            raise UsageError(f"--data-dir {data_dir}: not a directory")
        if mode != DhcpMode.OFF and not options.interface:
            raise UsageError("--interface is required for DHCP (it is never served on every interface); "
                             "use --dhcp off for HTTP only")
        http_addr = ListenAddress.parse(options.http_addr, "--http-addr")
        tftp_addr = ListenAddress.parse(options.tftp_addr, "--tftp-addr")
        if_addr = interface_address(options.interface) if options.interface else None
        server_ip = options.server_ip
        if server_ip is None:
            if if_addr is not None:
                server_ip = str(if_addr.ip)
            elif http_addr.host not in ("0.0.0.0", ""):
                server_ip = http_addr.host
        if mode != DhcpMode.OFF and server_ip is None:
            raise UsageError("cannot tell the server address: give --server-ip")
        url = options.server_url or (f"http://{server_ip}:{http_addr.port}" if server_ip else None)
        if url is None:
            raise UsageError("--server-url is required when the server address is unknown (HTTP on 0.0.0.0)")
        pool = None
        if mode == DhcpMode.FULL and if_addr is not None and options.dhcp_range is not None:
            pool = parse_dhcp_range(options.dhcp_range, if_addr.network, options.router, options.dns,
                                    options.lease_time)
        if options.tftp_root is not None and not Path(options.tftp_root).is_dir():
            raise UsageError(f"--tftp-root {options.tftp_root}: not a directory")
        admin_addr = ListenAddress.parse(options.admin_addr, "--admin-addr")
        if admin_addr.port != 0 and admin_addr.port == http_addr.port and (
                "0.0.0.0" in (admin_addr.host, http_addr.host) or admin_addr.host == http_addr.host):
            raise UsageError(f"--admin-addr {admin_addr}: the admin API never shares the machine-facing "
                             f"--http-addr {http_addr}")
        admin_allow = LOOPBACK + tuple(_network(text, "--admin-allow") for text in options.admin_allow)
        if not options.boot_secret_ttl > 0:
            raise UsageError(f"--boot-secret-ttl: {options.boot_secret_ttl} is not a positive number of seconds")
        state_etcd = tuple(parse_endpoints(options.state_etcd)) if options.state_etcd else ()
        if options.inventory_etcd and not state_etcd:
            raise UsageError("--inventory-etcd needs --state-etcd")
        if not options.state_site or "/" in options.state_site:
            raise UsageError(f"--state-site: {options.state_site!r} is not a non-empty name without '/'")
        registry = registry_url = None
        if options.registry_addr:
            registry_addr = ListenAddress.parse(options.registry_addr, "--registry-addr")
            registry = RegistrySettings(storage_dir(data_dir), registry_addr.host, registry_addr.port)
            registry_url = node_registry_url(registry_addr.host, registry_addr.port, url)
        return cls(
            data_dir=data_dir, state_dir=Path(options.state_dir) if options.state_dir else data_dir / "state",
            assets_dir=Path(options.assets_dir) if options.assets_dir else data_dir / "assets",
            http_addr=http_addr, server_url=url.rstrip("/"), dhcp_mode=mode, interface=options.interface,
            server_ip=server_ip, pool=pool, tftp=options.tftp,
            tftp_root=Path(os.path.realpath(options.tftp_root)) if options.tftp_root else None,
            tftp_addr=tftp_addr, ipxe_dir=find_ipxe_dir(), efi_binary=efi_binary,
            static_leases=static_leases_from_inventory(data_dir, pool.network) if pool is not None else {},
            chain_ipxe_roms=options.chain_ipxe_roms, http_workers=options.http_workers,
            ipv6_ra=options.ipv6_ra and mode == DhcpMode.FULL,
            registry=registry, registry_url=registry_url,
            admin_addr=admin_addr, admin_allow=admin_allow, boot_secret_ttl=options.boot_secret_ttl,
            state_etcd=state_etcd, state_site=options.state_site, inventory_etcd=options.inventory_etcd,
        )


def _network(text: str, option: str) -> IpNetwork:
    """An address or a network ('10.0.5.0/24', '10.0.5.7'); raises UsageError naming `option`."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not an address or a network (e.g. 10.0.5.0/24)") from None


def interface_address(interface: str) -> ipaddress.IPv4Interface:
    """The first IPv4 address of `interface` (from `ip -j addr`); raises UsageError if none."""
    try:
        out = run(["ip", "-j", "-4", "addr", "show", "dev", interface]).stdout
    except CommandError as exc:
        raise UsageError(f"--interface {interface}: {exc}") from None
    for link in json.loads(out or "[]"):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                return ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
    raise UsageError(f"--interface {interface}: has no IPv4 address")


def static_leases_from_inventory(data_dir: Path, network: ipaddress.IPv4Network | None = None) -> dict[str, str]:
    """MAC -> IP for groups that select one MAC and carry metadata `ip` (or `ipv4`); raises ConfigError.

    With `network` (the segment serve hands out addresses on), a reservation outside it is left out
    with a warning naming the group, as dnsmasq uses a dhcp-host address only on a served subnet:
    the machine gets a pool address it can use rather than one no router on this segment reaches."""
    leases: dict[str, str] = {}
    for group in load_inventory(data_dir).groups:
        mac = dict(group.selector).get("mac")
        ip = group.metadata.get("ip") or group.metadata.get("ipv4")
        if not (mac and isinstance(ip, str)):
            continue
        if network is not None and not _in_network(ip, network):
            log.warning("%s: metadata ip %s is not in the served network %s; %s gets a pool address",
                        group.source, ip, network, mac)
            continue
        leases[mac] = ip
    return leases


def _in_network(ip: str, network: ipaddress.IPv4Network) -> bool:
    try:
        return ipaddress.IPv4Address(ip) in network
    except ValueError:
        return False
