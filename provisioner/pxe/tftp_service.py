"""Read-only TFTP: our own request parser, policy and root jail in front of tftpy's transfer engine.

tftpy (0.8.x) does the transfer itself: DATA/ACK state machine, blksize (RFC 2348) and tsize
(RFC 2349) negotiation, duplicate-ACK handling. What we add, and why:

- The first packet of every transfer is parsed here (tftp_packet.parse_request) and only a clean,
  re-encoded RRQ reaches tftpy: tftpy 0.8's own parser raises on short packets and odd option
  lists (reference/pxe.md §5), and its server loop dies on an unexpected exception.
- The root jail (provisioner.pxe.jail): tftpy's `abspath` check lets a symlink inside the root
  point anywhere (reference/pxe.md §5). tftpy itself sees an empty private directory as its root,
  so it never opens a file on its own: every file comes through our jail.
- The sockets are watched by the asyncio loop (the port-69 socket as a DatagramService, each
  transfer's own socket with `add_reader`) instead of tftpy's select() thread, so TFTP, DHCP and
  HTTP share one process; an exception ends one transfer, never the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tftpy.TftpContexts import TftpContextServer
from tftpy.TftpShared import TftpException, TftpTimeout, TftpTimeoutExpectACK

from provisioner.pxe.datagram import DatagramService, udp_socket
from provisioner.pxe.events import BootEvent, Counters, EventSink, EventSource
from provisioner.pxe.ipxe import ipxe_binary_name
from provisioner.pxe.jail import JailError, open_in_jail, open_regular_file
from provisioner.pxe.tftp_packet import (
    ERR_ACCESS,
    ERR_NOT_FOUND,
    ERR_UNDEFINED,
    TftpRequest,
    encode_error,
    encode_rrq,
    parse_request,
)
from provisioner.pxe.tftp_policy import MAX_BLKSIZE, TftpRefusal, admit, negotiate_options

log = logging.getLogger("provisioner.pxe.tftp")

REFUSAL_COUNTERS = {ERR_ACCESS: "refused", ERR_NOT_FOUND: "not_found", ERR_UNDEFINED: "busy"}


@dataclass(frozen=True)
class TftpFiles:
    """What the service serves: an optional operator root, then the iPXE binaries by name."""

    root: Path | None
    ipxe_dir: Path | None

    def open(self, requested: str) -> IO[bytes]:
        """Open `requested` for reading; raises TftpRefusal (access violation or not found)."""
        try:
            if self.root is not None:
                try:
                    return open_in_jail(self.root, requested)
                except JailError as exc:
                    if exc.denied:
                        raise
            name = ipxe_binary_name(requested)
            if self.ipxe_dir is not None and name is not None:
                return open_regular_file(self.ipxe_dir / name)   # a fixed allow-listed name
        except JailError as exc:
            raise TftpRefusal(ERR_ACCESS if exc.denied else ERR_NOT_FOUND, str(exc)) from None
        raise TftpRefusal(ERR_NOT_FOUND, "file not found")


class TftpService(DatagramService[TftpRequest]):
    """The port-69 listener; one tftpy server context (own socket, own port) per transfer."""

    name = "tftp"

    def __init__(self, files: TftpFiles, host: str, port: int, counters: Counters, on_event: EventSink,
                 timeout: float = 1.0, retries: int = 10, max_blksize: int = MAX_BLKSIZE,
                 max_transfers: int = 256):
        super().__init__(counters, on_event)
        self.files = files
        self.host = host
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.max_blksize = max_blksize
        self.max_transfers = max_transfers
        self.sessions: dict[tuple[str, int], TftpContextServer] = {}
        self._timer: asyncio.Task[None] | None = None
        self._empty_root: str | None = None

    def open_sockets(self) -> Iterator[socket.socket]:
        sock = udp_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        yield sock

    def describe(self) -> str:
        return f"listening on {self.host}:{self.port} (root {self.files.root}, iPXE from {self.files.ipxe_dir})"

    async def start(self) -> None:
        await super().start()
        # tftpy gets an empty private directory as its root: no file is ever found there, so every
        # read goes through the file opener we hand it, i.e. through our jail.
        self._empty_root = tempfile.mkdtemp(prefix="provisioner-tftpy-")
        self._timer = asyncio.create_task(self._check_timeouts())

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for key in list(self.sessions):
            self._end(key, ok=False)
        await super().close()
        if self._empty_root is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._empty_root)
            self._empty_root = None

    def parse(self, data: bytes) -> TftpRequest:
        return parse_request(data)

    def handle(self, sock: socket.socket, request: TftpRequest, source: Any) -> None:
        try:
            if not admit(request, running=source in self.sessions, transfers=len(self.sessions),
                         max_transfers=self.max_transfers):
                return
            fileobj = self.files.open(request.filename)
        except TftpRefusal as refusal:
            self.send(sock, encode_error(refusal.code, str(refusal)), source)
            self.count(REFUSAL_COUNTERS.get(refusal.code, "refused"))
            log.info("tftp: %s refused %r: %s", source[0], request.filename, refusal)
            return
        self._start_session(source, request, fileobj, negotiate_options(request.options, self.max_blksize))

    def _start_session(self, addr: tuple[str, int], request: TftpRequest, fileobj: IO[bytes],
                       options: dict[str, str]) -> None:
        context = TftpContextServer(addr[0], addr[1], self.timeout, self._empty_root,
                                    dyn_file_func=lambda *_a, **_k: fileobj, retries=self.retries, flock=False)
        self.sessions[addr] = context
        try:
            context.start(encode_rrq(request.filename, options))
        except (TftpException, OSError, ValueError) as exc:
            log.info("tftp: %s %r failed to start: %s", addr[0], request.filename, exc)
            self._end(addr, ok=False)
            return
        asyncio.get_running_loop().add_reader(context.sock.fileno(), self._readable_transfer, addr)
        self.count("transfers_started")
        self.on_event(BootEvent(stage="tftp", source=EventSource.TFTP, ip=addr[0],
                                detail={"file": request.filename, "blksize": options.get("blksize", "512")}))

    def _readable_transfer(self, addr: tuple[str, int]) -> None:
        context = self.sessions.get(addr)
        if context is None:
            return
        context.timeout_expectACK = False
        try:
            context.cycle()
        except TftpTimeoutExpectACK:
            context.timeout_expectACK = True
            return
        except BlockingIOError:
            return
        except Exception as exc:  # a garbage packet or a client ERROR ends this transfer only
            log.info("tftp: transfer to %s ended: %s", addr, exc)
            self._end(addr, ok=False)
            return
        if context.state is None:
            self._end(addr, ok=True)

    def _end(self, addr: tuple[str, int], ok: bool) -> None:
        context = self.sessions.pop(addr, None)
        if context is None:
            return
        with contextlib.suppress(RuntimeError, ValueError, OSError):
            asyncio.get_running_loop().remove_reader(context.sock.fileno())
        with contextlib.suppress(Exception):  # closing must never take the service down
            context.end()
        if ok:
            self.count("transfers_completed")
            self.count("bytes", context.metrics.bytes)
            self.on_event(BootEvent(stage="tftp-done", source=EventSource.TFTP, ip=addr[0],
                                    detail={"file": context.file_to_transfer or "", "bytes": context.metrics.bytes}))
        else:
            self.count("transfers_failed")

    async def _check_timeouts(self) -> None:
        while True:
            await asyncio.sleep(min(self.timeout / 4, 0.25))
            now = time.time()
            for addr, context in list(self.sessions.items()):
                try:
                    context.checkTimeout(now)
                except TftpTimeout:
                    context.retry_count += 1
                    if context.retry_count >= context.retries:
                        log.info("tftp: transfer to %s timed out", addr)
                        self._end(addr, ok=False)
                        continue
                    context.timeout_expectACK = False
                    context.last_update = now
                    try:
                        context.state.resendLast()
                    except Exception as exc:
                        log.info("tftp: resend to %s failed: %s", addr, exc)
                        self._end(addr, ok=False)
