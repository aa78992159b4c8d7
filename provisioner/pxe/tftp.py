"""Read-only TFTP on asyncio: our own request parser and root jail in front of tftpy's transfer engine.

tftpy (0.8.x) does the transfer itself: DATA/ACK state machine, blksize (RFC 2348) and tsize
(RFC 2349) negotiation, duplicate-ACK handling. What we add, and why:

- The first packet of every transfer is parsed here (`parse_request`, pure) and only a clean,
  re-encoded RRQ reaches tftpy: tftpy 0.8's own parser raises on short packets and odd option
  lists (reference/pxe.md §5), and its server loop dies on an unexpected exception. WRQ is refused.
- The root jail (provisioner.pxe.jail): tftpy's `abspath` check lets a symlink inside the root
  point anywhere (reference/pxe.md §5). tftpy itself sees an empty private directory as its root,
  so it never opens a file on its own: every file comes through our jail.
- The socket loop is asyncio (`loop.add_reader` per transfer) instead of tftpy's select() thread,
  so TFTP, DHCP and HTTP share one process; exceptions end one transfer, never the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tftpy.TftpContexts import TftpContextServer
from tftpy.TftpShared import TftpException, TftpTimeout, TftpTimeoutExpectACK

from provisioner.pxe.jail import JailError, open_in_jail, open_regular_file

log = logging.getLogger("provisioner.pxe.tftp")

OP_RRQ, OP_WRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK = 1, 2, 3, 4, 5, 6
ERR_NOT_FOUND, ERR_ACCESS, ERR_ILLEGAL = 1, 2, 4
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464   # RFC 2348 §2
MAX_REQUEST = 512                     # RFC 1350 requests fit one 512-byte datagram
MAX_NAME = 255

# iPXE binaries from Debian's `ipxe` package, offered under their plain names (and dnsmasq-style
# ".0" aliases, as matchbox's docs expect undionly.kpxe.0).
IPXE_DIRS = ("/usr/lib/ipxe", "/usr/share/ipxe")
IPXE_FILES = ("undionly.kpxe", "ipxe.efi", "snponly.efi", "ipxe.pxe", "undionly.kkpxe")


class TftpRequestError(ValueError):
    """Not a well-formed TFTP request: drop it silently (no reply to garbage)."""


class TftpAccessError(Exception):  # noqa: N818 (a refusal, not a bug)
    """The request is well-formed but refused; `code` is the TFTP error code to send."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TftpRequest:
    opcode: int
    filename: str
    mode: str
    options: dict[str, str] = field(default_factory=dict)   # names lower-cased


def parse_request(data: bytes) -> TftpRequest:
    """Parse an RRQ/WRQ (RFC 1350 §5, options RFC 2347); raises TftpRequestError otherwise (pure)."""
    if len(data) < 4 or len(data) > MAX_REQUEST:
        raise TftpRequestError(f"{len(data)} bytes is not a TFTP request size")
    opcode = struct.unpack("!H", data[:2])[0]
    if opcode not in (OP_RRQ, OP_WRQ):
        raise TftpRequestError(f"opcode {opcode} cannot start a transfer")
    if not data.endswith(b"\0"):
        raise TftpRequestError("request is not NUL-terminated")
    fields = data[2:-1].split(b"\0")
    if len(fields) < 2 or len(fields) % 2:
        raise TftpRequestError("request fields are not name, mode, option pairs")
    try:
        texts = [f.decode("ascii") for f in fields]
    except UnicodeDecodeError:
        raise TftpRequestError("request fields are not ASCII") from None
    filename, mode = texts[0], texts[1].lower()
    if not filename or len(filename) > MAX_NAME:
        raise TftpRequestError("file name is empty or too long")
    if mode not in ("octet", "netascii"):
        raise TftpRequestError(f"mode {mode!r} is not octet or netascii")
    options: dict[str, str] = {}
    for name, value in zip(texts[2::2], texts[3::2], strict=False):
        options[name.lower()] = value
    return TftpRequest(opcode, filename, mode, options)


def negotiate_options(requested: dict[str, str], max_blksize: int) -> dict[str, str]:
    """The options we accept (pure): blksize clamped to [8, max_blksize], tsize; others dropped."""
    accepted: dict[str, str] = {}
    if "blksize" in requested:
        try:
            size = int(requested["blksize"])
        except ValueError:
            size = None
        if size is not None:
            accepted["blksize"] = str(min(max(size, MIN_BLKSIZE), max_blksize))
    if "tsize" in requested and requested["tsize"].isdigit():
        accepted["tsize"] = "0"
    return accepted


def encode_rrq(filename: str, options: dict[str, str]) -> bytes:
    body = filename.encode("ascii") + b"\0octet\0"
    for name, value in options.items():
        body += name.encode() + b"\0" + value.encode() + b"\0"
    return struct.pack("!H", OP_RRQ) + body


def encode_error(code: int, message: str) -> bytes:
    return struct.pack("!HH", OP_ERROR, code) + message.encode("ascii", "replace")[:200] + b"\0"


def find_ipxe_dir() -> Path | None:
    """Where Debian's ipxe package put its binaries (checked at run time), or None."""
    for candidate in IPXE_DIRS:
        if os.path.isfile(os.path.join(candidate, "undionly.kpxe")):
            return Path(candidate)
    return None


@dataclass(frozen=True)
class TftpFiles:
    """What the service serves: an optional operator root, then the iPXE binaries by name."""

    root: Path | None
    ipxe_dir: Path | None

    def open(self, requested: str):
        """Open `requested`; raises TftpAccessError."""
        try:
            if self.root is not None:
                try:
                    return open_in_jail(self.root, requested)
                except JailError as exc:
                    if exc.denied:
                        raise
            name = requested.lstrip("/")
            if name.endswith(".0"):
                name = name[:-2]
            if self.ipxe_dir is not None and name in IPXE_FILES:
                return open_regular_file(self.ipxe_dir / name)   # a fixed allow-listed name
        except JailError as exc:
            raise TftpAccessError(ERR_ACCESS if exc.denied else ERR_NOT_FOUND, str(exc)) from None
        raise TftpAccessError(ERR_NOT_FOUND, "file not found")


EventSink = Callable[[str, str, str, dict], None]   # (client ip, stage, file, detail)


class _MainProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: TftpService):
        self.service = service
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.service.new_request(data, addr, self.transport)


class TftpService:
    """Port 69 listener; one tftpy server context (own socket, own port) per transfer."""

    def __init__(self, files: TftpFiles, host: str, port: int, on_event: EventSink, metrics: dict[str, int],
                 timeout: float = 1.0, retries: int = 10, max_blksize: int = MAX_BLKSIZE,
                 max_transfers: int = 256):
        self.files = files
        self.host = host
        self.port = port
        self.on_event = on_event
        self.metrics = metrics
        self.timeout = timeout
        self.retries = retries
        self.max_blksize = max_blksize
        self.max_transfers = max_transfers
        self.sessions: dict[tuple[str, int], TftpContextServer] = {}
        self._transport = None
        self._timer: asyncio.Task | None = None
        # tftpy gets an empty private directory as its root: no file is ever found there, so every
        # read goes through dyn_file_func, i.e. through our jail.
        self._empty_root = tempfile.mkdtemp(prefix="provisioner-tftpy-")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._transport, _ = await loop.create_datagram_endpoint(lambda: _MainProtocol(self), sock=sock)
        self._timer = asyncio.create_task(self._check_timeouts())
        log.info("tftp: listening on %s:%d (root %s, iPXE from %s)", self.host, self.port, self.files.root,
                 self.files.ipxe_dir)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for key in list(self.sessions):
            self._end(key, ok=False)
        if self._transport is not None:
            self._transport.close()
        with contextlib.suppress(OSError):
            os.rmdir(self._empty_root)

    def _count(self, name: str, value: int = 1) -> None:
        self.metrics[name] = self.metrics.get(name, 0) + value

    def new_request(self, data: bytes, addr, transport) -> None:
        try:
            request = parse_request(data)
        except TftpRequestError as exc:
            self._count("tftp_malformed")
            log.debug("tftp: dropped datagram from %s: %s", addr, exc)
            return
        if request.opcode == OP_WRQ:
            transport.sendto(encode_error(ERR_ACCESS, "read-only server"), addr)
            self._count("tftp_refused")
            return
        if addr in self.sessions:
            return  # a retransmitted RRQ while its transfer runs: the transfer answers it
        if len(self.sessions) >= self.max_transfers:
            transport.sendto(encode_error(0, "server busy"), addr)
            return
        try:
            fileobj = self.files.open(request.filename)
        except TftpAccessError as exc:
            transport.sendto(encode_error(exc.code, str(exc)), addr)
            self._count("tftp_refused" if exc.code == ERR_ACCESS else "tftp_not_found")
            log.info("tftp: %s refused %r: %s", addr[0], request.filename, exc)
            return
        options = negotiate_options(request.options, self.max_blksize)
        self._start_session(addr, request, fileobj, options)

    def _start_session(self, addr, request: TftpRequest, fileobj, options: dict[str, str]) -> None:
        context = TftpContextServer(addr[0], addr[1], self.timeout, self._empty_root,
                                    dyn_file_func=lambda *_a, **_k: fileobj, retries=self.retries, flock=False)
        self.sessions[addr] = context
        try:
            context.start(encode_rrq(request.filename, options))
        except (TftpException, OSError, ValueError) as exc:
            log.info("tftp: %s %r failed to start: %s", addr[0], request.filename, exc)
            self._end(addr, ok=False)
            return
        asyncio.get_running_loop().add_reader(context.sock.fileno(), self._readable, addr)
        self._count("tftp_transfers_started")
        self.on_event(addr[0], "tftp", request.filename, {"blksize": options.get("blksize", "512")})

    def _readable(self, addr) -> None:
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

    def _end(self, addr, ok: bool) -> None:
        context = self.sessions.pop(addr, None)
        if context is None:
            return
        with contextlib.suppress(RuntimeError, ValueError, OSError):
            asyncio.get_running_loop().remove_reader(context.sock.fileno())
        try:
            context.end()
        except Exception:  # closing must never take the service down
            pass
        if ok:
            self._count("tftp_transfers_completed")
            self._count("tftp_bytes", context.metrics.bytes)
            self.on_event(addr[0], "tftp-done", context.file_to_transfer or "", {"bytes": context.metrics.bytes})
        else:
            self._count("tftp_transfers_failed")

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

