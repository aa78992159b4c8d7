"""Extra HTTP worker processes for `provisioner serve --http-workers N`.

Python serves one core per process; the boot-script and asset paths are stateless per request,
so N-1 workers accept on the main process's listening socket (inherited fd; the kernel spreads
the connections). Each worker has its own inventory, render cache and change check. The machine
log stays in the main process: workers send boot events (refused writes too) and their counters
over a datagram socketpair, and forward /metrics, /healthz and /discovery/ (long-polls, one
registry) to the main process's internal loopback listener, so every answer is the same whichever
process accepted it. Installed marks and boot secrets are files every process reads and writes
(installed.py, boot_secrets.py): a secret issued by one process is accepted by any other. With
--state-etcd a worker makes the same etcd transactions as the main process for a boot's secret and
its installed mark; it reads the installed cache the main process's watch writes, and mirrors the
site's secrets and its live servers with watches of its own (state_sync.WorkerMirror). The admin API
runs in the main process only.

Run by the main process only: `python -m provisioner.pxe.http_worker` with a JSON config on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from provisioner.pxe.boot_secrets import BootSecretFiles
from provisioner.pxe.events import BootEvent, Counters
from provisioner.pxe.http import BootData, BootHttp, MalformedRequests
from provisioner.pxe.installed import InstalledMachines
from provisioner.pxe.loop import run_uvloop
from provisioner.pxe.state import BootSecrets, InstalledMarks, run_inline
from provisioner.pxe.state_etcd import EtcdBootSecrets, EtcdInstalledMarks, EtcdSite, StateThreads
from provisioner.pxe.state_sync import WorkerMirror
from provisioner.scheduler.etcd import RequestCounter

log = logging.getLogger("provisioner.pxe.worker")

FORWARDED = ("/metrics", "/healthz", "/discovery/{rest:.*}")
COUNTER_INTERVAL = 0.5
BATCH = 100   # events per datagram: ~20 KB, well under the socket's buffer and the reader's 256 KiB


class EventForwarder:
    """Sends boot events and counter snapshots to the main process.

    The events of one turn of the event loop go in one datagram (at most BATCH of them): under a burst
    of requests that is one send and one decode per batch instead of one per request."""

    def __init__(self, sock: socket.socket, worker_id: int):
        self.sock = sock
        self.worker_id = worker_id
        self.counters: Counters = {}
        self._batch: list[dict] = []

    def event(self, event: BootEvent) -> None:
        self._batch.append(event.to_json())
        if len(self._batch) >= BATCH:
            self.flush()
        elif len(self._batch) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        # The main process busy or gone: boot events are best effort, requests are not.
        with contextlib.suppress(OSError):
            self.sock.send(json.dumps({"es": batch}).encode())

    def send_counters(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(json.dumps({"w": self.worker_id, "c": self.counters}).encode())


def forwarding_routes(internal_url: str, session_holder: dict):
    async def forward(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = session_holder["session"]
        body = await request.read()
        async with session.request(request.method, f"{internal_url}{request.path_qs}", data=body or None,
                                   headers={k: v for k, v in request.headers.items()
                                            if k.lower() in ("content-type", "range")}) as upstream:
            payload = await upstream.read()
            headers = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "x-etcd-index")}
            return web.Response(status=upstream.status, body=payload, headers=headers)

    return [("*", path, forward) for path in FORWARDED]


async def run_worker(config: dict) -> None:
    listen = socket.socket(fileno=config["listen_fd"])
    events = socket.socket(fileno=config["event_fd"])
    events.setblocking(False)
    forwarder = EventForwarder(events, config["worker_id"])
    data = BootData(Path(config["data_dir"]), config["server_url"], config.get("registry_url"),
                    servers_argument=bool(config.get("state_etcd")))
    holder: dict = {}
    state_dir = Path(config["state_dir"])
    installed: InstalledMarks
    secrets: BootSecrets
    threads: StateThreads | None = None
    mirror: WorkerMirror | None = None
    etcd_requests = RequestCounter()
    if config.get("state_etcd"):
        # The site's state in etcd: marks and secrets are transactions from here as from the main process.
        site = EtcdSite(config["state_etcd"], config["state_site"], config["server_url"], counter=etcd_requests)
        secrets = EtcdBootSecrets(site, config["boot_secret_ttl"], counters=forwarder.counters)
        mirror = WorkerMirror(site, secrets).start()
        installed = EtcdInstalledMarks(site, InstalledMachines(state_dir / "installed.json"), secrets,
                                       writes_cache=False)
        threads = StateThreads()
    else:
        installed = InstalledMachines(state_dir / "installed.json")
        secrets = BootSecretFiles(state_dir / "boot-secrets", config["boot_secret_ttl"], counters=forwarder.counters)
    http = BootHttp(data, Path(config["assets_dir"]) if config["assets_dir"] else None,
                    Path(config["ipxe_dir"]) if config["ipxe_dir"] else None, forwarder.event, forwarder.counters,
                    lambda: "", extra_routes=forwarding_routes(config["internal_url"], holder), forward_state=True,
                    installed=installed, secrets=secrets, run_state=threads or run_inline,
                    site_servers=mirror.servers.others if mirror is not None else None)
    logging.getLogger("aiohttp.server").addFilter(MalformedRequests(forwarder.counters))
    holder["session"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=330))
    runner = web.AppRunner(http.app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, listen).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), COUNTER_INTERVAL)
            if etcd_requests.count:
                forwarder.counters["etcd_requests"] = etcd_requests.count
            forwarder.send_counters()
    finally:
        if threads is not None:
            threads.close()
        if mirror is not None:
            mirror.stop()
        await runner.cleanup()
        forwarder.flush()
        await holder["session"].close()


def main() -> None:
    config = json.loads(sys.stdin.read())
    logging.basicConfig(level=config.get("log_level", logging.WARNING), stream=sys.stderr,
                        format=f"worker{config['worker_id']} %(levelname)s %(name)s: %(message)s")
    run_uvloop(run_worker(config))


if __name__ == "__main__":
    main()
