"""DHCP requests as PXE firmware, iPXE and plain clients send them, for the DHCP unit tests."""

from __future__ import annotations

import struct

from provisioner.pxe import dhcp_packet as wire
from provisioner.pxe.dhcp_reply import BootFiles, ServerIdentity

SERVER = ServerIdentity("10.9.0.1", BootFiles(http_base="http://10.9.0.1:8080"))
MAC = bytes.fromhex("525400aabbcc")
GUID = b"\x00" + bytes(range(16))


def request(mtype: int, *, vendor: bytes | None = b"PXEClient:Arch:00000:UNDI:002001", arch: int | None = 0,
            user_class: bytes | None = None, extra: dict[int, bytes] | None = None,
            ciaddr: str = "0.0.0.0") -> wire.DhcpPacket:
    options = {wire.OPT_MESSAGE_TYPE: bytes((mtype,))}
    if vendor is not None:
        options[wire.OPT_VENDOR_CLASS] = vendor
    if arch is not None:
        options[wire.OPT_CLIENT_ARCH] = struct.pack("!H", arch)
        options[wire.OPT_CLIENT_NDI] = b"\x01\x02\x01"
        options[wire.OPT_CLIENT_GUID] = GUID
    if user_class is not None:
        options[wire.OPT_USER_CLASS] = user_class
    options.update(extra or {})
    return wire.DhcpPacket(op=wire.BOOTREQUEST, xid=0x1234, chaddr=MAC, options=options, flags=0x8000, ciaddr=ciaddr)


def roundtrip(packet: wire.DhcpPacket) -> wire.DhcpPacket:
    return wire.parse_packet(wire.encode_packet(packet))
