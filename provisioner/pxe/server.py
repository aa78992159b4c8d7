"""`provisioner serve`: DHCP/proxyDHCP + TFTP + HTTP (+ etcd discovery) in one asyncio process,
and the admin API (admin.py) on its own address.

`run_server(config)` (a ServeConfig, serve_config.py) runs until SIGTERM/SIGINT and then shuts down
cleanly: sockets closed, machine state and discovery tokens written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from provisioner.core.files import write_atomic
from provisioner.discovery.http import DiscoveryHttp
from provisioner.discovery.store import DiscoveryStore
from provisioner.errors import NetworkError
from provisioner.pxe.admin import UI_PREFIX, AdminApi
from provisioner.pxe.admin_access import ensure_token, write_address
from provisioner.pxe.boot_secrets import BootSecretFiles
from provisioner.pxe.dhcp_leases import LeaseStore
from provisioner.pxe.dhcp_policy import DhcpPolicy
from provisioner.pxe.dhcp_reply import BootFiles, ServerIdentity
from provisioner.pxe.dhcp_service import DhcpService
from provisioner.pxe.events import BootEvent, Counters
from provisioner.pxe.http import BootData, BootHttp, MalformedRequests
from provisioner.pxe.installed import InstalledMachines
from provisioner.pxe.inventory_etcd import materialize
from provisioner.pxe.ipxe import ipxe_binary_name
from provisioner.pxe.loop import run_uvloop
from provisioner.pxe.machines import REFUSED, MachineStates
from provisioner.pxe.router_advert_service import RouterAdvertService
from provisioner.pxe.serve_config import DhcpMode, ServeConfig
from provisioner.pxe.state import BootSecrets, InstalledMarks, MachineLog, StateRunner, run_inline
from provisioner.pxe.state_etcd import (
    EtcdBootSecrets,
    EtcdInstalledMarks,
    EtcdMachineLog,
    EtcdSite,
    Outbox,
    StateThreads,
)
from provisioner.pxe.state_sync import SiteSync, lease_document
from provisioner.pxe.tftp_service import TftpFiles, TftpService
from provisioner.registry.supervisor import RegistrySupervisor
from provisioner.scheduler.etcd import RequestCounter
from provisioner.ui.web import OperatorUi

log = logging.getLogger("provisioner.pxe.server")

FLUSH_INTERVAL = 1.0
WORKER_DATAGRAM = 256 * 1024   # the largest batch of events a worker sends (http_worker.BATCH) fits


def metrics_text(counters: Counters, states: MachineStates, *more: Counters) -> str:
    """Prometheus text exposition (version 0.0.4) of our counters, summed with `more` (pure).

    A counter key `name` or `name{labels}` becomes `provisioner_name_total[{labels}]`."""
    total = dict(counters)
    for extra in more:
        for key, value in extra.items():
            total[key] = total.get(key, 0) + value
    for stage, value in states.stage_counts.items():
        total[f'boot_events{{stage="{stage}"}}'] = value
    total["machines_dropped"] = states.machines.dropped          # limits: the oldest unseen MAC
    total["history_dropped"] = states.history_dropped            # limits: events beyond machines.HISTORY
    total["refused_unknown_mac"] = states.refusals_unknown
    lines: list[str] = []
    typed: set[str] = set()
    for key, value in sorted(total.items()):
        name, brace, labels = key.partition("{")
        if name not in typed:
            typed.add(name)
            lines.append(f"# TYPE provisioner_{name}_total counter")
        lines.append(f"provisioner_{name}_total{brace}{labels} {value}")
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
        self.counters: Counters = {}
        self.states = MachineStates(config.state_dir / "machines.json")   # the machine view, either backend
        self.installed: InstalledMarks
        self.secrets: BootSecrets
        self.machine_log: MachineLog
        self.sync: SiteSync | None = None
        self.state_threads: StateThreads | None = None
        self.run_state: StateRunner = run_inline
        if config.state_etcd:
            # The state is the site's, in etcd (state_etcd.py); the files under the state dir are its cache.
            self.etcd_requests = RequestCounter()   # every etcd request this server makes (/metrics)
            site = EtcdSite(config.state_etcd, config.state_site, config.server_url, counter=self.etcd_requests)
            machine_log = EtcdMachineLog(site, self.states, Outbox(config.state_dir / "etcd-outbox.json"))
            secrets = EtcdBootSecrets(site, config.boot_secret_ttl, counters=self.counters)
            installed = EtcdInstalledMarks(site, InstalledMachines(config.state_dir / "installed.json"), secrets)
            self.installed, self.secrets, self.machine_log = installed, secrets, machine_log
            self.sync = SiteSync(site, installed, machine_log, secrets,
                                 on_inventory=self._inventory_pushed if config.inventory_etcd else None,
                                 on_discovery=self._discovery_loaded)
            self.state_threads = StateThreads()
            self.run_state = self.state_threads
        else:
            self.installed = InstalledMachines(config.state_dir / "installed.json")
            self.secrets = BootSecretFiles(config.state_dir / "boot-secrets", config.boot_secret_ttl,
                                           counters=self.counters)
            self.machine_log = self.states
        self.data: BootData | None = None
        self._leases_published: str | None = None
        self.discovery = DiscoveryStore()
        self._discovery_path = config.state_dir / "discovery.json"
        self._discovery_dirty = False
        self.dhcp: DhcpService | None = None
        self.tftp: TftpService | None = None
        self.ra: RouterAdvertService | None = None
        self.runner: web.AppRunner | None = None
        self.admin_runner: web.AppRunner | None = None
        self._malformed = MalformedRequests(self.counters)
        self._flusher: asyncio.Task | None = None
        self.watchers: list[Callable[[str], None]] = []   # told the MAC of every event recorded (the UI)
        self.ipxe_loaded: dict[str, float] = {}   # MAC -> when it last fetched an iPXE binary over TFTP
        self.workers: list[subprocess.Popen] = []
        self.worker_counters: dict[int, Counters] = {}
        self._sockets: list[socket.socket] = []
        self.registry = (RegistrySupervisor(config.registry, config.registry_url or "", config.state_dir / "registry")
                         if config.registry is not None else None)

    def record_event(self, event: BootEvent) -> None:
        """Record what a service saw in the machine state, under the MAC (known, or learned for the
        client's address), else under "ip:<address>"."""
        if event.stage == REFUSED:   # goes into the named machine's history, nothing else (machines.py)
            if event.mac and self.machine_log.record_refusal(event.mac, event.detail):
                for watch in self.watchers:
                    watch(event.mac)
            return
        mac = event.mac or (self.states.mac_for_ip(event.ip) if event.ip else None) or f"ip:{event.ip}"
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s %s %s", event.source, mac, event.stage, dict(event.detail))
        self.machine_log.record(mac, event.stage, dict(event.detail) if event.detail else None, ip=event.ip)
        for watch in self.watchers:
            watch(mac)
        if event.stage == "tftp-done" and ipxe_binary_name(str(event.detail.get("file", ""))):
            self.ipxe_loaded[mac] = time.time()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        config = self.config
        logging.getLogger("aiohttp.server").addFilter(self._malformed)
        if self.registry is not None:
            await self.registry.start()
        if self._discovery_path.exists():
            try:
                self.discovery.restore(self._discovery_path.read_text())
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("discovery: ignoring unreadable %s: %s", self._discovery_path, exc)
        if self.sync is not None:
            self.sync.start(asyncio.get_running_loop())
        data = BootData(self._inventory_dir(), config.server_url, config.registry_url,
                        servers_argument=self.sync is not None)
        self.data = data
        discovery_http = DiscoveryHttp(self.discovery, config.server_url, self._discovery_changed)
        registry = self.registry
        http = BootHttp(data, config.assets_dir, config.ipxe_dir, self.record_event, self.counters,
                        lambda: metrics_text(self.counters, self.states, *self.worker_counters.values(),
                                             self._state_counters())
                        + (registry.metrics_text() if registry is not None else ""),
                        extra_routes=discovery_http.routes(), installed=self.installed, secrets=self.secrets,
                        health_checks=[lambda: (registry.healthy, registry.health_line())] if registry else [],
                        run_state=self.run_state, site_servers=self.sync.servers.others if self.sync else None)
        self.runner = web.AppRunner(http.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        try:
            listen = _listen_socket(config.http_addr.host, config.http_addr.port)
        except OSError as exc:
            raise NetworkError(f"http: cannot listen on {config.http_addr}: "
                               f"{exc.strerror}") from None
        self._sockets.append(listen)
        await web.SockSite(self.runner, listen).start()
        log.info("http: %s (listening on %s)", config.server_url, config.http_addr)
        if config.http_workers > 1:
            await self._start_workers(self.runner, listen)
        await self._start_admin(data)
        if config.tftp:
            files = TftpFiles(config.tftp_root, config.ipxe_dir)
            if files.ipxe_dir is None:
                log.warning("tftp: Debian's ipxe package is not installed: no iPXE binaries to serve")
            self.tftp = TftpService(files, config.tftp_addr.host, config.tftp_addr.port, self.counters,
                                    self.record_event)
            try:
                await self.tftp.start()
            except OSError as exc:
                raise NetworkError(f"tftp: cannot listen on {config.tftp_addr}: "
                                   f"{exc.strerror}") from None
        if config.dhcp_mode != DhcpMode.OFF:
            assert config.interface and config.server_ip
            identity = ServerIdentity(config.server_ip, BootFiles(efi_x64=config.efi_binary.value,
                                                                  http_base=config.server_url,
                                                                  tftp=config.tftp))
            policy = DhcpPolicy(identity, config.pool, config.static_leases, config.chain_ipxe_roms)
            leases = LeaseStore(config.state_dir / "leases.json") if config.pool else None
            self.dhcp = DhcpService(policy, config.interface, leases, self.counters, self.record_event,
                                    ipxe_loaded_at=self.ipxe_loaded.get)
            try:
                await self.dhcp.start()
            except OSError as exc:
                raise NetworkError(f"dhcp: cannot listen on {config.interface} ports 67 and 4011: "
                                   f"{exc.strerror}") from None
        if config.ipv6_ra:
            assert config.interface
            self.ra = RouterAdvertService(config.interface, self.counters, self.record_event)
            try:
                await self.ra.start()
            except OSError as exc:   # no IPv6 on this host: iPXE then only waits longer
                log.warning("ra: not answering IPv6 router solicitations on %s: %s", config.interface, exc)
                self.ra = None
        self._flusher = asyncio.create_task(self._flush_loop())

    async def _start_admin(self, data: BootData) -> None:
        """The admin API on its own address (admin.py), its token created at the first start."""
        config = self.config
        try:
            tokens = ensure_token(config.state_dir)
        except OSError as exc:
            raise NetworkError(f"admin: cannot create {config.state_dir}/admin-token: {exc.strerror}") from None
        admin = AdminApi(tokens, config.admin_allow, self.machine_log, self.installed, self.secrets, data,
                         self.record_event)
        app = admin.app()
        ui = OperatorUi(self.states, self.installed, data, tokens, self.counters)
        ui.mount(app, UI_PREFIX)
        self.watchers.append(ui.live.changed)
        self.admin_runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.admin_runner.setup()
        try:
            sock = _listen_socket(config.admin_addr.host, config.admin_addr.port)
        except OSError as exc:
            raise NetworkError(f"admin: cannot listen on {config.admin_addr}: {exc.strerror}") from None
        self._sockets.append(sock)
        await web.SockSite(self.admin_runner, sock).start()
        host, port = sock.getsockname()[:2]
        url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
        write_address(config.state_dir, url)
        allowed = ", ".join(str(network) for network in config.admin_allow)
        log.info("admin: %s (token in %s; allowed from %s); pages at %s%s/", url, tokens.path, allowed, url,
                 UI_PREFIX)

    def _publish_leases(self) -> None:
        """Full DHCP with the state in etcd: this server's bound leases go to the site's view when they change."""
        assert self.sync is not None
        leases = self.dhcp.leases if self.dhcp is not None else None
        if leases is None:
            return
        document = lease_document(leases.leases, self.config.server_url)
        if document != self._leases_published:
            site = self.sync.site
            self.sync.machine_log.outbox.add(site.keys.leases(site.server_id), document)
            self._leases_published = document

    def _state_counters(self) -> Counters:
        if self.sync is None:
            return {}
        return {"etcd_requests": self.etcd_requests.count}

    def _discovery_changed(self) -> None:
        self._discovery_dirty = True

    def _discovery_loaded(self, dump: str) -> None:
        """The site's discovery registry from etcd, read at start (state_etcd.SiteSync)."""
        try:
            self.discovery.restore(dump)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("discovery: ignoring the unreadable registry in etcd: %s", exc)

    def _inventory_dir(self) -> Path:
        """Where the inventory is read: the data dir, or the copy of the one pushed to etcd."""
        return self.config.state_dir / "inventory" if self.config.inventory_etcd else self.config.data_dir

    def _inventory_pushed(self, document: str) -> None:
        try:
            files = materialize(document, self._inventory_dir())
        except (ValueError, OSError) as exc:
            log.error("inventory: cannot take the pushed inventory: %s (still serving the previous one)", exc)
            return
        log.info("inventory: %d files from etcd", files)
        if self.data is not None:
            self.data.reload()

    def flush(self) -> None:
        try:
            self.states.save()
            if self._discovery_dirty:
                if self.sync is not None:
                    self.sync.machine_log.outbox.add(self.sync.site.keys.discovery, self.discovery.dump())
                write_atomic(self._discovery_path, self.discovery.dump(), mode=0o600)
                self._discovery_dirty = False
            if self.sync is not None:
                self._publish_leases()
                self.sync.machine_log.outbox.save()
        except OSError as exc:
            log.error("state: cannot write under %s: %s", self.config.state_dir, exc)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.flush()

    async def _start_workers(self, runner: web.AppRunner, listen: socket.socket) -> None:
        """Spawn http_workers - 1 processes on the same listening socket (see http_worker.py)."""
        internal = _listen_socket("127.0.0.1", 0)
        self._sockets.append(internal)
        await web.SockSite(runner, internal).start()
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
                      "internal_url": internal_url, "log_level": logging.getLogger().getEffectiveLevel(),
                      "boot_secret_ttl": self.config.boot_secret_ttl,
                      "state_etcd": list(self.config.state_etcd), "state_site": self.config.state_site}
            process = subprocess.Popen([sys.executable, "-m", "provisioner.pxe.http_worker"], stdin=subprocess.PIPE,
                                       pass_fds=(listen.fileno(), theirs.fileno()))
            assert process.stdin is not None   # stdin=PIPE
            with process.stdin as pipe:
                pipe.write(json.dumps(config).encode())
            theirs.close()
            self.workers.append(process)
            loop.add_reader(ours.fileno(), self._worker_message, ours)
        log.info("http: %d worker processes share the listening socket", len(self.workers) + 1)

    def _worker_message(self, sock: socket.socket) -> None:
        for _ in range(256):
            try:
                message = json.loads(sock.recv(WORKER_DATAGRAM))
            except (BlockingIOError, InterruptedError):
                return
            except (OSError, ValueError):
                return
            if not isinstance(message, dict):
                continue
            for raw in message.get("es", ()):
                try:
                    self.record_event(BootEvent.from_json(raw))
                except ValueError as exc:
                    log.warning("http: ignoring a worker's malformed event: %s", exc)
            if "c" in message:
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
        for service in (self.dhcp, self.ra, self.tftp):
            if service is not None:
                await service.close()
        for runner in (self.admin_runner, self.runner):
            if runner is not None:
                await runner.cleanup()
        for sock in self._sockets:
            with contextlib.suppress(OSError, ValueError):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        if self.registry is not None:
            await self.registry.stop()
        self.flush()
        if self.sync is not None:   # pushes what waits, if etcd answers; the rest stays in the outbox file
            await asyncio.get_running_loop().run_in_executor(None, self.sync.stop)
            if self.state_threads is not None:
                self.state_threads.close()
            self.flush()
        logging.getLogger("aiohttp.server").removeFilter(self._malformed)
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
    run_uvloop(serve_until_signalled(config))
