"""The datagram-service base on real loopback sockets: start, serve, count, close; a failed start
leaves no socket open."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from provisioner.pxe.datagram import DatagramService, udp_socket
from provisioner.pxe.events import BootEvent, EventSource


class Echo(DatagramService[bytes]):
    name = "echo"

    def __init__(self, ports: list[int], counters, events: list[BootEvent]):
        super().__init__(counters, events.append)
        self.ports = ports
        self.opened: list[socket.socket] = []

    def open_sockets(self) -> Iterator[socket.socket]:
        for port in self.ports:
            self.opened.append(udp_socket("127.0.0.1", port))
            yield self.opened[-1]

    def describe(self) -> str:
        return f"echoing on {[s.getsockname()[1] for s in self.sockets]}"

    def parse(self, data: bytes) -> bytes:
        if not data.isascii():
            raise ValueError("not ASCII")
        return data

    def handle(self, sock: socket.socket, data: bytes, source: Any) -> None:
        self.count("received")
        if self.send(sock, data.upper(), source):
            self.on_event(BootEvent(stage="echo", source=EventSource.TFTP, ip=source[0], detail={"n": len(data)}))


def test_a_service_answers_counts_reports_and_closes():
    async def scenario():
        counters, events = {}, []
        service = Echo([0, 0], counters, events)
        await service.start()
        ports = [s.getsockname()[1] for s in service.sockets]
        loop = asyncio.get_running_loop()
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        client.bind(("127.0.0.1", 0))
        try:
            for port in ports:
                await loop.sock_sendto(client, b"\xff", ("127.0.0.1", port))     # dropped, no answer
                await loop.sock_sendto(client, b"hello", ("127.0.0.1", port))
                data, _ = await asyncio.wait_for(loop.sock_recvfrom(client, 100), 5)
                assert data == b"HELLO"
        finally:
            client.close()
        await service.close()
        await service.close()          # twice is harmless
        assert counters == {"echo_received": 2, "echo_malformed": 2} and [e.ip for e in events] == ["127.0.0.1", "127.0.0.1"]
        assert service.sockets == []
    asyncio.run(scenario())


def test_a_failed_start_closes_what_it_opened():
    async def scenario():
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # no SO_REUSEADDR: nobody may share it
        taken.bind(("127.0.0.1", 0))
        try:
            service = Echo([0, taken.getsockname()[1]], {}, [])
            with pytest.raises(OSError, match="in use"):
                await service.start()
            assert service.sockets == [] and len(service.opened) == 1
            assert service.opened[0].fileno() == -1     # the first socket is closed again
        finally:
            taken.close()
    asyncio.run(scenario())
