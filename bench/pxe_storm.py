"""Simulated PXE clients for bench/pxe.py; runs inside a lab network namespace and prints JSON.

    python -m bench.pxe_storm --server 10.77.0.1 --clients 200 --concurrency 50 \
        --steps dhcp,tftp,script,initrd --initrd initrd-30M.bin --deadline 240

Each client: proxyDHCP DISCOVER with PXE options (own MAC and xid) -> TFTP undionly.kpxe
(blksize 1468, what PXE ROMs ask for) -> HTTP /ipxe?mac= -> HTTP /assets/<initrd> (read and
discarded). `--steps tftp` alone is the TFTP peer comparison (works against dnsmasq too).

The `install` step is what the live installer then does, with the boot's secret from the script:
POST /report (start, done), POST /installed, and the next boot's /ipxe (which must now carry no
secret: the machine boots its disk). With `--http-servers A,B` client i fetches its script from
server i mod n and sends its writes to the next one (several servers sharing their state in etcd).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from provisioner.pxe import dhcp_packet as wire  # noqa: E402


class DhcpClients(asyncio.DatagramProtocol):
    """One port-68 socket for all simulated clients; offers are matched by xid."""

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future] = {}
        self.transport: asyncio.DatagramTransport

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr):
        try:
            packet = wire.parse_packet(data)
        except wire.DhcpParseError:
            return
        future = self.waiting.pop(packet.xid, None)
        if future is not None and not future.done() and packet.op == wire.BOOTREPLY:
            future.set_result(packet)

    async def discover(self, mac: bytes, xid: int, timeout: float = 4.0) -> wire.DhcpPacket:
        options = {wire.OPT_MESSAGE_TYPE: bytes((wire.DISCOVER,)),
                   wire.OPT_VENDOR_CLASS: b"PXEClient:Arch:00000:UNDI:002001",
                   wire.OPT_CLIENT_ARCH: b"\x00\x00", wire.OPT_CLIENT_NDI: b"\x01\x02\x01",
                   wire.OPT_CLIENT_GUID: b"\x00" + mac + bytes(10)}
        packet = wire.DhcpPacket(op=wire.BOOTREQUEST, xid=xid, chaddr=mac, options=options, flags=wire.BROADCAST_FLAG)
        for attempt in range(4):
            future = asyncio.get_running_loop().create_future()
            self.waiting[xid] = future
            self.transport.sendto(wire.encode_packet(packet), ("255.255.255.255", 67))
            try:
                return await asyncio.wait_for(future, timeout / 4 * (attempt + 1))
            except TimeoutError:
                continue
        raise TimeoutError("no DHCP offer")


class TftpDownload(asyncio.DatagramProtocol):
    """A minimal RFC 1350/2348/2349 read: RRQ, OACK, DATA/ACK lock-step, retransmit on timeout."""

    def __init__(self, server: tuple[str, int], filename: str, blksize: int):
        self.server, self.filename, self.blksize = server, filename, blksize
        self.done = asyncio.get_running_loop().create_future()
        self.size = 0
        self.expected = 1
        self.last = b""
        self.peer: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.last = (struct.pack("!H", 1) + self.filename.encode() + b"\0octet\0blksize\0"
                     + str(self.blksize).encode() + b"\0tsize\x000\0")
        transport.sendto(self.last, self.server)

    def datagram_received(self, data, addr):
        if len(data) < 4 or self.done.done():
            return
        opcode = struct.unpack("!H", data[:2])[0]
        if self.peer is None:
            self.peer = addr
        if opcode == 6:            # OACK
            for key, value in zip(data[2:].split(b"\0")[::2], data[2:].split(b"\0")[1::2], strict=False):
                if key.lower() == b"blksize":
                    self.blksize = int(value)
            self._ack(0)
        elif opcode == 3:          # DATA
            block = struct.unpack("!H", data[2:4])[0]
            if block == self.expected & 0xFFFF:
                self.size += len(data) - 4
                self._ack(block)
                self.expected += 1
                if len(data) - 4 < self.blksize:
                    self.done.set_result(self.size)
            else:
                self.transport.sendto(self.last, self.peer)
        elif opcode == 5:
            message = data[4:].split(b"\0")[0]
            self.done.set_exception(RuntimeError(f"TFTP error {message!r}"))

    def _ack(self, block: int):
        self.last = struct.pack("!HH", 4, block)
        self.transport.sendto(self.last, self.peer)

    def resend(self):
        self.transport.sendto(self.last, self.peer or self.server)


async def tftp_get(server: str, port: int, filename: str, blksize: int = 1468, timeout: float = 20) -> int:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: TftpDownload((server, port), filename, blksize), family=socket.AF_INET)
    try:
        deadline = loop.time() + timeout
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(proto.done), 1.0)
            except TimeoutError:
                if loop.time() > deadline:
                    raise TimeoutError(f"TFTP {filename}: no progress") from None
                proto.resend()
    finally:
        transport.close()


async def one_client(i: int, args, dhcp_clients: DhcpClients | None, session: aiohttp.ClientSession,
                     timings: dict[str, list[float]]) -> None:
    mac = bytes((0x52, 0x54, 0x01, 0x00, i >> 8, i & 0xFF))
    mac_text = "-".join(f"{b:02x}" for b in mac)
    steps = args.steps

    async def timed(name, coro):
        start = time.monotonic()
        result = await coro
        timings.setdefault(name, []).append(time.monotonic() - start)
        return result

    if dhcp_clients is not None:      # created when the steps include dhcp
        offer = await timed("dhcp", dhcp_clients.discover(mac, random.getrandbits(32)))
        if offer.file != b"undionly.kpxe":
            raise RuntimeError(f"unexpected boot file {offer.file!r}")
    if "tftp" in steps:
        size = await timed("tftp", tftp_get(args.server, args.tftp_port, "undionly.kpxe"))
        if size != args.tftp_size:
            raise RuntimeError(f"TFTP size {size} != {args.tftp_size}")

    async def fetch(url: str) -> int:
        total = 0
        async with session.get(url) as response:
            if response.status != 200:
                raise RuntimeError(f"{url}: HTTP {response.status}")
            async for chunk in response.content.iter_chunked(1 << 20):
                total += len(chunk)
        return total

    servers = args.http_servers or [args.server]
    base = f"http://{servers[i % len(servers)]}:{args.http_port}"
    if "script" in steps:
        script = await timed("script", text(session, "GET", f"{base}/ipxe?mac={mac_text}&uuid=&hostname="))
        if "install" in steps:
            writes = f"http://{servers[(i + 1) % len(servers)]}:{args.http_port}"
            await timed("install", install(session, base, writes, mac_text, script))
    if "initrd" in steps:
        size = await timed("initrd", fetch(f"{base}/assets/{args.initrd}"))
        if size != args.initrd_size:
            raise RuntimeError(f"initrd size {size} != {args.initrd_size}")


async def text(session: aiohttp.ClientSession, method: str, url: str, body: str | None = None,
               secret: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    for _ in range(5):
        async with session.request(method, url, data=body, headers=headers) as response:
            answer = await response.text()
            if response.status == 429:   # what the live system's hook does: wait as told, send again
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status != 200:
                raise RuntimeError(f"{method} {url}: HTTP {response.status}: {answer.strip()}")
            return answer
    raise RuntimeError(f"{method} {url}: still HTTP 429")


async def install(session: aiohttp.ClientSession, boot: str, writes: str, mac: str, script: str) -> None:
    """The live system's writes with the boot's secret, then the next boot (from its disk)."""
    found = re.search(r"^set boot_secret (\S+)$", script, re.M)
    if found is None:
        raise RuntimeError(f"{mac}: the install script carries no boot secret")
    secret = found.group(1)
    for report in ({"event": "start", "stage": "source"}, {"event": "done", "stage": "done"}):
        await text(session, "POST", f"{writes}/report?mac={mac}", json.dumps(report), secret)
    await text(session, "POST", f"{writes}/installed?mac={mac}", None, secret)
    again = await text(session, "GET", f"{boot}/ipxe?mac={mac}&uuid=&hostname=")
    if "boot_secret" in again:
        raise RuntimeError(f"{mac}: still installing after POST /installed")


async def storm(args) -> dict:
    loop = asyncio.get_running_loop()
    dhcp_clients: DhcpClients | None = None
    if "dhcp" in args.steps:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, args.interface.encode())
        sock.bind(("0.0.0.0", 68))
        _, dhcp_clients = await loop.create_datagram_endpoint(DhcpClients, sock=sock)
    timings: dict[str, list[float]] = {}
    failures: list[str] = []
    semaphore = asyncio.Semaphore(args.concurrency)
    connector = aiohttp.TCPConnector(limit=args.concurrency)

    timeout = aiohttp.ClientTimeout(total=args.deadline)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def guarded(i):
            async with semaphore:
                try:
                    if args.source_ips:   # one address per machine, as on a segment (writes are limited per address)
                        source = args.source_ips[i % len(args.source_ips)]
                        async with aiohttp.ClientSession(
                                connector=aiohttp.TCPConnector(local_addr=(source, 0)), timeout=timeout) as own:
                            await one_client(i, args, dhcp_clients, own, timings)
                    else:
                        await one_client(i, args, dhcp_clients, session, timings)
                except Exception as exc:  # counted, reported; the run goes on
                    failures.append(f"client {i}: {type(exc).__name__}: {exc}")

        start = time.monotonic()
        tasks = [asyncio.create_task(guarded(i)) for i in range(args.first_client, args.first_client + args.clients)]
        done, pending = await asyncio.wait(tasks, timeout=args.deadline)
        for task in pending:
            task.cancel()
        wall = time.monotonic() - start
    summary = {"clients": args.clients, "concurrency": args.concurrency, "wall_seconds": round(wall, 3),
               "failures": len(failures) + len(pending), "failure_examples": failures[:5],
               "timed_out": len(pending)}
    for name, values in timings.items():
        values.sort()
        summary[f"{name}_p50_ms"] = round(statistics.median(values) * 1000, 1)
        summary[f"{name}_p95_ms"] = round(values[int(len(values) * 0.95) - 1] * 1000, 1)
    return summary


def storm_data_dir(folder: Path) -> Path:
    """examples/cluster plus groups for any other MAC: install first, then the installed system."""
    shutil.copytree(Path(__file__).resolve().parents[1] / "examples" / "cluster", folder)
    common = "  hostname: node\n  install_disk: /dev/vda\n  ssh_authorized_keys: []\n  cluster_token: storm\n"
    (folder / "groups" / "any-install.yaml").write_text(
        f"id: any-install\nprofile: install\nmetadata:\n{common}")
    (folder / "groups" / "any-installed.yaml").write_text(
        f"id: any-installed\nprofile: installed\nselector:\n  os: installed\nmetadata:\n{common}")
    return folder


def source_ips(text: str) -> list[str]:
    """'10.77.0.10-250' -> ['10.77.0.10', ..., '10.77.0.250'] ('' -> [])."""
    if not text:
        return []
    prefix, _, last = text.rpartition(".")
    first, _, end = last.partition("-")
    return [f"{prefix}.{n}" for n in range(int(first), int(end or first) + 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--http-servers", default="", help="A,B: HTTP servers to split the clients across")
    parser.add_argument("--source-ips", default="", help="PREFIX.FIRST-LAST, e.g. 10.77.0.10-250: the clients' "
                                                         "own addresses (already on the interface)")
    parser.add_argument("--tftp-port", type=int, default=69)
    parser.add_argument("--interface", default="eth0")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--first-client", type=int, default=0, help="number of the first client (its MAC)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--steps", default="dhcp,tftp,script,initrd")
    parser.add_argument("--initrd", default="initrd-30M.bin")
    parser.add_argument("--initrd-size", type=int, default=30 * 1024 * 1024)
    parser.add_argument("--tftp-size", type=int, default=0)
    parser.add_argument("--deadline", type=float, default=240)
    args = parser.parse_args()
    args.steps = set(args.steps.split(","))
    args.http_servers = [s for s in args.http_servers.split(",") if s]
    args.source_ips = source_ips(args.source_ips)
    print(json.dumps(asyncio.run(storm(args))))


if __name__ == "__main__":
    main()
