"""The Router Advertisement that tells iPXE there is no IPv6 router, and which packets ask for one."""

import struct

import pytest

from provisioner.pxe.router_advert_packet import ICMPV6_ROUTER_ADVERT, is_router_solicit, router_advert

SOLICIT = bytes((133, 0, 0, 0, 0, 0, 0, 0))


def test_advert_has_no_flags_no_lifetime_no_prefix_and_our_link_address():
    packet = router_advert(bytes.fromhex("020000aabbcc"))
    kind, code, checksum, hop_limit, flags, lifetime, reachable, retrans = struct.unpack("!BBHBBHII", packet[:16])
    assert (kind, code, checksum) == (ICMPV6_ROUTER_ADVERT, 0, 0)        # the kernel fills the checksum
    assert (hop_limit, flags, lifetime, reachable, retrans) == (0, 0, 0, 0, 0)
    assert packet[16:] == bytes((1, 1)) + bytes.fromhex("020000aabbcc")   # only option: source link address
    with pytest.raises(ValueError, match="6 bytes"):
        router_advert(b"\x01\x02")


@pytest.mark.parametrize("packet,expected", [
    (SOLICIT, True),
    (SOLICIT + bytes((1, 1)) + b"\x52\x54\x00\x00\x00\x01", True),
    (bytes((133, 1, 0, 0, 0, 0, 0, 0)), False),      # code must be 0
    (bytes((135, 0, 0, 0, 0, 0, 0, 0)), False),      # neighbour solicitation
    (bytes((133, 0, 0)), False),                     # truncated
    (b"", False),
])
def test_only_well_formed_solicitations_are_answered(packet, expected):
    assert is_router_solicit(packet) is expected
