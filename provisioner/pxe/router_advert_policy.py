"""Whether to answer an IPv6 Router Solicitation (pure).

Only well-formed solicitations, and at most one advertisement per RA_MIN_INTERVAL (RFC 4861 §10
MIN_DELAY_BETWEEN_RAS): the answer goes to all nodes, so one serves every client that asked meanwhile.
Only full DHCP answers at all (an isolated segment with no other router); the server decides that.
"""

from __future__ import annotations

from provisioner.pxe.router_advert_packet import is_router_solicit

RA_MIN_INTERVAL = 3.0


def should_advertise(packet: bytes, now: float, last_sent: float) -> bool:
    """True when `packet` is a Router Solicitation and the last advertisement is RA_MIN_INTERVAL old."""
    return is_router_solicit(packet) and now - last_sent >= RA_MIN_INTERVAL
