"""The TFTP codec for the first packet of a transfer (pure): requests in, re-encoded RRQs and ERRORs out.

RFC 1350 §5 packets, options per RFC 2347. Everything after the request (DATA/ACK, option
acknowledgement) is tftpy's engine, see tftp_service.py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

OP_RRQ, OP_WRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK = 1, 2, 3, 4, 5, 6
ERR_UNDEFINED, ERR_NOT_FOUND, ERR_ACCESS, ERR_ILLEGAL = 0, 1, 2, 4
MAX_REQUEST = 512                     # RFC 1350 requests fit one 512-byte datagram
MAX_NAME = 255


class TftpRequestError(ValueError):
    """Not a well-formed TFTP request: drop it silently (no reply to garbage)."""


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


def encode_rrq(filename: str, options: dict[str, str]) -> bytes:
    body = filename.encode("ascii") + b"\0octet\0"
    for name, value in options.items():
        body += name.encode() + b"\0" + value.encode() + b"\0"
    return struct.pack("!H", OP_RRQ) + body


def encode_error(code: int, message: str) -> bytes:
    return struct.pack("!HH", OP_ERROR, code) + message.encode("ascii", "replace")[:200] + b"\0"
