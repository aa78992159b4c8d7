"""Whether and what to answer a DHCP request: the pure policy of the DHCP service (`decide`).

Modes:
- proxy (default): answer only PXE / HTTP-boot clients (option 60), never hand out addresses; the
  site's DHCP server keeps leasing (PXE 2.1 proxyDHCP). DISCOVER on port 67 gets a proxy OFFER;
  REQUEST on port 4011 (the PXE boot server port) gets an ACK with the boot file.
- full (`--dhcp-range`): a DHCP server for an isolated segment; leases are persisted, static
  leases come from the inventory (group selector `mac` + metadata `ip`).

The reply packets themselves are built by dhcp_reply.py; the sockets are dhcp_service.py.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field, replace

from provisioner.pxe.dhcp_leases import OFFER_HOLD_SECONDS, DhcpRange, LeaseRecord, LeaseState, allocate
from provisioner.pxe.dhcp_packet import (
    ACK,
    BOOTREQUEST,
    DECLINE,
    DISCOVER,
    HTYPE_ETHERNET,
    INFORM,
    OFFER,
    PXE_BOOT_SERVER_PORT,
    RELEASE,
    REQUEST,
    DhcpPacket,
    client_info,
)
from provisioner.pxe.dhcp_reply import Lease, ServerIdentity, boot_choice, build_reply, inform_reply, nak
from provisioner.pxe.events import BootEvent, EventSource

log = logging.getLogger("provisioner.pxe.dhcp")

CHAIN_WINDOW = 300.0


@dataclass(frozen=True)
class Decision:
    reply: DhcpPacket | None
    lease_change: LeaseRecord | None = None    # record to store
    lease_release: str | None = None           # MAC whose lease to drop
    event: BootEvent | None = None             # for the machine state, once the reply went out


NO_REPLY = Decision(None)


@dataclass(frozen=True)
class DhcpPolicy:
    identity: ServerIdentity
    pool: DhcpRange | None = None               # None: proxy mode
    static: dict[str, str] = field(default_factory=dict)   # MAC -> IP
    # Load our own iPXE binary even into firmware that already is iPXE (QEMU's NIC ROMs, some NICs):
    # an iPXE client gets the binary unless it fetched one over TFTP in the last CHAIN_WINDOW s.
    chain_ipxe_roms: bool = False

    @property
    def proxy(self) -> bool:
        return self.pool is None


def _lease(pool: DhcpRange, ip: str) -> Lease:
    return Lease(ip=ip, mask=str(pool.network.netmask), router=pool.router, dns=pool.dns,
                 lease_seconds=pool.lease_seconds)


def decide(packet: DhcpPacket, port: int, policy: DhcpPolicy, leases: dict[str, LeaseRecord],
           now: float, ipxe_loaded_at: float | None = None) -> Decision:
    """What to do with one parsed request (pure). ipxe_loaded_at: when this MAC last fetched one
    of our iPXE binaries over TFTP (only used with chain_ipxe_roms)."""
    if packet.op != BOOTREQUEST or packet.htype != HTYPE_ETHERNET or len(packet.chaddr) != 6:
        return NO_REPLY
    client = client_info(packet)
    if (policy.chain_ipxe_roms and client.is_ipxe and not client.is_http_boot
            and (ipxe_loaded_at is None or now - ipxe_loaded_at > CHAIN_WINDOW)):
        client = replace(client, is_ipxe=False)
    boot = boot_choice(client, policy.identity.files) if client.is_pxe else None
    detail = {"arch": client.arch_name, "ipxe": client.is_ipxe, "file": boot.filename if boot else None}
    ours = policy.identity.server_ip
    mtype = client.message_type
    mac = client.mac

    def answer(reply: DhcpPacket, stage: str, lease_change: LeaseRecord | None = None,
               ip: str | None = None) -> Decision:
        event = BootEvent(stage=stage, source=EventSource.DHCP, mac=mac, detail={**detail, "ip": ip} if ip else detail)
        return Decision(reply, lease_change=lease_change, event=event)

    if port == PXE_BOOT_SERVER_PORT:
        # PXE boot server (BINL-style): the client already has an address; just hand out the file.
        if boot is None or mtype not in (REQUEST, INFORM):
            return NO_REPLY
        return answer(build_reply(packet, client, ACK, policy.identity, boot, None), "dhcp-boot-server")

    if policy.pool is None:
        if boot is None:
            return NO_REPLY  # not a PXE client, or an architecture we do not serve: stay silent
        if mtype == DISCOVER:
            return answer(build_reply(packet, client, OFFER, policy.identity, boot, None), "dhcp-offer")
        if mtype == REQUEST and client.server_id == ours:
            return answer(build_reply(packet, client, ACK, policy.identity, boot, None), "dhcp-ack")
        return NO_REPLY

    pool = policy.pool
    if mtype == DISCOVER:
        ip = allocate(leases, mac, pool, policy.static, now, client.requested_ip)
        if ip is None:
            log.warning("dhcp: range exhausted, no offer for %s", mac)
            return NO_REPLY
        held = LeaseRecord(mac, ip, now + OFFER_HOLD_SECONDS, client.hostname, LeaseState.OFFERED)
        current = leases.get(mac)
        keep = current if current is not None and current.ip == ip and current.expires > held.expires else held
        reply = build_reply(packet, client, OFFER, policy.identity, boot, _lease(pool, ip))
        return answer(reply, "dhcp-offer", keep, ip)
    if mtype == REQUEST:
        if client.server_id is not None and client.server_id != ours:
            offered = leases.get(mac)
            return Decision(None, lease_release=mac if offered and offered.state == LeaseState.OFFERED else None)
        wanted = client.requested_ip or (packet.ciaddr if packet.ciaddr != "0.0.0.0" else None)
        ip = allocate(leases, mac, pool, policy.static, now, wanted)
        if wanted is None or ip != wanted:
            # RFC 2131 §4.3.2: NAK a wrong address when the client selected us or is in INIT-REBOOT
            # on our network; stay silent for addresses on other networks.
            if client.server_id == ours or (wanted is not None and _in_network(wanted, pool)):
                return answer(nak(packet, policy.identity), "dhcp-nak")
            return NO_REPLY
        record = LeaseRecord(mac, ip, now + pool.lease_seconds, client.hostname, LeaseState.BOUND)
        return answer(build_reply(packet, client, ACK, policy.identity, boot, _lease(pool, ip)), "dhcp-ack",
                      record, ip)
    if mtype in (RELEASE, DECLINE):
        if client.server_id in (None, ours):
            return Decision(None, lease_release=mac)
        return NO_REPLY
    if mtype == INFORM:
        reply = inform_reply(packet, client, policy.identity, boot, str(pool.network.netmask), pool.router)
        return answer(reply, "dhcp-inform")
    return NO_REPLY


def _in_network(ip: str, pool: DhcpRange) -> bool:
    try:
        return ipaddress.IPv4Address(ip) in pool.network
    except ValueError:
        return False
