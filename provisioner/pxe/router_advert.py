"""IPv6 Router Advertisements that say "no IPv6 here", so iPXE stops waiting for a router.

iPXE configures IPv6 beside DHCPv4 and its `Configuring (net0 ...)` waits for both: on a segment
with no IPv6 router it sends Router Solicitations for ~16 s before giving up (measured with QEMU's
iPXE ROM against our full DHCP: ACK at 0.0 s, boot.ipxe fetched at 16.1 s). An answer with no
prefix, M and O flags clear and a router lifetime of 0 (RFC 4861 §4.2: "not a default router")
ends that wait at once and configures nothing on any client. dnsmasq's `enable-ra` answers the
same solicitations when it also serves DHCPv6.

Only with full DHCP (an isolated segment that has no other router); the socket is bound to the
served interface. A packet that is not a well-formed Router Solicitation is counted and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

log = logging.getLogger("provisioner.pxe.ra")

ICMPV6_ROUTER_SOLICIT = 133
ICMPV6_ROUTER_ADVERT = 134
OPT_SOURCE_LINK_ADDR = 1
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"
NDP_HOP_LIMIT = 255           # RFC 4861: ND packets are sent with hop limit 255 and checked for it
RA_MIN_INTERVAL = 3.0         # RFC 4861 MIN_DELAY_BETWEEN_RAS: at most one answer per 3 s


def is_router_solicit(packet: bytes) -> bool:
    """An ICMPv6 Router Solicitation (type 133, code 0, at least the 8-byte header) (pure)."""
    return len(packet) >= 8 and packet[0] == ICMPV6_ROUTER_SOLICIT and packet[1] == 0


def router_advert(mac: bytes) -> bytes:
    """The RA we send (pure): no flags, router lifetime 0, no prefixes, our link-layer address.
    The checksum field is 0: the kernel fills it in for ICMPv6 raw sockets (RFC 3542 §3.1)."""
    if len(mac) != 6:
        raise ValueError(f"link-layer address must be 6 bytes, not {len(mac)}")
    header = struct.pack("!BBHBBHII", ICMPV6_ROUTER_ADVERT, 0, 0, 0, 0, 0, 0, 0)
    return header + bytes((OPT_SOURCE_LINK_ADDR, 1)) + mac


def interface_mac(interface: str) -> bytes:
    """The interface's MAC from sysfs; raises OSError."""
    with open(f"/sys/class/net/{interface}/address") as handle:
        return bytes.fromhex(handle.read().strip().replace(":", ""))


class RouterAdvertService:
    """Answers Router Solicitations on one interface (asyncio reader on a raw ICMPv6 socket)."""

    def __init__(self, interface: str, counters: dict[str, int]):
        self.interface = interface
        self.counters = counters
        self.sock: socket.socket | None = None
        self._index = 0               # the interface index, known once started
        self._last_sent = float("-inf")
        self._advert = b""

    def start(self) -> None:
        """Open and bind the socket; raises OSError (no IPv6, no such interface, not root)."""
        index = socket.if_nametoindex(self.interface)
        self._advert = router_advert(interface_mac(self.interface))
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, NDP_HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, NDP_HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            group = socket.inet_pton(socket.AF_INET6, ALL_ROUTERS) + struct.pack("@I", index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self._index = index
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        log.info("ra: answering IPv6 router solicitations on %s (no prefixes, router lifetime 0)", self.interface)

    def _readable(self) -> None:
        for _ in range(64):
            try:
                packet, _source = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("ra: receive failed: %s", exc)
                return
            if not is_router_solicit(packet):
                continue            # other ICMPv6 (neighbour discovery, echo): not ours
            self.counters["ra_solicits"] = self.counters.get("ra_solicits", 0) + 1
            now = asyncio.get_running_loop().time()
            if now - self._last_sent < RA_MIN_INTERVAL:
                continue
            try:
                self.sock.sendto(self._advert, (ALL_NODES, 0, 0, self._index))
            except OSError as exc:
                log.warning("ra: cannot send a router advertisement on %s: %s", self.interface, exc)
                continue
            self._last_sent = now
            self.counters["ra_sent"] = self.counters.get("ra_sent", 0) + 1

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
