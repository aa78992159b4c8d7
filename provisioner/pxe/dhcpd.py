"""The DHCP service: a pure policy (`decide`) and a thin asyncio UDP adapter around it.

Modes:
- proxy (default): answer only PXE / HTTP-boot clients (option 60), never hand out addresses; the
  site's DHCP server keeps leasing (PXE 2.1 proxyDHCP). DISCOVER on port 67 gets a proxy OFFER;
  REQUEST on port 4011 (the PXE boot server port) gets an ACK with the boot file.
- full (`--dhcp-range`): a DHCP server for an isolated segment; leases are persisted, static
  leases come from the inventory (group selector `mac` + metadata `ip`).

Safety: sockets are bound to the named interface only (SO_BINDTODEVICE).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from provisioner.pxe import dhcp
from provisioner.pxe.leases import OFFER_HOLD_SECONDS, DhcpRange, LeaseRecord, LeaseStore, allocate

log = logging.getLogger("provisioner.pxe.dhcp")

PXE_BOOT_SERVER_PORT = 4011
CHAIN_WINDOW = 300.0


@dataclass(frozen=True)
class Decision:
    reply: dhcp.DhcpPacket | None
    lease_change: LeaseRecord | None = None    # record to store
    lease_release: str | None = None           # MAC whose lease to drop
    stage: str | None = None                   # machine-state event, e.g. "dhcp-offer"
    detail: dict = field(default_factory=dict)


NO_REPLY = Decision(None)


@dataclass(frozen=True)
class DhcpPolicy:
    identity: dhcp.ServerIdentity
    pool: DhcpRange | None = None               # None: proxy mode
    static: dict[str, str] = field(default_factory=dict)   # MAC -> IP
    # Load our own iPXE binary even into firmware that already is iPXE (QEMU's NIC ROMs, some NICs):
    # an iPXE client gets the binary unless it fetched one over TFTP in the last CHAIN_WINDOW s.
    chain_ipxe_roms: bool = False

    @property
    def proxy(self) -> bool:
        return self.pool is None


def _lease(pool: DhcpRange, ip: str) -> dhcp.Lease:
    return dhcp.Lease(ip=ip, mask=str(pool.network.netmask), router=pool.router, dns=pool.dns,
                      lease_seconds=pool.lease_seconds)


def decide(packet: dhcp.DhcpPacket, port: int, policy: DhcpPolicy, leases: dict[str, LeaseRecord],
           now: float, ipxe_loaded_at: float | None = None) -> Decision:
    """What to do with one parsed request (pure). ipxe_loaded_at: when this MAC last fetched one
    of our iPXE binaries over TFTP (only used with chain_ipxe_roms)."""
    if packet.op != dhcp.BOOTREQUEST or packet.htype != dhcp.HTYPE_ETHERNET or len(packet.chaddr) != 6:
        return NO_REPLY
    client = dhcp.client_info(packet)
    if (policy.chain_ipxe_roms and client.is_ipxe and not client.is_http_boot
            and (ipxe_loaded_at is None or now - ipxe_loaded_at > CHAIN_WINDOW)):
        client = replace(client, is_ipxe=False)
    boot = dhcp.boot_choice(client, policy.identity.files) if client.is_pxe else None
    detail = {"arch": dhcp.ARCH_NAMES.get(client.arch, client.arch), "ipxe": client.is_ipxe,
              "file": boot.filename if boot else None}
    ours = policy.identity.server_ip
    mtype = client.message_type

    if port == PXE_BOOT_SERVER_PORT:
        # PXE boot server (BINL-style): the client already has an address; just hand out the file.
        if boot is None or mtype not in (dhcp.REQUEST, dhcp.INFORM):
            return NO_REPLY
        reply = dhcp.build_reply(packet, client, dhcp.ACK, policy.identity, boot, None)
        return Decision(reply, stage="dhcp-boot-server", detail=detail)

    if policy.proxy:
        if boot is None:
            return NO_REPLY  # not a PXE client, or an architecture we do not serve: stay silent
        if mtype == dhcp.DISCOVER:
            reply = dhcp.build_reply(packet, client, dhcp.OFFER, policy.identity, boot, None)
            return Decision(reply, stage="dhcp-offer", detail=detail)
        if mtype == dhcp.REQUEST and client.server_id == ours:
            reply = dhcp.build_reply(packet, client, dhcp.ACK, policy.identity, boot, None)
            return Decision(reply, stage="dhcp-ack", detail=detail)
        return NO_REPLY

    pool = policy.pool
    assert pool is not None
    mac = client.mac
    if mtype == dhcp.DISCOVER:
        ip = allocate(leases, mac, pool, policy.static, now, client.requested_ip)
        if ip is None:
            log.warning("dhcp: range exhausted, no offer for %s", mac)
            return NO_REPLY
        reply = dhcp.build_reply(packet, client, dhcp.OFFER, policy.identity, boot, _lease(pool, ip))
        held = LeaseRecord(mac, ip, now + OFFER_HOLD_SECONDS, client.hostname, "offered")
        current = leases.get(mac)
        keep = current if current is not None and current.ip == ip and current.expires > held.expires else held
        return Decision(reply, lease_change=keep, stage="dhcp-offer", detail={**detail, "ip": ip})
    if mtype == dhcp.REQUEST:
        if client.server_id is not None and client.server_id != ours:
            return Decision(None, lease_release=mac if leases.get(mac) and
                            leases[mac].state == "offered" else None)
        wanted = client.requested_ip or (packet.ciaddr if packet.ciaddr != "0.0.0.0" else None)
        ip = allocate(leases, mac, pool, policy.static, now, wanted)
        if wanted is None or ip != wanted:
            # RFC 2131 §4.3.2: NAK a wrong address when the client selected us or is in INIT-REBOOT
            # on our network; stay silent for addresses on other networks.
            if client.server_id == ours or (wanted is not None and _in_network(wanted, pool)):
                return Decision(dhcp.nak(packet, policy.identity), stage="dhcp-nak", detail=detail)
            return NO_REPLY
        reply = dhcp.build_reply(packet, client, dhcp.ACK, policy.identity, boot, _lease(pool, ip))
        record = LeaseRecord(mac, ip, now + pool.lease_seconds, client.hostname, "bound")
        return Decision(reply, lease_change=record, stage="dhcp-ack", detail={**detail, "ip": ip})
    if mtype in (dhcp.RELEASE, dhcp.DECLINE):
        if client.server_id in (None, ours):
            return Decision(None, lease_release=mac)
        return NO_REPLY
    if mtype == dhcp.INFORM:
        # RFC 2131 §3.4: configuration only, no address and no lease time.
        reply = dhcp.build_reply(packet, client, dhcp.ACK, policy.identity, boot, None)
        lease = _lease(pool, packet.ciaddr)
        options = dict(reply.options)
        options[dhcp.OPT_SUBNET_MASK] = ipaddress.IPv4Address(lease.mask).packed
        if lease.router:
            options[dhcp.OPT_ROUTER] = ipaddress.IPv4Address(lease.router).packed
        return Decision(replace(reply, options=options), stage="dhcp-inform", detail=detail)
    return NO_REPLY


def _in_network(ip: str, pool: DhcpRange) -> bool:
    try:
        return ipaddress.IPv4Address(ip) in pool.network
    except ValueError:
        return False


# --------------------------------------------------------------------------- asyncio adapter

EventSink = Callable[[str, str, dict], None]   # (mac, stage, detail)


class DhcpProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: DhcpService, port: int):
        self.service = service
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.service.handle(data, addr, self.port, self.transport)

    def error_received(self, exc) -> None:
        log.debug("dhcp socket error on port %d: %s", self.port, exc)


class DhcpService:
    """Owns the sockets (67 and 4011 on one interface), the lease store and the counters."""

    def __init__(self, policy: DhcpPolicy, interface: str, leases: LeaseStore | None,
                 on_event: EventSink, metrics: dict[str, int], listen_port: int = 67,
                 boot_server_port: int = PXE_BOOT_SERVER_PORT, client_port: int = 68,
                 ipxe_loaded_at: Callable[[str], float | None] = lambda mac: None):
        self.policy = policy
        self.interface = interface
        self.leases = leases
        self.on_event = on_event
        self.metrics = metrics
        self.listen_port = listen_port
        self.boot_server_port = boot_server_port
        self.client_port = client_port
        self.ipxe_loaded_at = ipxe_loaded_at
        self.transports: list[asyncio.DatagramTransport] = []

    def _socket(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        # Only this interface: never answer DHCP anywhere else (network-safety rule).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
        sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
        return sock

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for port in (self.listen_port, self.boot_server_port):
            transport, _ = await loop.create_datagram_endpoint(
                lambda port=port: DhcpProtocol(self, port), sock=self._socket(port))
            self.transports.append(transport)
        mode = "proxy" if self.policy.proxy else f"full {self.policy.pool.start}-{self.policy.pool.end}"
        log.info("dhcp: %s mode on %s, ports %d and %d", mode, self.interface, self.listen_port,
                 self.boot_server_port)

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        self.transports.clear()

    def handle(self, data: bytes, addr, port: int, transport) -> None:
        logical_port = PXE_BOOT_SERVER_PORT if port == self.boot_server_port else 67
        try:
            packet = dhcp.parse_packet(data)
        except dhcp.DhcpParseError as exc:
            self.metrics["dhcp_malformed"] = self.metrics.get("dhcp_malformed", 0) + 1
            log.debug("dhcp: dropped malformed datagram from %s: %s", addr, exc)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dhcp: port %d from %s: type %s mac %s options %s", logical_port, addr, packet.message_type,
                      packet.mac, sorted(packet.options))
        now = time.time()
        decision = decide(packet, logical_port, self.policy, self.leases.leases if self.leases else {}, now,
                          self.ipxe_loaded_at(packet.mac) if self.policy.chain_ipxe_roms else None)
        if self.leases is not None:
            if decision.lease_change is not None:
                self.leases.put(decision.lease_change, persist=decision.lease_change.state == "bound")
            if decision.lease_release is not None:
                self.leases.remove(decision.lease_release)
        if decision.reply is None:
            return
        dest = dhcp.reply_destination(packet, addr, logical_port, decision.reply)
        if dest[1] == 68:
            dest = (dest[0], self.client_port)
        try:
            transport.sendto(dhcp.encode_packet(decision.reply), dest)
        except (OSError, ValueError) as exc:
            log.warning("dhcp: cannot send reply to %s: %s", dest, exc)
            return
        self.metrics["dhcp_replies"] = self.metrics.get("dhcp_replies", 0) + 1
        if decision.stage:
            self.on_event(packet.mac, decision.stage, decision.detail)
