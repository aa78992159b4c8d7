"""Hypothesis: malformed DHCP and TFTP packets never crash the parsers or the policy, and garbage
never earns a reply. 10,000 cases each (the issue's floor)."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from provisioner.pxe import dhcp, tftp
from provisioner.pxe.dhcpd import DhcpPolicy, decide
from provisioner.pxe.leases import parse_dhcp_range

# Generate only (no shrinking database, no replay): the floor is 10,000 fresh cases per run.
CASES = settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                 phases=[Phase.generate])
SERVER = dhcp.ServerIdentity("10.9.0.1", dhcp.BootFiles())
POOL = parse_dhcp_range("10.9.0.50,10.9.0.60", ipaddress.IPv4Network("10.9.0.0/24"))
VALID = dhcp.encode_packet(dhcp.DhcpPacket(
    op=1, xid=7, chaddr=bytes(6), options={53: b"\x01", 60: b"PXEClient:Arch:00000", 93: b"\x00\x00"}))

# Options that look like DHCP: mostly valid TLVs with odd lengths and values, sometimes broken.
option = st.tuples(st.integers(0, 255), st.binary(max_size=40)).map(lambda t: bytes((t[0], len(t[1]))) + t[1])
options_blob = st.lists(option, max_size=12).map(b"".join) | st.binary(max_size=300)
header = st.binary(min_size=236, max_size=236)
dhcp_like = st.tuples(header, st.sampled_from([dhcp.MAGIC_COOKIE, b"\0\0\0\0"]), options_blob).map(b"".join)
mutated_valid = st.tuples(st.integers(0, len(VALID) - 1), st.binary(min_size=1, max_size=8)).map(
    lambda t: VALID[:t[0]] + t[1] + VALID[t[0] + len(t[1]):])


@CASES
@given(st.one_of(st.binary(max_size=600), dhcp_like, mutated_valid))
def test_dhcp_parser_and_policy_never_crash(data):
    try:
        packet = dhcp.parse_packet(data)
    except dhcp.DhcpParseError:
        return
    for policy in (DhcpPolicy(SERVER), DhcpPolicy(SERVER, POOL)):
        for port in (67, 4011):
            decision = decide(packet, port, policy, {}, 0.0)
            if decision.reply is not None:
                # Anything we answer must be a request from an Ethernet client, and encodable.
                assert packet.op == dhcp.BOOTREQUEST and len(packet.chaddr) == 6
                dhcp.encode_packet(decision.reply)


tftp_like = st.tuples(
    st.sampled_from([b"\x00\x01", b"\x00\x02", b"\x00\x03", b"\x00\x04", b"\x00\x05", b"\x00\x06", b"\xff\xff"]),
    st.lists(st.binary(max_size=30), max_size=8).map(b"\0".join),
    st.sampled_from([b"", b"\0"]),
).map(b"".join)


@CASES
@given(st.one_of(st.binary(max_size=600), tftp_like))
def test_tftp_request_parser_never_crashes_and_accepts_only_clean_requests(data):
    try:
        request = tftp.parse_request(data)
    except tftp.TftpRequestError:
        return
    assert request.opcode in (tftp.OP_RRQ, tftp.OP_WRQ)
    assert request.filename and request.mode in ("octet", "netascii")
    accepted = tftp.negotiate_options(request.options, 1468)
    if "blksize" in accepted:
        assert 8 <= int(accepted["blksize"]) <= 1468
    tftp.encode_rrq(request.filename, accepted)   # what tftpy gets is always well-formed


def test_a_valid_request_survives_the_parser():
    data = struct.pack("!H", 1) + b"undionly.kpxe\0octet\0blksize\x001468\0tsize\x000\0"
    request = tftp.parse_request(data)
    assert request.filename == "undionly.kpxe" and request.options == {"blksize": "1468", "tsize": "0"}
