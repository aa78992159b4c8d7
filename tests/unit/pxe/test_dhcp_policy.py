"""Whether and what the DHCP service answers (dhcp_policy.decide), tested directly: proxy and full
mode, iPXE chaining, and garbage that never earns a reply."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from provisioner.pxe import dhcp_packet as wire
from provisioner.pxe.dhcp_leases import LeaseState, parse_dhcp_range
from provisioner.pxe.dhcp_policy import DhcpPolicy, decide
from provisioner.pxe.dhcp_reply import reply_destination
from provisioner.pxe.events import BootEvent, EventSource
from tests.unit.pxe.dhcp_requests import MAC, SERVER, request, roundtrip

POOL = parse_dhcp_range("10.9.0.50,10.9.0.52", ipaddress.IPv4Network("10.9.0.0/24"), "10.9.0.1", ("10.9.0.1",), 600)


def test_proxy_offer_for_bios_is_a_boot_file_and_a_boot_event():
    decision = decide(request(wire.DISCOVER), 67, DhcpPolicy(SERVER), {}, 0.0)
    reply = roundtrip(decision.reply)
    assert reply.message_type == wire.OFFER and reply.yiaddr == "0.0.0.0" and reply.file == b"undionly.kpxe"
    assert decision.event == BootEvent(stage="dhcp-offer", source=EventSource.DHCP, mac="52:54:00:aa:bb:cc",
                                       detail={"arch": "bios", "ipxe": False, "file": "undionly.kpxe"})
    assert decision.lease_change is None


def test_proxy_uefi_offer_omits_43_and_port_4011_request_gets_the_file_back_unicast():
    policy = DhcpPolicy(SERVER)
    offer = decide(request(wire.DISCOVER, arch=7), 67, policy, {}, 0.0).reply
    assert wire.OPT_VENDOR_SPECIFIC not in offer.options and offer.file == b"ipxe.efi"
    req = request(wire.REQUEST, arch=7, ciaddr="10.9.0.77")
    decision = decide(req, 4011, policy, {}, 0.0)
    assert decision.reply.message_type == wire.ACK and decision.reply.file == b"ipxe.efi"
    assert decision.event.stage == "dhcp-boot-server"
    assert reply_destination(req, ("10.9.0.77", 4011), 4011, decision.reply) == ("10.9.0.77", 4011)


def test_proxy_ignores_non_pxe_clients_requests_for_other_servers_and_replies():
    policy = DhcpPolicy(SERVER)
    assert decide(request(wire.DISCOVER, vendor=None, arch=None), 67, policy, {}, 0.0).reply is None
    other = request(wire.REQUEST, extra={wire.OPT_SERVER_ID: bytes((10, 9, 0, 2))})
    assert decide(other, 67, policy, {}, 0.0).reply is None
    reply_packet = wire.DhcpPacket(op=wire.BOOTREPLY, xid=1, chaddr=MAC, options={53: b"\x02"})
    assert decide(reply_packet, 67, policy, {}, 0.0).reply is None


def test_chain_ipxe_roms_sends_the_binary_until_it_was_loaded():
    policy = DhcpPolicy(SERVER, chain_ipxe_roms=True)
    rom = request(wire.DISCOVER, user_class=b"iPXE")
    assert decide(rom, 67, policy, {}, 1000.0, ipxe_loaded_at=None).reply.file == b"undionly.kpxe"
    chained = decide(rom, 67, policy, {}, 1000.0, ipxe_loaded_at=990.0).reply
    assert chained.file == b"http://10.9.0.1:8080/boot.ipxe"


def test_full_mode_offer_then_ack_with_lease_options():
    policy = DhcpPolicy(SERVER, POOL)
    offer = decide(request(wire.DISCOVER, vendor=None, arch=None), 67, policy, {}, 100.0)
    assert offer.reply.yiaddr == "10.9.0.50" and offer.lease_change.state == LeaseState.OFFERED
    assert wire.OPT_VENDOR_CLASS not in offer.reply.options and offer.reply.file == b""
    assert offer.event.detail["ip"] == "10.9.0.50"
    leases = {"52:54:00:aa:bb:cc": offer.lease_change}
    req = request(wire.REQUEST, vendor=None, arch=None,
                  extra={wire.OPT_REQUESTED_IP: bytes((10, 9, 0, 50)), wire.OPT_SERVER_ID: bytes((10, 9, 0, 1))})
    ack = decide(req, 67, policy, leases, 101.0)
    opts = ack.reply.options
    assert ack.reply.message_type == wire.ACK and ack.reply.yiaddr == "10.9.0.50"
    assert struct.unpack("!I", opts[wire.OPT_LEASE_TIME])[0] == 600
    assert opts[wire.OPT_ROUTER] == bytes((10, 9, 0, 1)) and opts[wire.OPT_SUBNET_MASK] == bytes((255, 255, 255, 0))
    assert ack.lease_change.state == LeaseState.BOUND and ack.lease_change.expires == 701.0


def test_full_mode_naks_a_wrong_address_and_stays_silent_for_other_servers():
    policy = DhcpPolicy(SERVER, POOL)
    wrong = request(wire.REQUEST, vendor=None, arch=None, extra={wire.OPT_REQUESTED_IP: bytes((10, 9, 0, 99)),
                                                                 wire.OPT_SERVER_ID: bytes((10, 9, 0, 1))})
    assert decide(wrong, 67, policy, {}, 0.0).reply.message_type == wire.NAK
    other = request(wire.REQUEST, vendor=None, arch=None, extra={wire.OPT_SERVER_ID: bytes((10, 9, 0, 2))})
    assert decide(other, 67, policy, {}, 0.0).reply is None
    release = request(wire.RELEASE, vendor=None, arch=None)
    assert decide(release, 67, policy, {}, 0.0).lease_release == "52:54:00:aa:bb:cc"


def test_full_mode_inform_is_answered_with_the_network_settings():
    decision = decide(request(wire.INFORM, vendor=None, arch=None, ciaddr="10.9.0.77"), 67,
                      DhcpPolicy(SERVER, POOL), {}, 0.0)
    assert decision.reply.options[wire.OPT_SUBNET_MASK] == bytes((255, 255, 255, 0))
    assert decision.event.stage == "dhcp-inform" and decision.lease_change is None


def test_ipxe_in_full_mode_gets_no_pxedhcp():
    policy = DhcpPolicy(SERVER, POOL)
    offer = decide(request(wire.DISCOVER, user_class=b"iPXE"), 67, policy, {}, 0.0).reply
    assert offer.options[wire.OPT_IPXE_ENCAP] == b"\xb0\x01\x01"


# Hypothesis, generate only (no shrinking database, no replay): 10,000 fresh cases per run.
CASES = settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                 phases=[Phase.generate])
FUZZ_POOL = parse_dhcp_range("10.9.0.50,10.9.0.60", ipaddress.IPv4Network("10.9.0.0/24"))
VALID = wire.encode_packet(wire.DhcpPacket(
    op=1, xid=7, chaddr=bytes(6), options={53: b"\x01", 60: b"PXEClient:Arch:00000", 93: b"\x00\x00"}))

# Options that look like DHCP: mostly valid TLVs with odd lengths and values, sometimes broken.
option = st.tuples(st.integers(0, 255), st.binary(max_size=40)).map(lambda t: bytes((t[0], len(t[1]))) + t[1])
options_blob = st.lists(option, max_size=12).map(b"".join) | st.binary(max_size=300)
header = st.binary(min_size=236, max_size=236)
dhcp_like = st.tuples(header, st.sampled_from([wire.MAGIC_COOKIE, b"\0\0\0\0"]), options_blob).map(b"".join)
mutated_valid = st.tuples(st.integers(0, len(VALID) - 1), st.binary(min_size=1, max_size=8)).map(
    lambda t: VALID[:t[0]] + t[1] + VALID[t[0] + len(t[1]):])


@CASES
@given(st.one_of(st.binary(max_size=600), dhcp_like, mutated_valid))
def test_dhcp_parser_and_policy_never_crash(data):
    try:
        packet = wire.parse_packet(data)
    except wire.DhcpParseError:
        return
    for policy in (DhcpPolicy(SERVER), DhcpPolicy(SERVER, FUZZ_POOL)):
        for port in (67, 4011):
            decision = decide(packet, port, policy, {}, 0.0)
            if decision.reply is not None:
                # Anything we answer must be a request from an Ethernet client, and encodable.
                assert packet.op == wire.BOOTREQUEST and len(packet.chaddr) == 6
                wire.encode_packet(decision.reply)
