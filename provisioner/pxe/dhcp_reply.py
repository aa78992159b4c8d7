"""The DHCP answer to a PXE client: which boot file, and the reply packet that carries it (pure).

Whether to answer at all is dhcp_policy.py; this module builds what the policy decided to send:
`boot_choice` picks the next file for the client's firmware (PXE 2.1, RFC 4578 architectures),
`build_reply` the OFFER/ACK (proxyDHCP when there is no lease), `nak` and `inform_reply` the other
answers, and `reply_destination` where the reply goes (RFC 2131 §4.1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from provisioner.pxe.dhcp_packet import (
    ACK,
    ARCH_BIOS,
    ARCH_EFI_BC,
    ARCH_EFI_X64,
    ARCH_EFI_X64_HTTP,
    BOOTREPLY,
    CLIENT_PORT,
    NAK,
    OFFER,
    OPT_BOOTFILE,
    OPT_CLIENT_GUID,
    OPT_DNS,
    OPT_END,
    OPT_IPXE_ENCAP,
    OPT_LEASE_TIME,
    OPT_MESSAGE_TYPE,
    OPT_REBINDING_TIME,
    OPT_RENEWAL_TIME,
    OPT_ROUTER,
    OPT_SERVER_ID,
    OPT_SUBNET_MASK,
    OPT_TFTP_SERVER,
    OPT_VENDOR_CLASS,
    OPT_VENDOR_SPECIFIC,
    PXE_BOOT_SERVER_PORT,
    SERVER_PORT,
    ClientInfo,
    DhcpPacket,
    client_info,
    ip_to_bytes,
)

# PXE option 43 sub-option 6, PXE_DISCOVERY_CONTROL: bit 3 (value 8) = "if a boot file name is
# present, download it; no menu, no boot server discovery" (PXE 2.1 §2.4.5; pixiecore sends 8).
PXE_DISCOVERY_CONTROL = 6
PXE_BOOT_FILE_ONLY = 8
IPXE_NO_PXEDHCP = 176             # sub-option of iPXE's option 175


@dataclass(frozen=True)
class BootFiles:
    """Names of the iPXE binaries on our TFTP root, and the HTTP base for iPXE and HTTP boot."""

    bios: str = "undionly.kpxe"
    efi_x64: str = "ipxe.efi"
    http_base: str = "http://127.0.0.1:8080"   # no trailing slash
    tftp: bool = True                          # False (serve --no-tftp): no TFTP file is ever offered


@dataclass(frozen=True)
class BootChoice:
    filename: str          # TFTP file name or an http:// URL
    vendor_class: str      # option 60 to send back: PXEClient, or HTTPClient for UEFI HTTP boot


def boot_choice(client: ClientInfo, files: BootFiles) -> BootChoice | None:
    """Which file a PXE client should load next, or None when we do not serve its architecture.

    iPXE (user class iPXE) gets the HTTP script URL, which breaks the PXE -> iPXE -> PXE loop
    (ipxe.org/appnote/userclass; matchbox's dnsmasq examples do the same with dhcp-userclass)."""
    if client.is_ipxe:
        return BootChoice(f"{files.http_base}/boot.ipxe", "PXEClient")
    if client.is_http_boot or client.arch == ARCH_EFI_X64_HTTP:
        if client.arch not in (ARCH_EFI_X64_HTTP, None):
            return None
        # UEFI HTTP boot: the firmware ignores offers without option 60 = HTTPClient (EDK2 wiki).
        return BootChoice(f"{files.http_base}/boot/{files.efi_x64}", "HTTPClient")
    if not files.tftp:
        # A TFTP file name nobody serves only delays the machine: without one, UEFI firmware gives up its
        # PXE attempt and tries HTTP boot (EDK2 orders PXEv4, PXEv6, HTTPv4, HTTPv6 per NIC).
        return None
    if client.arch in (None, ARCH_BIOS):
        return BootChoice(files.bios, "PXEClient")
    if client.arch in (ARCH_EFI_X64, ARCH_EFI_BC):
        return BootChoice(files.efi_x64, "PXEClient")
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
                                 OPT_SERVER_ID: ip_to_bytes(server.server_ip)}
    if lease is not None and message_type in (OFFER, ACK):
        options[OPT_LEASE_TIME] = struct.pack("!I", lease.lease_seconds)
        options[OPT_RENEWAL_TIME] = struct.pack("!I", lease.lease_seconds // 2)
        options[OPT_REBINDING_TIME] = struct.pack("!I", lease.lease_seconds * 7 // 8)
        options[OPT_SUBNET_MASK] = ip_to_bytes(lease.mask)
        if lease.router:
            options[OPT_ROUTER] = ip_to_bytes(lease.router)
        if lease.dns:
            options[OPT_DNS] = b"".join(ip_to_bytes(d) for d in lease.dns)
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


def inform_reply(request: DhcpPacket, client: ClientInfo, server: ServerIdentity, boot: BootChoice | None,
                 mask: str, router: str | None) -> DhcpPacket:
    """The ACK to a DHCPINFORM: configuration only, no address and no lease time (RFC 2131 §3.4)."""
    reply = build_reply(request, client, ACK, server, boot, None)
    options = {**reply.options, OPT_SUBNET_MASK: ip_to_bytes(mask)}
    if router:
        options[OPT_ROUTER] = ip_to_bytes(router)
    return replace(reply, options=options)


def nak(request: DhcpPacket, server: ServerIdentity) -> DhcpPacket:
    return replace(build_reply(request, client_info(request), NAK, server, None, None),
                   options={OPT_MESSAGE_TYPE: bytes((NAK,)), OPT_SERVER_ID: ip_to_bytes(server.server_ip)})


def reply_destination(request: DhcpPacket, source: tuple[str, int], port: int, reply: DhcpPacket) -> tuple[str, int]:
    """Where to send the reply (RFC 2131 §4.1): relay -> giaddr:67; port-4011 requests -> back to
    the sender; known ciaddr -> unicast; otherwise broadcast (we cannot unicast to an address the
    client has not configured yet without writing its ARP entry)."""
    if port == PXE_BOOT_SERVER_PORT:
        return source
    if request.giaddr != "0.0.0.0":
        return (request.giaddr, SERVER_PORT)
    if request.ciaddr != "0.0.0.0" and reply.message_type != NAK:
        return (request.ciaddr, CLIENT_PORT)
    return ("255.255.255.255", CLIENT_PORT)
