"""The DHCP codec and policy, tested directly (pure functions, no sockets)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from provisioner.pxe import dhcp
from provisioner.pxe.dhcpd import DhcpPolicy, decide
from provisioner.pxe.leases import LeaseRecord, allocate, parse_dhcp_range

SERVER = dhcp.ServerIdentity("10.9.0.1", dhcp.BootFiles(http_base="http://10.9.0.1:8080"))
MAC = bytes.fromhex("525400aabbcc")
GUID = b"\x00" + bytes(range(16))


def request(mtype: int, *, vendor: bytes | None = b"PXEClient:Arch:00000:UNDI:002001", arch: int | None = 0,
            user_class: bytes | None = None, extra: dict | None = None, ciaddr: str = "0.0.0.0") -> dhcp.DhcpPacket:
    options = {dhcp.OPT_MESSAGE_TYPE: bytes((mtype,))}
    if vendor is not None:
        options[dhcp.OPT_VENDOR_CLASS] = vendor
    if arch is not None:
        options[dhcp.OPT_CLIENT_ARCH] = struct.pack("!H", arch)
        options[dhcp.OPT_CLIENT_NDI] = b"\x01\x02\x01"
        options[dhcp.OPT_CLIENT_GUID] = GUID
    if user_class is not None:
        options[dhcp.OPT_USER_CLASS] = user_class
    options.update(extra or {})
    return dhcp.DhcpPacket(op=dhcp.BOOTREQUEST, xid=0x1234, chaddr=MAC, options=options, flags=0x8000, ciaddr=ciaddr)


def roundtrip(packet: dhcp.DhcpPacket) -> dhcp.DhcpPacket:
    return dhcp.parse_packet(dhcp.encode_packet(packet))


def test_encode_parse_roundtrip_keeps_every_field():
    packet = request(dhcp.DISCOVER)
    parsed = roundtrip(packet)
    assert parsed.mac == "52:54:00:aa:bb:cc" and parsed.xid == 0x1234 and parsed.flags == 0x8000
    assert parsed.options == packet.options
    assert len(dhcp.encode_packet(packet)) >= 300   # BOOTP minimum size some ROMs insist on


def test_long_options_are_split_and_concatenated_again_rfc3396():
    value = bytes(range(256)) * 2
    parsed = roundtrip(request(dhcp.DISCOVER, extra={dhcp.OPT_VENDOR_SPECIFIC: value}))
    assert parsed.options[dhcp.OPT_VENDOR_SPECIFIC] == value


@pytest.mark.parametrize("data, reason", [
    (b"", "shorter"),
    (b"\x01" * 100, "shorter"),
    (b"\x03" + b"\x00" * 239, "op"),
])
def test_malformed_packets_raise_parse_error(data, reason):
    with pytest.raises(dhcp.DhcpParseError, match=reason):
        dhcp.parse_packet(data)


def test_missing_cookie_truncated_option_and_missing_message_type_are_refused():
    good = dhcp.encode_packet(request(dhcp.DISCOVER))
    with pytest.raises(dhcp.DhcpParseError, match="cookie"):
        dhcp.parse_packet(good[:236] + b"\0\0\0\0" + good[240:])
    with pytest.raises(dhcp.DhcpParseError, match="runs past"):
        dhcp.parse_packet(good[:240] + bytes((dhcp.OPT_VENDOR_CLASS, 50)) + b"short")
    with pytest.raises(dhcp.DhcpParseError, match="message type"):
        dhcp.parse_packet(good[:240] + b"\xff")


def test_client_info_reads_arch_ipxe_and_guid():
    info = dhcp.client_info(request(dhcp.DISCOVER, arch=7, user_class=b"iPXE"))
    assert info.arch == 7 and info.is_pxe and info.is_ipxe and info.guid == GUID
    rfc3004 = dhcp.client_info(request(dhcp.DISCOVER, user_class=b"\x04iPXE"))
    assert rfc3004.is_ipxe
    via_175 = dhcp.client_info(request(dhcp.DISCOVER, extra={dhcp.OPT_IPXE_ENCAP: b"\x13\x01\x01"}))
    assert via_175.is_ipxe
    plain = dhcp.client_info(request(dhcp.DISCOVER, vendor=b"udhcp 1.35", arch=None))
    assert not plain.is_pxe and plain.arch is None


@pytest.mark.parametrize("arch, ipxe, vendor, expected", [
    (0, False, "PXEClient", ("undionly.kpxe", "PXEClient")),
    (7, False, "PXEClient", ("ipxe.efi", "PXEClient")),
    (9, False, "PXEClient", ("ipxe.efi", "PXEClient")),       # EFI BC, seen from x64 firmware (errata 4624)
    (16, False, "HTTPClient", ("http://10.9.0.1:8080/boot/ipxe.efi", "HTTPClient")),
    (0, True, "PXEClient", ("http://10.9.0.1:8080/boot.ipxe", "PXEClient")),
    (7, True, "PXEClient", ("http://10.9.0.1:8080/boot.ipxe", "PXEClient")),
    (11, False, "PXEClient", None),                            # ARM64: we have no binary for it
])
def test_boot_choice_per_architecture(arch, ipxe, vendor, expected):
    info = dhcp.client_info(request(dhcp.DISCOVER, arch=arch, vendor=vendor.encode() + b":Arch:x",
                                    user_class=b"iPXE" if ipxe else None))
    choice = dhcp.boot_choice(info, SERVER.files)
    assert (choice.filename, choice.vendor_class) == expected if expected else choice is None


def test_proxy_offer_for_bios_has_option_43_60_54_and_no_address():
    decision = decide(request(dhcp.DISCOVER), 67, DhcpPolicy(SERVER), {}, 0.0)
    reply = roundtrip(decision.reply)
    assert reply.message_type == dhcp.OFFER and reply.yiaddr == "0.0.0.0"
    assert reply.siaddr == "10.9.0.1" and reply.file == b"undionly.kpxe"
    assert reply.options[dhcp.OPT_VENDOR_CLASS] == b"PXEClient"
    assert reply.options[dhcp.OPT_SERVER_ID] == ipaddress.IPv4Address("10.9.0.1").packed
    assert reply.options[dhcp.OPT_VENDOR_SPECIFIC] == b"\x06\x01\x08\xff"
    assert reply.options[dhcp.OPT_CLIENT_GUID] == GUID
    assert dhcp.OPT_LEASE_TIME not in reply.options and dhcp.OPT_SUBNET_MASK not in reply.options
    assert decision.stage == "dhcp-offer"


def test_proxy_uefi_offer_omits_43_and_port_4011_request_gets_the_file_back_unicast():
    policy = DhcpPolicy(SERVER)
    offer = decide(request(dhcp.DISCOVER, arch=7), 67, policy, {}, 0.0).reply
    assert dhcp.OPT_VENDOR_SPECIFIC not in offer.options and offer.file == b"ipxe.efi"
    req = request(dhcp.REQUEST, arch=7, ciaddr="10.9.0.77")
    decision = decide(req, 4011, policy, {}, 0.0)
    assert decision.reply.message_type == dhcp.ACK and decision.reply.file == b"ipxe.efi"
    assert dhcp.reply_destination(req, ("10.9.0.77", 4011), 4011, decision.reply) == ("10.9.0.77", 4011)


def test_proxy_ignores_non_pxe_clients_requests_for_other_servers_and_replies():
    policy = DhcpPolicy(SERVER)
    assert decide(request(dhcp.DISCOVER, vendor=None, arch=None), 67, policy, {}, 0.0).reply is None
    other = request(dhcp.REQUEST, extra={dhcp.OPT_SERVER_ID: bytes((10, 9, 0, 2))})
    assert decide(other, 67, policy, {}, 0.0).reply is None
    reply_packet = dhcp.DhcpPacket(op=dhcp.BOOTREPLY, xid=1, chaddr=MAC, options={53: b"\x02"})
    assert decide(reply_packet, 67, policy, {}, 0.0).reply is None


def test_chain_ipxe_roms_sends_the_binary_until_it_was_loaded():
    policy = DhcpPolicy(SERVER, chain_ipxe_roms=True)
    rom = request(dhcp.DISCOVER, user_class=b"iPXE")
    assert decide(rom, 67, policy, {}, 1000.0, ipxe_loaded_at=None).reply.file == b"undionly.kpxe"
    chained = decide(rom, 67, policy, {}, 1000.0, ipxe_loaded_at=990.0).reply
    assert chained.file == b"http://10.9.0.1:8080/boot.ipxe"


POOL = parse_dhcp_range("10.9.0.50,10.9.0.52", ipaddress.IPv4Network("10.9.0.0/24"), "10.9.0.1", ("10.9.0.1",), 600)


def test_full_mode_offer_then_ack_with_lease_options():
    policy = DhcpPolicy(SERVER, POOL)
    offer = decide(request(dhcp.DISCOVER, vendor=None, arch=None), 67, policy, {}, 100.0)
    assert offer.reply.yiaddr == "10.9.0.50" and offer.lease_change.state == "offered"
    assert dhcp.OPT_VENDOR_CLASS not in offer.reply.options and offer.reply.file == b""
    leases = {"52:54:00:aa:bb:cc": offer.lease_change}
    req = request(dhcp.REQUEST, vendor=None, arch=None,
                  extra={dhcp.OPT_REQUESTED_IP: bytes((10, 9, 0, 50)), dhcp.OPT_SERVER_ID: bytes((10, 9, 0, 1))})
    ack = decide(req, 67, policy, leases, 101.0)
    opts = ack.reply.options
    assert ack.reply.message_type == dhcp.ACK and ack.reply.yiaddr == "10.9.0.50"
    assert struct.unpack("!I", opts[dhcp.OPT_LEASE_TIME])[0] == 600
    assert opts[dhcp.OPT_ROUTER] == bytes((10, 9, 0, 1)) and opts[dhcp.OPT_SUBNET_MASK] == bytes((255, 255, 255, 0))
    assert ack.lease_change.state == "bound" and ack.lease_change.expires == 701.0


def test_full_mode_naks_a_wrong_address_and_stays_silent_for_other_servers():
    policy = DhcpPolicy(SERVER, POOL)
    wrong = request(dhcp.REQUEST, vendor=None, arch=None, extra={dhcp.OPT_REQUESTED_IP: bytes((10, 9, 0, 99)),
                                                                 dhcp.OPT_SERVER_ID: bytes((10, 9, 0, 1))})
    assert decide(wrong, 67, policy, {}, 0.0).reply.message_type == dhcp.NAK
    other = request(dhcp.REQUEST, vendor=None, arch=None, extra={dhcp.OPT_SERVER_ID: bytes((10, 9, 0, 2))})
    assert decide(other, 67, policy, {}, 0.0).reply is None
    release = request(dhcp.RELEASE, vendor=None, arch=None)
    assert decide(release, 67, policy, {}, 0.0).lease_release == "52:54:00:aa:bb:cc"


def test_ipxe_in_full_mode_gets_no_pxedhcp():
    policy = DhcpPolicy(SERVER, POOL)
    offer = decide(request(dhcp.DISCOVER, user_class=b"iPXE"), 67, policy, {}, 0.0).reply
    assert offer.options[dhcp.OPT_IPXE_ENCAP] == b"\xb0\x01\x01"


def test_allocation_prefers_static_then_previous_then_requested_then_lowest_free():
    now = 1000.0
    leases = {"aa": LeaseRecord("aa", "10.9.0.50", now + 100), "bb": LeaseRecord("bb", "10.9.0.51", now - 1)}
    assert allocate(leases, "cc", POOL, {"cc": "10.9.0.200"}, now) == "10.9.0.200"
    assert allocate(leases, "bb", POOL, {}, now) == "10.9.0.51"            # its expired lease, still free
    assert allocate(leases, "cc", POOL, {}, now, requested="10.9.0.52") == "10.9.0.52"
    assert allocate(leases, "cc", POOL, {}, now) == "10.9.0.52"            # lowest never-used address
    full = dict(leases, dd=LeaseRecord("dd", "10.9.0.52", now + 100))
    assert allocate(full, "cc", POOL, {}, now) == "10.9.0.51"              # reuse the expired one
    full["bb"] = LeaseRecord("bb", "10.9.0.51", now + 100)
    assert allocate(full, "cc", POOL, {}, now) is None                     # exhausted


def test_dhcp_range_is_checked_against_the_interface_network():
    from provisioner.errors import UsageError

    with pytest.raises(UsageError, match="not in the interface's network"):
        parse_dhcp_range("10.8.0.5,10.8.0.9", ipaddress.IPv4Network("10.9.0.0/24"))
    with pytest.raises(UsageError, match="after end"):
        parse_dhcp_range("10.9.0.9,10.9.0.5", ipaddress.IPv4Network("10.9.0.0/24"))
