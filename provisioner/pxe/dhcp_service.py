"""The DHCP service: ports 67 and 4011 on one interface, around the pure policy (dhcp_policy.decide).

Safety: the sockets are bound to the named interface only (SO_BINDTODEVICE): DHCP is never
answered anywhere else.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from provisioner.pxe.datagram import DatagramService, udp_socket
from provisioner.pxe.dhcp_leases import LeaseState, LeaseStore
from provisioner.pxe.dhcp_packet import PXE_BOOT_SERVER_PORT, SERVER_PORT, DhcpPacket, encode_packet, parse_packet
from provisioner.pxe.dhcp_policy import DhcpPolicy, decide
from provisioner.pxe.dhcp_reply import reply_destination
from provisioner.pxe.events import Counters, EventSink

log = logging.getLogger("provisioner.pxe.dhcp")


class DhcpService(DatagramService[DhcpPacket]):
    """Owns the two sockets and the lease store (full DHCP only); decisions come from the policy."""

    name = "dhcp"

    def __init__(self, policy: DhcpPolicy, interface: str, leases: LeaseStore | None, counters: Counters,
                 on_event: EventSink, ipxe_loaded_at: Callable[[str], float | None] = lambda mac: None):
        super().__init__(counters, on_event)
        self.policy = policy
        self.interface = interface
        self.leases = leases
        self.ipxe_loaded_at = ipxe_loaded_at

    def open_sockets(self) -> Iterator[socket.socket]:
        for port in (SERVER_PORT, PXE_BOOT_SERVER_PORT):
            yield udp_socket("0.0.0.0", port, interface=self.interface, broadcast=True)

    def describe(self) -> str:
        pool = self.policy.pool
        mode = "proxy" if pool is None else f"full {pool.start}-{pool.end}"
        return f"{mode} mode on {self.interface}, ports {SERVER_PORT} and {PXE_BOOT_SERVER_PORT}"

    def parse(self, data: bytes) -> DhcpPacket:
        return parse_packet(data)

    def handle(self, sock: socket.socket, packet: DhcpPacket, source: Any) -> None:
        port = sock.getsockname()[1]
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dhcp: port %d from %s: type %s mac %s options %s", port, source, packet.message_type,
                      packet.mac, sorted(packet.options))
        loaded_at = self.ipxe_loaded_at(packet.mac) if self.policy.chain_ipxe_roms else None
        decision = decide(packet, port, self.policy, self.leases.leases if self.leases else {}, time.time(), loaded_at)
        if self.leases is not None:
            if decision.lease_change is not None:
                self.leases.put(decision.lease_change, persist=decision.lease_change.state == LeaseState.BOUND)
            if decision.lease_release is not None:
                self.leases.remove(decision.lease_release)
        if decision.reply is None:
            return
        try:
            payload = encode_packet(decision.reply)
        except ValueError as exc:
            log.warning("dhcp: cannot encode the reply to %s: %s", packet.mac, exc)
            return
        if not self.send(sock, payload, reply_destination(packet, source, port, decision.reply)):
            return
        self.count("replies")
        if decision.event is not None:
            self.on_event(decision.event)
