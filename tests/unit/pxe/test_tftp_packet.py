"""The TFTP request codec: clean requests parse, odd ones are refused, garbage never crashes it."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from provisioner.pxe.tftp_packet import (
    OP_ERROR,
    OP_RRQ,
    OP_WRQ,
    TftpRequestError,
    encode_error,
    encode_rrq,
    parse_request,
)
from provisioner.pxe.tftp_policy import negotiate_options


def test_a_valid_request_survives_the_parser_and_is_re_encoded_as_octet():
    data = struct.pack("!H", 1) + b"undionly.kpxe\0OCTET\0BlkSize\x001468\0tsize\x000\0"
    request = parse_request(data)
    assert request.filename == "undionly.kpxe" and request.mode == "octet"
    assert request.options == {"blksize": "1468", "tsize": "0"}
    assert encode_rrq(request.filename, request.options) == \
        struct.pack("!H", 1) + b"undionly.kpxe\0octet\0blksize\x001468\0tsize\x000\0"


def test_wrq_and_odd_requests():
    assert parse_request(b"\x00\x02a\0octet\0").opcode == OP_WRQ
    with pytest.raises(TftpRequestError, match="mode"):
        parse_request(b"\x00\x01a\0mail\0")
    with pytest.raises(TftpRequestError, match="NUL-terminated"):
        parse_request(b"\x00\x01abc")
    with pytest.raises(TftpRequestError, match="cannot start a transfer"):
        parse_request(b"\x00\x03\x00\x01data\0")


def test_error_packet_is_bounded_and_nul_terminated():
    packet = encode_error(2, "x" * 500)
    assert packet[:4] == struct.pack("!HH", OP_ERROR, 2) and packet.endswith(b"\0") and len(packet) == 205


# Hypothesis, generate only (no shrinking database, no replay): 10,000 fresh cases per run.
CASES = settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                 phases=[Phase.generate])
tftp_like = st.tuples(
    st.sampled_from([b"\x00\x01", b"\x00\x02", b"\x00\x03", b"\x00\x04", b"\x00\x05", b"\x00\x06", b"\xff\xff"]),
    st.lists(st.binary(max_size=30), max_size=8).map(b"\0".join),
    st.sampled_from([b"", b"\0"]),
).map(b"".join)


@CASES
@given(st.one_of(st.binary(max_size=600), tftp_like))
def test_request_parser_never_crashes_and_accepts_only_clean_requests(data):
    try:
        request = parse_request(data)
    except TftpRequestError:
        return
    assert request.opcode in (OP_RRQ, OP_WRQ)
    assert request.filename and request.mode in ("octet", "netascii")
    accepted = negotiate_options(request.options, 1468)
    if "blksize" in accepted:
        assert 8 <= int(accepted["blksize"]) <= 1468
    encode_rrq(request.filename, accepted)   # what tftpy gets is always well-formed
