"""The DHCPv4 codec for PXE, and what a request says about the client: pure functions, no sockets.

Wire format: RFC 2131 §2 (fixed BOOTP header, magic cookie 99.130.83.99, options); options are
RFC 2132 TLVs, with RFC 3396 concatenation of repeated codes. PXE specifics: RFC 4578 (options 93,
94, 97 — architecture values per IANA, i.e. with errata 4624: 7 = x64 UEFI, 9 = EFI BC, 16 = x64
UEFI HTTP boot) and the PXE 2.1 spec (option 60 "PXEClient", option 43 sub-options).

`parse_packet(bytes) -> DhcpPacket` raises DhcpParseError on anything malformed (the service then
drops the datagram silently); `client_info(packet)` classifies a request. Whether to answer is
dhcp_policy.py, the answer itself dhcp_reply.py.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

MAGIC_COOKIE = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # RFC 2131 §2, 236 bytes
MIN_PACKET = HEADER.size + len(MAGIC_COOKIE)
MAX_PACKET = 4096  # larger datagrams are not DHCP we serve (RFC 2131 minimum is 576)

SERVER_PORT, CLIENT_PORT = 67, 68   # RFC 2131 §4.1
PXE_BOOT_SERVER_PORT = 4011          # PXE 2.1 §2.2: where a PXE client asks for its boot file

BOOTREQUEST, BOOTREPLY = 1, 2
HTYPE_ETHERNET = 1
BROADCAST_FLAG = 0x8000

# Message types (option 53, RFC 2132 §9.6)
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
MESSAGE_TYPES = {DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM}

# Option codes
OPT_PAD, OPT_END = 0, 255
OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_HOSTNAME = 1, 3, 6, 12
OPT_VENDOR_SPECIFIC = 43          # PXE vendor options, encapsulated (PXE 2.1 spec §2.4)
OPT_REQUESTED_IP, OPT_LEASE_TIME, OPT_OVERLOAD = 50, 51, 52
OPT_MESSAGE_TYPE, OPT_SERVER_ID, OPT_PARAM_LIST = 53, 54, 55
OPT_RENEWAL_TIME, OPT_REBINDING_TIME = 58, 59
OPT_VENDOR_CLASS, OPT_CLIENT_ID = 60, 61
OPT_TFTP_SERVER, OPT_BOOTFILE = 66, 67
OPT_USER_CLASS = 77
OPT_CLIENT_ARCH, OPT_CLIENT_NDI, OPT_CLIENT_GUID = 93, 94, 97   # RFC 4578 §2.1-2.3
OPT_IPXE_ENCAP = 175              # iPXE's own encapsulated options: present only when iPXE asks

# Client system architecture (option 93), IANA "Processor Architecture Types".
ARCH_BIOS, ARCH_EFI_IA32, ARCH_EFI_X64, ARCH_EFI_BC, ARCH_EFI_X64_HTTP = 0, 6, 7, 9, 16
ARCH_NAMES = {0: "bios", 6: "efi-ia32", 7: "efi-x64", 9: "efi-bc", 10: "efi-arm32", 11: "efi-arm64",
              15: "efi-ia32-http", 16: "efi-x64-http", 19: "efi-arm64-http"}


class DhcpParseError(ValueError):
    """The datagram is not a well-formed BOOTP/DHCP packet."""


def ip_from_bytes(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


def ip_to_bytes(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


@dataclass(frozen=True)
class DhcpPacket:
    op: int
    xid: int
    chaddr: bytes                       # hardware address, hlen bytes
    options: dict[int, bytes] = field(default_factory=dict)
    htype: int = HTYPE_ETHERNET
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: str = "0.0.0.0"
    yiaddr: str = "0.0.0.0"
    siaddr: str = "0.0.0.0"
    giaddr: str = "0.0.0.0"
    sname: bytes = b""
    file: bytes = b""

    @property
    def mac(self) -> str:
        return ":".join(f"{b:02x}" for b in self.chaddr)

    @property
    def message_type(self) -> int | None:
        value = self.options.get(OPT_MESSAGE_TYPE)
        return value[0] if value and len(value) == 1 else None


def parse_options(data: bytes) -> dict[int, bytes]:
    """TLV options up to END (RFC 2132 §2); repeated codes are concatenated (RFC 3396).

    Raises DhcpParseError when an option runs past the end of the data."""
    options: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            return options
        if i + 1 >= len(data):
            raise DhcpParseError(f"option {code}: length byte missing")
        length = data[i + 1]
        value = data[i + 2:i + 2 + length]
        if len(value) != length:
            raise DhcpParseError(f"option {code}: length {length} runs past the packet end")
        options[code] = options.get(code, b"") + value
        i += 2 + length
    return options  # a missing END is tolerated: several PXE ROMs pad without it


def parse_packet(data: bytes) -> DhcpPacket:
    """Decode a DHCP datagram; raises DhcpParseError for anything we must not answer."""
    if len(data) < MIN_PACKET:
        raise DhcpParseError(f"{len(data)} bytes is shorter than a DHCP packet ({MIN_PACKET})")
    if len(data) > MAX_PACKET:
        raise DhcpParseError(f"{len(data)} bytes is larger than {MAX_PACKET}")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
     bootfile) = HEADER.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise DhcpParseError(f"op {op} is neither BOOTREQUEST nor BOOTREPLY")
    if hlen < 1 or hlen > 16:
        raise DhcpParseError(f"hlen {hlen} is out of range")
    if data[HEADER.size:MIN_PACKET] != MAGIC_COOKIE:
        raise DhcpParseError("no DHCP magic cookie (plain BOOTP is not served)")
    options = parse_options(data[MIN_PACKET:])
    overload = options.get(OPT_OVERLOAD)
    if overload:
        # RFC 2132 §9.3: the file (1) and/or sname (2) fields carry more options.
        if overload[0] & 1:
            options.update({k: options.get(k, b"") + v for k, v in parse_options(bootfile).items()})
            bootfile = b""
        if overload[0] & 2:
            options.update({k: options.get(k, b"") + v for k, v in parse_options(sname).items()})
            sname = b""
    message_type = options.get(OPT_MESSAGE_TYPE)
    if message_type is None or len(message_type) != 1 or message_type[0] not in MESSAGE_TYPES:
        raise DhcpParseError("option 53 (message type) is missing or invalid")
    return DhcpPacket(op=op, xid=xid, chaddr=chaddr[:hlen], options=options, htype=htype, hops=hops, secs=secs,
                      flags=flags, ciaddr=ip_from_bytes(ciaddr), yiaddr=ip_from_bytes(yiaddr),
                      siaddr=ip_from_bytes(siaddr), giaddr=ip_from_bytes(giaddr), sname=sname.split(b"\0", 1)[0],
                      file=bootfile.split(b"\0", 1)[0])


def encode_options(options: dict[int, bytes]) -> bytes:
    """TLVs in the order given, values longer than 255 split across repeated codes (RFC 3396), then END."""
    out = bytearray()
    for code, value in options.items():
        if not value:
            out += bytes((code, 0))
        for start in range(0, len(value), 255):
            chunk = value[start:start + 255]
            out += bytes((code, len(chunk))) + chunk
    out.append(OPT_END)
    return bytes(out)


def encode_packet(packet: DhcpPacket) -> bytes:
    """Encode a packet; the result is padded to the 300-byte BOOTP minimum some ROMs expect."""
    if len(packet.sname) > 63 or len(packet.file) > 127:
        raise ValueError("sname/file too long for the BOOTP header")
    header = HEADER.pack(packet.op, packet.htype, len(packet.chaddr), packet.hops, packet.xid, packet.secs,
                         packet.flags, ip_to_bytes(packet.ciaddr), ip_to_bytes(packet.yiaddr),
                         ip_to_bytes(packet.siaddr), ip_to_bytes(packet.giaddr), packet.chaddr.ljust(16, b"\0"),
                         packet.sname.ljust(64, b"\0"), packet.file.ljust(128, b"\0"))
    data = header + MAGIC_COOKIE + encode_options(packet.options)
    return data.ljust(300, b"\0")


@dataclass(frozen=True)
class ClientInfo:
    """What a request tells about the machine: PXE-ness, architecture, iPXE, identity."""

    mac: str
    message_type: int
    vendor_class: str
    arch: int | None
    is_pxe: bool          # option 60 starts with PXEClient (PXE 2.1) or HTTPClient (UEFI HTTP boot)
    is_http_boot: bool
    is_ipxe: bool         # user class "iPXE" (option 77) or iPXE's option 175
    guid: bytes | None    # option 97, echoed back when present (RFC 4578 §2.3)
    requested_ip: str | None
    server_id: str | None
    hostname: str | None

    @property
    def arch_name(self) -> str | int | None:
        """The architecture's IANA name ("bios", "efi-x64"), or its number when we know no name."""
        return None if self.arch is None else ARCH_NAMES.get(self.arch, self.arch)


def _user_classes(raw: bytes) -> list[bytes]:
    # RFC 3004 user class is a list of (len, data); iPXE sends the bare string "iPXE". Accept both.
    classes, i = [], 0
    while i < len(raw):
        length = raw[i]
        if length == 0 or i + 1 + length > len(raw):
            return [raw]
        classes.append(raw[i + 1:i + 1 + length])
        i += 1 + length
    return classes + [raw]


def client_info(packet: DhcpPacket) -> ClientInfo:
    """Classify a request (pure; never raises for a packet parse_packet accepted)."""
    opts = packet.options
    vendor = opts.get(OPT_VENDOR_CLASS, b"").decode("ascii", "replace")
    arch_raw = opts.get(OPT_CLIENT_ARCH, b"")
    # RFC 4578 §2.1: a list of 16-bit types; the first one is what the firmware runs now.
    arch = struct.unpack("!H", arch_raw[:2])[0] if len(arch_raw) >= 2 else None
    user_classes = _user_classes(opts.get(OPT_USER_CLASS, b""))
    is_ipxe = any(uc == b"iPXE" for uc in user_classes) or OPT_IPXE_ENCAP in opts
    guid = opts.get(OPT_CLIENT_GUID)
    requested = opts.get(OPT_REQUESTED_IP)
    server_id = opts.get(OPT_SERVER_ID)
    hostname = opts.get(OPT_HOSTNAME)
    return ClientInfo(
        mac=packet.mac,
        message_type=packet.message_type or 0,
        vendor_class=vendor,
        arch=arch,
        is_pxe=vendor.startswith("PXEClient") or vendor.startswith("HTTPClient"),
        is_http_boot=vendor.startswith("HTTPClient"),
        is_ipxe=is_ipxe,
        guid=guid if guid is not None and len(guid) == 17 and guid[0] == 0 else None,
        requested_ip=ip_from_bytes(requested) if requested is not None and len(requested) == 4 else None,
        server_id=ip_from_bytes(server_id) if server_id is not None and len(server_id) == 4 else None,
        hostname=hostname.decode("ascii", "replace") if hostname else None,
    )
