"""`provisioner serve`: DHCP/proxyDHCP + TFTP + HTTP (+ etcd discovery) in one asyncio process.

`plan_services(options) -> ServeConfig` validates the operator's options (pure apart from reading
the interface address); `run_server(config)` runs until SIGTERM/SIGINT and then shuts down cleanly:
sockets closed, machine state and discovery tokens written.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from provisioner.core.commands import run
from provisioner.discovery.http import DiscoveryHttp
from provisioner.discovery.store import DiscoveryStore
from provisioner.errors import CommandError, NetworkError, UsageError
from provisioner.pxe import dhcp
from provisioner.pxe.dhcpd import DhcpPolicy, DhcpService
from provisioner.pxe.http import BootData, BootHttp
from provisioner.pxe.installed import InstalledMachines
from provisioner.pxe.leases import DhcpRange, LeaseStore, parse_dhcp_range
from provisioner.pxe.machines import MachineStates
from provisioner.pxe.router_advert import RouterAdvertService
from provisioner.pxe.statefile import write_atomic
from provisioner.pxe.tftp import IPXE_FILES, TftpFiles, TftpService, find_ipxe_dir
from provisioner.registry.process import RegistrySettings, node_registry_url, storage_dir
from provisioner.registry.supervisor import RegistrySupervisor

log = logging.getLogger("provisioner.pxe.server")

FLUSH_INTERVAL = 1.0


@dataclass(frozen=True)
class ServeConfig:
    data_dir: Path
    state_dir: Path
    assets_dir: Path | None
    http_host: str
    http_port: int
    server_url: str
    dhcp_mode: str                      # "proxy", "full" or "off"
    interface: str | None = None
    server_ip: str | None = None
    pool: DhcpRange | None = None
    tftp: bool = True
    tftp_root: Path | None = None
    tftp_host: str = "0.0.0.0"
    tftp_port: int = 69
    dhcp_port: int = 67
    boot_server_port: int = 4011
    dhcp_client_port: int = 68
    ipxe_dir: Path | None = None
    efi_binary: str = "ipxe.efi"
    static_leases: dict[str, str] = field(default_factory=dict)
    chain_ipxe_roms: bool = False
    http_workers: int = 1
    ipv6_ra: bool = False               # answer IPv6 router solicitations (full DHCP only, see router_advert.py)
    registry: RegistrySettings | None = None   # the container registry child (provisioner/registry)
    registry_url: str | None = None            # ... as nodes reach it (templates' registry_url)


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


def parse_addr(text: str, option: str) -> tuple[str, int]:
    """'HOST:PORT' or ':PORT' -> (host, port); raises UsageError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{option}: {text!r} is not HOST:PORT (e.g. 0.0.0.0:8080)")
    return host or "0.0.0.0", int(port)


def static_leases_from_inventory(data_dir: Path) -> dict[str, str]:
    """MAC -> IP for groups that select one MAC and carry metadata `ip` (or `ipv4`)."""
    from provisioner.inventory import load_inventory

    leases: dict[str, str] = {}
    for group in load_inventory(data_dir).groups:
        mac = dict(group.selector).get("mac")
        ip = group.metadata.get("ip") or group.metadata.get("ipv4")
        if mac and isinstance(ip, str):
            leases[mac] = ip
    return leases


def plan_services(*, data_dir: Path, interface: str | None, http_addr: str, dhcp_mode: str,
                  dhcp_range: str | None, router: str | None, dns: list[str], lease_time: int,
                  tftp: bool, tftp_root: Path | None, tftp_addr: str, server_url: str | None,
                  state_dir: Path | None, assets_dir: Path | None, server_ip: str | None = None,
                  efi_binary: str = "ipxe.efi", chain_ipxe_roms: bool = False,
                  http_workers: int = 1, ipv6_ra: bool = True, registry_addr: str | None = None) -> ServeConfig:
    """Check the options and work out addresses; raises UsageError for a bad combination."""
    if not 1 <= http_workers <= 64:
        raise UsageError(f"--http-workers: {http_workers} is not between 1 and 64")
    if dhcp_mode not in ("proxy", "off"):
        raise UsageError(f"--dhcp: {dhcp_mode!r} is not 'proxy' or 'off' (full DHCP: give --dhcp-range)")
    if dhcp_range and dhcp_mode == "off":
        raise UsageError("--dhcp-range needs DHCP: drop --dhcp off")
    mode = "off" if dhcp_mode == "off" else ("full" if dhcp_range else "proxy")
    if not Path(data_dir).is_dir():
        raise UsageError(f"--data-dir {data_dir}: not a directory")
    if mode != "off" and not interface:
        raise UsageError("--interface is required for DHCP (it is never served on every interface); "
                         "use --dhcp off for HTTP only")
    http_host, http_port = parse_addr(http_addr, "--http-addr")
    if_addr = interface_address(interface) if interface else None
    if server_ip is None:
        if if_addr is not None:
            server_ip = str(if_addr.ip)
        elif http_host not in ("0.0.0.0", ""):
            server_ip = http_host
    if mode != "off" and server_ip is None:
        raise UsageError("cannot tell the server address: give --server-ip")
    url = server_url or (f"http://{server_ip}:{http_port}" if server_ip else None)
    if url is None:
        raise UsageError("--server-url is required when the server address is unknown (HTTP on 0.0.0.0)")
    pool = None
    if mode == "full":
        assert if_addr is not None and dhcp_range is not None
        pool = parse_dhcp_range(dhcp_range, if_addr.network, router, tuple(dns), lease_time)
    tftp_host, tftp_port = parse_addr(tftp_addr, "--tftp-addr")
    if tftp_root is not None and not Path(tftp_root).is_dir():
        raise UsageError(f"--tftp-root {tftp_root}: not a directory")
    registry = registry_url = None
    if registry_addr:
        registry_host, registry_port = parse_addr(registry_addr, "--registry-addr")
        registry = RegistrySettings(storage_dir(Path(data_dir)), registry_host, registry_port)
        registry_url = node_registry_url(registry_host, registry_port, url)
    return ServeConfig(
        data_dir=Path(data_dir), state_dir=Path(state_dir) if state_dir else Path(data_dir) / "state",
        assets_dir=Path(assets_dir) if assets_dir else Path(data_dir) / "assets",
        http_host=http_host, http_port=http_port, server_url=url.rstrip("/"), dhcp_mode=mode,
        interface=interface, server_ip=server_ip, pool=pool, tftp=tftp,
        tftp_root=Path(os.path.realpath(tftp_root)) if tftp_root else None,
        tftp_host=tftp_host, tftp_port=tftp_port, ipxe_dir=find_ipxe_dir(), efi_binary=efi_binary,
        static_leases=static_leases_from_inventory(Path(data_dir)) if mode == "full" else {},
        chain_ipxe_roms=chain_ipxe_roms, http_workers=http_workers, ipv6_ra=ipv6_ra and mode == "full",
        registry=registry, registry_url=registry_url,
    )


def metrics_text(counters: dict[str, int], states: MachineStates, *more: dict[str, int]) -> str:
    """Prometheus text exposition (version 0.0.4) of our counters, summed with `more` (pure)."""
    if more:
        total = dict(counters)
        for extra in more:
            for key, value in extra.items():
                total[key] = total.get(key, 0) + value
        counters = total
    lines = ["# TYPE provisioner_http_requests_total counter"]
    for key, value in sorted(counters.items()):
        if key.startswith("http_requests{"):
            lines.append(f"provisioner_{key.replace('http_requests', 'http_requests_total', 1)} {value}")
    lines.append("# TYPE provisioner_boot_events_total counter")
    for stage, value in sorted(states.stage_counts.items()):
        lines.append(f'provisioner_boot_events_total{{stage="{stage}"}} {value}')
    for key, value in sorted(counters.items()):
        if not key.startswith("http_requests{"):
            lines.append(f"# TYPE provisioner_{key}_total counter")
            lines.append(f"provisioner_{key}_total {value}")
    lines.append("# TYPE provisioner_machines gauge")
    lines.append(f"provisioner_machines {len(states.machines)}")
    return "\n".join(lines) + "\n"


def _listen_socket(host: str, port: int) -> socket.socket:
    """A TCP listening socket the HTTP worker processes can inherit; raises OSError."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    sock.setblocking(False)
    return sock


class BootServer:
    """The running services; `start()` binds everything, `stop()` releases everything."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.counters: dict[str, int] = {}
        self.states = MachineStates(config.state_dir / "machines.json")
        self.discovery = DiscoveryStore()
        self._discovery_path = config.state_dir / "discovery.json"
        self._discovery_dirty = False
        self.dhcp: DhcpService | None = None
        self.tftp: TftpService | None = None
        self.ra: RouterAdvertService | None = None
        self.runner: web.AppRunner | None = None
        self._flusher: asyncio.Task | None = None
        self.ipxe_loaded: dict[str, float] = {}   # MAC -> when it last fetched an iPXE binary over TFTP
        self.workers: list[subprocess.Popen] = []
        self.worker_counters: dict[int, dict[str, int]] = {}
        self._sockets: list[socket.socket] = []
        self.registry = (RegistrySupervisor(config.registry, config.registry_url or "", config.state_dir / "registry")
                         if config.registry is not None else None)

    # ---------------------------------------------------------------- events

    def dhcp_event(self, mac: str, stage: str, detail: dict) -> None:
        self.states.record(mac, stage, detail)

    def tftp_event(self, ip: str, stage: str, filename: str, detail: dict) -> None:
        mac = self.states.mac_for_ip(ip) or f"ip:{ip}"
        self.states.record(mac, stage, {"file": filename, **detail}, ip=ip)
        if stage == "tftp-done" and filename.lstrip("/").removesuffix(".0") in IPXE_FILES:
            self.ipxe_loaded[mac] = time.time()

    def http_event(self, mac: str | None, stage: str, detail: dict, ip: str | None) -> None:
        if mac is None and ip:
            mac = self.states.mac_for_ip(ip)
        self.states.record(mac or f"ip:{ip}", stage, detail, ip=ip)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        config = self.config
        if self.registry is not None:
            await self.registry.start()
        if self._discovery_path.exists():
            try:
                self.discovery.restore(self._discovery_path.read_text())
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("discovery: ignoring unreadable %s: %s", self._discovery_path, exc)
        data = BootData(config.data_dir, config.server_url, config.registry_url)
        discovery_http = DiscoveryHttp(self.discovery, config.server_url, self._discovery_changed)
        registry = self.registry
        http = BootHttp(data, config.assets_dir, config.ipxe_dir, self.http_event, self.counters,
                        lambda: metrics_text(self.counters, self.states, *self.worker_counters.values())
                        + (registry.metrics_text() if registry is not None else ""),
                        extra_routes=discovery_http.routes(),
                        installed=InstalledMachines(config.state_dir / "installed.json"),
                        health_checks=[lambda: (registry.healthy, registry.health_line())] if registry else [])
        self.runner = web.AppRunner(http.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        try:
            listen = _listen_socket(config.http_host, config.http_port)
        except OSError as exc:
            raise NetworkError(f"http: cannot listen on {config.http_host}:{config.http_port}: {exc.strerror}") from None
        self._sockets.append(listen)
        await web.SockSite(self.runner, listen).start()
        log.info("http: %s (listening on %s:%d)", config.server_url, config.http_host, config.http_port)
        if config.http_workers > 1:
            await self._start_workers(listen)
        if config.tftp:
            files = TftpFiles(config.tftp_root, config.ipxe_dir)
            if files.ipxe_dir is None:
                log.warning("tftp: Debian's ipxe package is not installed: no iPXE binaries to serve")
            self.tftp = TftpService(files, config.tftp_host, config.tftp_port, self.tftp_event, self.counters)
            try:
                await self.tftp.start()
            except OSError as exc:
                raise NetworkError(f"tftp: cannot listen on {config.tftp_host}:{config.tftp_port}: {exc.strerror}") from None
        if config.dhcp_mode != "off":
            assert config.interface and config.server_ip
            identity = dhcp.ServerIdentity(config.server_ip, dhcp.BootFiles(
                efi_x64=config.efi_binary, http_base=config.server_url))
            policy = DhcpPolicy(identity, config.pool, config.static_leases, config.chain_ipxe_roms)
            leases = LeaseStore(config.state_dir / "leases.json") if config.pool else None
            self.dhcp = DhcpService(policy, config.interface, leases, self.dhcp_event, self.counters,
                                    listen_port=config.dhcp_port, boot_server_port=config.boot_server_port,
                                    client_port=config.dhcp_client_port, ipxe_loaded_at=self.ipxe_loaded.get)
            try:
                await self.dhcp.start()
            except OSError as exc:
                raise NetworkError(f"dhcp: cannot listen on {config.interface} port {config.dhcp_port}: "
                                   f"{exc.strerror}") from None
        if config.ipv6_ra:
            assert config.interface
            self.ra = RouterAdvertService(config.interface, self.counters)
            try:
                self.ra.start()
            except OSError as exc:   # no IPv6 on this host: iPXE then only waits longer
                log.warning("ra: not answering IPv6 router solicitations on %s: %s", config.interface, exc)
                self.ra = None
        self._flusher = asyncio.create_task(self._flush_loop())

    def _discovery_changed(self) -> None:
        self._discovery_dirty = True

    def flush(self) -> None:
        try:
            self.states.save()
            if self._discovery_dirty:
                write_atomic(self._discovery_path, self.discovery.dump())
                self._discovery_dirty = False
        except OSError as exc:
            log.error("state: cannot write under %s: %s", self.config.state_dir, exc)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.flush()

    async def _start_workers(self, listen: socket.socket) -> None:
        """Spawn http_workers - 1 processes on the same listening socket (see http_worker.py)."""
        internal = _listen_socket("127.0.0.1", 0)
        self._sockets.append(internal)
        await web.SockSite(self.runner, internal).start()
        internal_url = f"http://127.0.0.1:{internal.getsockname()[1]}"
        loop = asyncio.get_running_loop()
        for worker_id in range(1, self.config.http_workers):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            ours.setblocking(False)
            self._sockets.append(ours)
            config = {"worker_id": worker_id, "listen_fd": listen.fileno(), "event_fd": theirs.fileno(),
                      "data_dir": str(self.config.data_dir), "server_url": self.config.server_url,
                      "state_dir": str(self.config.state_dir), "registry_url": self.config.registry_url,
                      "assets_dir": str(self.config.assets_dir) if self.config.assets_dir else None,
                      "ipxe_dir": str(self.config.ipxe_dir) if self.config.ipxe_dir else None,
                      "internal_url": internal_url, "log_level": logging.getLogger().getEffectiveLevel()}
            process = subprocess.Popen([sys.executable, "-m", "provisioner.pxe.http_worker"], stdin=subprocess.PIPE,
                                       pass_fds=(listen.fileno(), theirs.fileno()))
            process.stdin.write(json.dumps(config).encode())
            process.stdin.close()
            theirs.close()
            self.workers.append(process)
            loop.add_reader(ours.fileno(), self._worker_message, ours)
        log.info("http: %d worker processes share the listening socket", len(self.workers) + 1)

    def _worker_message(self, sock: socket.socket) -> None:
        for _ in range(256):
            try:
                message = json.loads(sock.recv(65536))
            except (BlockingIOError, InterruptedError):
                return
            except (OSError, ValueError):
                return
            if "e" in message:
                mac, stage, detail, ip = message["e"]
                self.http_event(mac, stage, detail, ip)
            elif "c" in message:
                self.worker_counters[int(message["w"])] = message["c"]

    async def stop(self) -> None:
        for process in self.workers:
            process.terminate()
        for process in self.workers:
            try:
                await asyncio.get_running_loop().run_in_executor(None, process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self.dhcp is not None:
            self.dhcp.close()
        if self.ra is not None:
            self.ra.close()
        if self.tftp is not None:
            await self.tftp.close()
        if self.runner is not None:
            await self.runner.cleanup()
        for sock in self._sockets:
            with contextlib.suppress(OSError, ValueError):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        if self.registry is not None:
            await self.registry.stop()
        self.flush()
        log.info("serve: stopped")


async def serve_until_signalled(config: ServeConfig, ready: asyncio.Event | None = None) -> None:
    """Run the server until SIGTERM or SIGINT; raises NetworkError when a port cannot be bound."""
    server = BootServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        log.info("serve: ready (dhcp %s, tftp %s)", config.dhcp_mode, "on" if config.tftp else "off")
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop()


def run_server(config: ServeConfig) -> None:
    asyncio.run(serve_until_signalled(config))
