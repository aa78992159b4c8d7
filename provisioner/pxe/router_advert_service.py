"""IPv6 Router Advertisements that say "no IPv6 here", so iPXE stops waiting for a router.

iPXE configures IPv6 beside DHCPv4 and its `Configuring (net0 ...)` waits for both: on a segment
with no IPv6 router it sends Router Solicitations for ~16 s before giving up (measured with QEMU's
iPXE ROM against our full DHCP: ACK at 0.0 s, boot.ipxe fetched at 16.1 s). Our answer
(router_advert_packet.py) ends that wait at once and configures nothing on any client. dnsmasq's
`enable-ra` answers the same solicitations when it also serves DHCPv6.

Only with full DHCP (an isolated segment that has no other router); the raw ICMPv6 socket is bound
to the served interface.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from typing import Any

from provisioner.pxe.datagram import DatagramService
from provisioner.pxe.events import Counters, EventSink
from provisioner.pxe.router_advert_packet import ALL_NODES, ALL_ROUTERS, NDP_HOP_LIMIT, is_router_solicit, router_advert
from provisioner.pxe.router_advert_policy import should_advertise


def interface_mac(interface: str) -> bytes:
    """The interface's MAC from sysfs; raises OSError."""
    with open(f"/sys/class/net/{interface}/address") as handle:
        return bytes.fromhex(handle.read().strip().replace(":", ""))


class RouterAdvertService(DatagramService[bytes]):
    """Answers Router Solicitations on one interface."""

    name = "ra"

    def __init__(self, interface: str, counters: Counters, on_event: EventSink):
        super().__init__(counters, on_event)
        self.interface = interface
        self._index = 0               # the interface index, known once started
        self._last_sent = float("-inf")
        self._advert = b""

    def open_sockets(self) -> Iterator[socket.socket]:
        """The raw ICMPv6 socket; raises OSError (no IPv6, no such interface, not root)."""
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
        self._index = index
        yield sock

    def describe(self) -> str:
        return f"answering IPv6 router solicitations on {self.interface} (no prefixes, router lifetime 0)"

    def parse(self, data: bytes) -> bytes:
        return data           # the raw socket sees every ICMPv6 message: handle() picks the solicitations

    def handle(self, sock: socket.socket, data: bytes, source: Any) -> None:
        if not is_router_solicit(data):
            return            # other ICMPv6 (neighbour discovery, echo): not ours
        self.count("solicits")
        now = asyncio.get_running_loop().time()
        if should_advertise(data, now, self._last_sent) and self.send(sock, self._advert,
                                                                        (ALL_NODES, 0, 0, self._index)):
            self._last_sent = now
            self.count("sent")
