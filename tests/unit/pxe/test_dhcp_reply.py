"""The DHCP answer: which boot file per firmware, what the reply carries, where it goes (pure)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from provisioner.pxe import dhcp_packet as wire
from provisioner.pxe.dhcp_reply import BootFiles, Lease, boot_choice, build_reply, inform_reply, nak, reply_destination
from tests.unit.pxe.dhcp_requests import GUID, SERVER, request, roundtrip


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
    info = wire.client_info(request(wire.DISCOVER, arch=arch, vendor=vendor.encode() + b":Arch:x",
                                    user_class=b"iPXE" if ipxe else None))
    choice = boot_choice(info, SERVER.files)
    assert (choice.filename, choice.vendor_class) == expected if expected else choice is None


@pytest.mark.parametrize("arch, ipxe, vendor, expected", [
    (0, False, "PXEClient", None),
    (7, False, "PXEClient", None),
    (16, False, "HTTPClient", ("http://10.9.0.1:8080/boot/ipxe.efi", "HTTPClient")),
    (7, True, "PXEClient", ("http://10.9.0.1:8080/boot.ipxe", "PXEClient")),
])
def test_without_tftp_only_http_answers_are_offered(arch, ipxe, vendor, expected):
    info = wire.client_info(request(wire.DISCOVER, arch=arch, vendor=vendor.encode() + b":Arch:x",
                                    user_class=b"iPXE" if ipxe else None))
    choice = boot_choice(info, BootFiles(http_base="http://10.9.0.1:8080", tftp=False))
    assert (choice.filename, choice.vendor_class) == expected if expected else choice is None


def test_proxy_offer_for_bios_has_option_43_60_54_97_and_no_address():
    packet = request(wire.DISCOVER)
    client = wire.client_info(packet)
    reply = roundtrip(build_reply(packet, client, wire.OFFER, SERVER, boot_choice(client, SERVER.files), None))
    assert reply.message_type == wire.OFFER and reply.yiaddr == "0.0.0.0"
    assert reply.siaddr == "10.9.0.1" and reply.file == b"undionly.kpxe"
    assert reply.options[wire.OPT_VENDOR_CLASS] == b"PXEClient"
    assert reply.options[wire.OPT_SERVER_ID] == ipaddress.IPv4Address("10.9.0.1").packed
    assert reply.options[wire.OPT_VENDOR_SPECIFIC] == b"\x06\x01\x08\xff"
    assert reply.options[wire.OPT_CLIENT_GUID] == GUID
    assert reply.options[wire.OPT_BOOTFILE] == b"undionly.kpxe" and reply.options[wire.OPT_TFTP_SERVER] == b"10.9.0.1"
    assert wire.OPT_LEASE_TIME not in reply.options and wire.OPT_SUBNET_MASK not in reply.options


def test_a_boot_url_too_long_for_the_header_goes_in_option_67_only():
    packet = request(wire.DISCOVER, user_class=b"iPXE")
    client = wire.client_info(packet)
    long_files = BootFiles(http_base="http://" + "x" * 120)
    reply = build_reply(packet, client, wire.OFFER, SERVER, boot_choice(client, long_files), None)
    assert reply.file == b"" and reply.options[wire.OPT_BOOTFILE].endswith(b"/boot.ipxe")
    wire.encode_packet(reply)


def test_inform_ack_carries_mask_and_router_but_no_address_or_lease():
    packet = request(wire.INFORM, vendor=None, arch=None, ciaddr="10.9.0.77")
    reply = inform_reply(packet, wire.client_info(packet), SERVER, None, "255.255.255.0", "10.9.0.1")
    assert reply.message_type == wire.ACK and reply.yiaddr == "0.0.0.0" and reply.ciaddr == "10.9.0.77"
    assert reply.options[wire.OPT_SUBNET_MASK] == bytes((255, 255, 255, 0))
    assert reply.options[wire.OPT_ROUTER] == bytes((10, 9, 0, 1)) and wire.OPT_LEASE_TIME not in reply.options


def test_lease_options_and_nak():
    packet = request(wire.REQUEST, vendor=None, arch=None)
    lease = Lease("10.9.0.50", "255.255.255.0", None, ("10.9.0.1", "10.9.0.2"), 600)
    reply = build_reply(packet, wire.client_info(packet), wire.ACK, SERVER, None, lease)
    assert reply.yiaddr == "10.9.0.50" and wire.OPT_ROUTER not in reply.options
    assert reply.options[wire.OPT_DNS] == bytes((10, 9, 0, 1, 10, 9, 0, 2))
    refused = nak(packet, SERVER)
    assert refused.message_type == wire.NAK and set(refused.options) == {wire.OPT_MESSAGE_TYPE, wire.OPT_SERVER_ID}


@pytest.mark.parametrize("ciaddr, giaddr, port, expected", [
    ("0.0.0.0", "0.0.0.0", 67, ("255.255.255.255", 68)),
    ("10.9.0.77", "0.0.0.0", 67, ("10.9.0.77", 68)),
    ("0.0.0.0", "10.8.0.1", 67, ("10.8.0.1", 67)),             # through a relay
    ("10.9.0.77", "0.0.0.0", 4011, ("10.9.0.77", 4011)),        # boot server port: back to the sender
])
def test_reply_destination_rfc2131_4_1(ciaddr, giaddr, port, expected):
    packet = replace(request(wire.REQUEST, ciaddr=ciaddr), giaddr=giaddr)
    reply = build_reply(packet, wire.client_info(packet), wire.ACK, SERVER, None, None)
    assert reply_destination(packet, ("10.9.0.77", port), port, reply) == expected
