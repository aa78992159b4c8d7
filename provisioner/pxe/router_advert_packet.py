"""IPv6 Router Solicitations in, a Router Advertisement that says "no IPv6 here" out (pure).

The advertisement has no prefix, M and O flags clear and a router lifetime of 0 (RFC 4861 §4.2:
"not a default router"): it configures nothing on any client, and it ends iPXE's wait for an IPv6
router (router_advert_service.py says why that matters).
"""

from __future__ import annotations

import struct

ICMPV6_ROUTER_SOLICIT = 133
ICMPV6_ROUTER_ADVERT = 134
OPT_SOURCE_LINK_ADDR = 1
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"
NDP_HOP_LIMIT = 255           # RFC 4861: ND packets are sent with hop limit 255 and checked for it


def is_router_solicit(packet: bytes) -> bool:
    """An ICMPv6 Router Solicitation (type 133, code 0, at least the 8-byte header)."""
    return len(packet) >= 8 and packet[0] == ICMPV6_ROUTER_SOLICIT and packet[1] == 0


def router_advert(mac: bytes) -> bytes:
    """The RA we send: no flags, router lifetime 0, no prefixes, our link-layer address.
    The checksum field is 0: the kernel fills it in for ICMPv6 raw sockets (RFC 3542 §3.1)."""
    if len(mac) != 6:
        raise ValueError(f"link-layer address must be 6 bytes, not {len(mac)}")
    header = struct.pack("!BBHBBHII", ICMPV6_ROUTER_ADVERT, 0, 0, 0, 0, 0, 0, 0)
    return header + bytes((OPT_SOURCE_LINK_ADDR, 1)) + mac
