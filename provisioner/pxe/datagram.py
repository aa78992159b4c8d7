"""The one shape of the boot server's datagram services: DHCP, TFTP and IPv6 router advertisements.

A service opens its sockets in `open_sockets()`, decodes each datagram with `parse()` (a
ValueError drops it, counted as `<name>_malformed`: no reply to garbage) and answers it in
`handle()`. The running event loop watches the sockets (`add_reader`), so the datagram
services, the HTTP server and the discovery long-polls share one process and one thread; `start()`
and `close()` are coroutines for every service. Counts go to the server's one `counters` dict,
prefixed with the service's name, and what a machine did is reported as a BootEvent (events.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from provisioner.pxe.events import Counters, EventSink

log = logging.getLogger("provisioner.pxe")

MAX_DATAGRAM = 65535   # read whole datagrams: the parser, not the socket, decides what is too long
READ_BATCH = 64        # datagrams handled per wake-up before the loop serves anything else

Request = TypeVar("Request")


def udp_socket(host: str, port: int, *, interface: str | None = None, broadcast: bool = False) -> socket.socket:
    """A bound, non-blocking UDP socket, only on `interface` when given (SO_BINDTODEVICE); raises OSError."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if interface is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class DatagramService(Generic[Request]):
    """Base of the datagram services; subclasses set `name` and implement the four methods below."""

    name = "datagram"

    def __init__(self, counters: Counters, on_event: EventSink):
        self.counters = counters
        self.on_event = on_event
        self.sockets: list[socket.socket] = []

    def open_sockets(self) -> Iterator[socket.socket]:
        """Yield the bound, non-blocking sockets to read; raises OSError."""
        raise NotImplementedError

    def parse(self, data: bytes) -> Request:
        """One datagram decoded; raises ValueError for one to drop unanswered."""
        raise NotImplementedError

    def handle(self, sock: socket.socket, request: Request, source: Any) -> None:
        """Answer one decoded datagram that arrived on `sock` from `source`."""
        raise NotImplementedError

    def describe(self) -> str:
        """What the service answers where, for the log line once it started."""
        raise NotImplementedError

    async def start(self) -> None:
        """Open the sockets and start reading them; raises OSError (address in use, no such interface,
        no permission), with every socket opened so far closed again."""
        loop = asyncio.get_running_loop()
        try:
            for sock in self.open_sockets():
                self.sockets.append(sock)
        except OSError:
            await self.close()
            raise
        for sock in self.sockets:
            loop.add_reader(sock.fileno(), self._readable, sock)
        log.info("%s: %s", self.name, self.describe())

    async def close(self) -> None:
        """Stop reading and close the sockets; calling it again does nothing."""
        loop = asyncio.get_running_loop()
        for sock in self.sockets:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets.clear()

    def _readable(self, sock: socket.socket) -> None:
        for _ in range(READ_BATCH):
            try:
                data, source = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("%s: receive failed: %s", self.name, exc)
                return
            try:
                request = self.parse(data)
            except ValueError as exc:
                self.count("malformed")
                log.debug("%s: dropped a malformed datagram from %s: %s", self.name, source, exc)
                continue
            self.handle(sock, request, source)

    def send(self, sock: socket.socket, payload: bytes, destination: Any) -> bool:
        """Send one datagram; False (logged) when it cannot go out: the client asks again."""
        try:
            sock.sendto(payload, destination)
        except OSError as exc:
            log.warning("%s: cannot send to %s: %s", self.name, destination, exc)
            return False
        return True

    def count(self, name: str, value: int = 1) -> None:
        key = f"{self.name}_{name}"
        self.counters[key] = self.counters.get(key, 0) + value
