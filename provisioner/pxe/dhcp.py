"""DHCPv4 codec and reply builder for PXE: pure functions, no sockets.

Wire format: RFC 2131 §2 (fixed BOOTP header, magic cookie 99.130.83.99, options); options are
RFC 2132 TLVs, with RFC 3396 concatenation of repeated codes. PXE specifics: RFC 4578 (options 93,
94, 97 — architecture values per IANA, i.e. with errata 4624: 7 = x64 UEFI, 9 = EFI BC, 16 = x64
UEFI HTTP boot) and the PXE 2.1 spec (option 60 "PXEClient", option 43 sub-options).

`parse_packet(bytes) -> DhcpPacket` raises DhcpParseError on anything malformed (the server then
drops the datagram silently); `build_reply(...)` builds the answer once the policy decided to give one.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field, replace

MAGIC_COOKIE = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # RFC 2131 §2, 236 bytes
MIN_PACKET = HEADER.size + len(MAGIC_COOKIE)
MAX_PACKET = 4096  # larger datagrams are not DHCP we serve (RFC 2131 minimum is 576)

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
IPXE_NO_PXEDHCP = 176             # sub-option of 175

# PXE option 43 sub-option 6, PXE_DISCOVERY_CONTROL: bit 3 (value 8) = "if a boot file name is
# present, download it; no menu, no boot server discovery" (PXE 2.1 §2.4.5; pixiecore sends 8).
PXE_DISCOVERY_CONTROL = 6
PXE_BOOT_FILE_ONLY = 8

# Client system architecture (option 93), IANA "Processor Architecture Types".
ARCH_BIOS, ARCH_EFI_IA32, ARCH_EFI_X64, ARCH_EFI_BC, ARCH_EFI_X64_HTTP = 0, 6, 7, 9, 16
ARCH_NAMES = {0: "bios", 6: "efi-ia32", 7: "efi-x64", 9: "efi-bc", 10: "efi-arm32", 11: "efi-arm64",
              15: "efi-ia32-http", 16: "efi-x64-http", 19: "efi-arm64-http"}


class DhcpParseError(ValueError):
    """The datagram is not a well-formed BOOTP/DHCP packet."""


def _ip(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


def _raw_ip(text: str) -> bytes:
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
    return DhcpPacket(op=op, xid=xid, chaddr=chaddr[:hlen], options=options, htype=htype, hops=hops,
                      secs=secs, flags=flags, ciaddr=_ip(ciaddr), yiaddr=_ip(yiaddr), siaddr=_ip(siaddr),
                      giaddr=_ip(giaddr), sname=sname.split(b"\0", 1)[0], file=bootfile.split(b"\0", 1)[0])


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
                         packet.flags, _raw_ip(packet.ciaddr), _raw_ip(packet.yiaddr), _raw_ip(packet.siaddr),
                         _raw_ip(packet.giaddr), packet.chaddr.ljust(16, b"\0"), packet.sname.ljust(64, b"\0"),
                         packet.file.ljust(128, b"\0"))
    data = header + MAGIC_COOKIE + encode_options(packet.options)
    return data.ljust(300, b"\0")


# --------------------------------------------------------------------------- what the client is


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
        requested_ip=_ip(requested) if requested is not None and len(requested) == 4 else None,
        server_id=_ip(server_id) if server_id is not None and len(server_id) == 4 else None,
        hostname=hostname.decode("ascii", "replace") if hostname else None,
    )


# --------------------------------------------------------------------------- what to answer


@dataclass(frozen=True)
class BootFiles:
    """Names of the iPXE binaries on our TFTP root, and the HTTP base for iPXE and HTTP boot."""

    bios: str = "undionly.kpxe"
    efi_x64: str = "ipxe.efi"
    http_base: str = "http://127.0.0.1:8080"   # no trailing slash


@dataclass(frozen=True)
class BootChoice:
    filename: str          # TFTP file name or an http:// URL
    vendor_class: str      # option 60 to send back: PXEClient, or HTTPClient for UEFI HTTP boot
    stage: str             # for machine state: "ipxe-binary", "ipxe-script", "http-boot"


def boot_choice(client: ClientInfo, files: BootFiles) -> BootChoice | None:
    """Which file a PXE client should load next, or None when we do not serve its architecture.

    iPXE (user class iPXE) gets the HTTP script URL, which breaks the PXE -> iPXE -> PXE loop
    (ipxe.org/appnote/userclass; matchbox's dnsmasq examples do the same with dhcp-userclass)."""
    if client.is_ipxe:
        return BootChoice(f"{files.http_base}/boot.ipxe", "PXEClient", "ipxe-script")
    if client.is_http_boot or client.arch == ARCH_EFI_X64_HTTP:
        if client.arch not in (ARCH_EFI_X64_HTTP, None):
            return None
        # UEFI HTTP boot: the firmware ignores offers without option 60 = HTTPClient (EDK2 wiki).
        return BootChoice(f"{files.http_base}/boot/{files.efi_x64}", "HTTPClient", "http-boot")
    if client.arch in (None, ARCH_BIOS):
        return BootChoice(files.bios, "PXEClient", "ipxe-binary")
    if client.arch in (ARCH_EFI_X64, ARCH_EFI_BC):
        return BootChoice(files.efi_x64, "PXEClient", "ipxe-binary")
    return None


@dataclass(frozen=True)
class Lease:
    ip: str
    mask: str
    router: str | None
    dns: tuple[str, ...]
    lease_seconds: int


@dataclass(frozen=True)
class ServerIdentity:
    server_ip: str
    files: BootFiles


def _pxe_vendor_options(client: ClientInfo) -> bytes | None:
    # BIOS PXE ROMs need option 43 to accept a proxy offer; sub-option 6 = 8 tells them to just
    # boot the file. UEFI clients get no option 43, so they ask port 4011 (pixiecore's choice, which
    # most UEFI firmware accepts).
    if client.arch in (None, ARCH_BIOS) and not client.is_ipxe:
        return bytes((PXE_DISCOVERY_CONTROL, 1, PXE_BOOT_FILE_ONLY, OPT_END))
    return None


def build_reply(request: DhcpPacket, client: ClientInfo, message_type: int, server: ServerIdentity,
                boot: BootChoice | None, lease: Lease | None) -> DhcpPacket:
    """The reply packet (pure). lease=None: a proxy reply (yiaddr 0.0.0.0, no address options)."""
    options: dict[int, bytes] = {OPT_MESSAGE_TYPE: bytes((message_type,)),
                                 OPT_SERVER_ID: _raw_ip(server.server_ip)}
    if lease is not None and message_type in (OFFER, ACK):
        options[OPT_LEASE_TIME] = struct.pack("!I", lease.lease_seconds)
        options[OPT_RENEWAL_TIME] = struct.pack("!I", lease.lease_seconds // 2)
        options[OPT_REBINDING_TIME] = struct.pack("!I", lease.lease_seconds * 7 // 8)
        options[OPT_SUBNET_MASK] = _raw_ip(lease.mask)
        if lease.router:
            options[OPT_ROUTER] = _raw_ip(lease.router)
        if lease.dns:
            options[OPT_DNS] = b"".join(_raw_ip(d) for d in lease.dns)
    filename = b""
    if boot is not None and message_type in (OFFER, ACK):
        options[OPT_VENDOR_CLASS] = boot.vendor_class.encode()
        if client.guid is not None:
            options[OPT_CLIENT_GUID] = client.guid
        vendor = _pxe_vendor_options(client)
        if vendor is not None:
            options[OPT_VENDOR_SPECIFIC] = vendor
        if client.is_ipxe and lease is not None:
            # iPXE option 175.176 "no-pxedhcp": this offer already carries the boot file, so iPXE
            # need not wait DHCP_DISC_PROXY_TIMEOUT_SEC for ProxyDHCP offers (iPXE config/dhcp.h).
            options[OPT_IPXE_ENCAP] = bytes((IPXE_NO_PXEDHCP, 1, 1))
        filename = boot.filename.encode()
        # Some ROMs read only the BOOTP header, others only options 66/67: set both (smee, dnsmasq).
        options[OPT_TFTP_SERVER] = server.server_ip.encode()
        options[OPT_BOOTFILE] = filename
        if len(filename) > 127:
            filename = b""  # too long for the header; option 67 carries it
    return DhcpPacket(
        op=BOOTREPLY, xid=request.xid, chaddr=request.chaddr, options=options, htype=request.htype,
        flags=request.flags, ciaddr=request.ciaddr if message_type == ACK else "0.0.0.0",
        yiaddr=lease.ip if lease is not None and message_type in (OFFER, ACK) else "0.0.0.0",
        siaddr=server.server_ip if boot is not None else "0.0.0.0", giaddr=request.giaddr,
        sname=b"", file=filename,
    )


def nak(request: DhcpPacket, server: ServerIdentity) -> DhcpPacket:
    return replace(build_reply(request, client_info(request), NAK, server, None, None),
                   options={OPT_MESSAGE_TYPE: bytes((NAK,)), OPT_SERVER_ID: _raw_ip(server.server_ip)})


def reply_destination(request: DhcpPacket, source: tuple[str, int], port: int, reply: DhcpPacket) -> tuple[str, int]:
    """Where to send the reply (RFC 2131 §4.1): relay -> giaddr:67; port-4011 requests -> back to
    the sender; known ciaddr -> unicast; otherwise broadcast (we cannot unicast to an address the
    client has not configured yet without writing its ARP entry)."""
    if port == 4011:
        return source
    if request.giaddr != "0.0.0.0":
        return (request.giaddr, 67)
    if request.ciaddr != "0.0.0.0" and reply.message_type != NAK:
        return (request.ciaddr, 68)
    return ("255.255.255.255", 68)
