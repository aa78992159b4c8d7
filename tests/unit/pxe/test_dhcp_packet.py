"""The DHCP codec and client classification, tested directly (pure functions, no sockets)."""

from __future__ import annotations

import pytest

from provisioner.pxe import dhcp_packet as wire
from tests.unit.pxe.dhcp_requests import GUID, request, roundtrip


def test_encode_parse_roundtrip_keeps_every_field():
    packet = request(wire.DISCOVER)
    parsed = roundtrip(packet)
    assert parsed.mac == "52:54:00:aa:bb:cc" and parsed.xid == 0x1234 and parsed.flags == 0x8000
    assert parsed.options == packet.options
    assert len(wire.encode_packet(packet)) >= 300   # BOOTP minimum size some ROMs insist on


def test_long_options_are_split_and_concatenated_again_rfc3396():
    value = bytes(range(256)) * 2
    parsed = roundtrip(request(wire.DISCOVER, extra={wire.OPT_VENDOR_SPECIFIC: value}))
    assert parsed.options[wire.OPT_VENDOR_SPECIFIC] == value


@pytest.mark.parametrize("data, reason", [
    (b"", "shorter"),
    (b"\x01" * 100, "shorter"),
    (b"\x03" + b"\x00" * 239, "op"),
])
def test_malformed_packets_raise_parse_error(data, reason):
    with pytest.raises(wire.DhcpParseError, match=reason):
        wire.parse_packet(data)


def test_missing_cookie_truncated_option_and_missing_message_type_are_refused():
    good = wire.encode_packet(request(wire.DISCOVER))
    with pytest.raises(wire.DhcpParseError, match="cookie"):
        wire.parse_packet(good[:236] + b"\0\0\0\0" + good[240:])
    with pytest.raises(wire.DhcpParseError, match="runs past"):
        wire.parse_packet(good[:240] + bytes((wire.OPT_VENDOR_CLASS, 50)) + b"short")
    with pytest.raises(wire.DhcpParseError, match="message type"):
        wire.parse_packet(good[:240] + b"\xff")


def test_client_info_reads_arch_ipxe_and_guid():
    info = wire.client_info(request(wire.DISCOVER, arch=7, user_class=b"iPXE"))
    assert info.arch == 7 and info.arch_name == "efi-x64" and info.is_pxe and info.is_ipxe and info.guid == GUID
    rfc3004 = wire.client_info(request(wire.DISCOVER, user_class=b"\x04iPXE"))
    assert rfc3004.is_ipxe
    via_175 = wire.client_info(request(wire.DISCOVER, extra={wire.OPT_IPXE_ENCAP: b"\x13\x01\x01"}))
    assert via_175.is_ipxe
    plain = wire.client_info(request(wire.DISCOVER, vendor=b"udhcp 1.35", arch=None))
    assert not plain.is_pxe and plain.arch is None and plain.arch_name is None
    assert wire.client_info(request(wire.DISCOVER, arch=99)).arch_name == 99   # no name: the number
