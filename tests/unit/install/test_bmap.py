"""bmaptool's block map: ranges, holes, its own checksum."""

from __future__ import annotations

import hashlib

import pytest

from provisioner.errors import VerifyError
from provisioner.install import bmap as bmap_mod

BMAP = """<?xml version="1.0" ?>
<bmap version="2.0">
    <ImageSize> 40960 </ImageSize>
    <BlockSize> 4096 </BlockSize>
    <BlocksCount> 10 </BlocksCount>
    <MappedBlocksCount> 4 </MappedBlocksCount>
    <ChecksumType> sha256 </ChecksumType>
    <BmapFileChecksum> {zero} </BmapFileChecksum>
    <BlockMap>
        <Range chksum="{a}"> 0-1 </Range>
        <Range chksum="{b}"> 5 </Range>
        <Range chksum="{c}"> 8-8 </Range>
    </BlockMap>
</bmap>
"""


def _bmap_bytes() -> bytes:
    sums = {k: hashlib.sha256(k.encode()).hexdigest() for k in "abc"}
    text = BMAP.format(zero="0" * 64, **sums)
    checksum = hashlib.sha256(text.encode()).hexdigest()
    return text.replace("0" * 64, checksum, 1).encode()


def test_bmap_parses_ranges_and_holes():
    parsed = bmap_mod.parse_bmap(_bmap_bytes())
    assert [(r.start, r.end) for r in parsed.ranges] == [(0, 8192), (20480, 24576), (32768, 36864)]
    assert parsed.mapped_bytes == 4 * 4096
    assert parsed.unmapped() == [(8192, 20480), (24576, 32768), (36864, 40960)]
    assert parsed.checksum_type == "sha256"


def test_bmap_self_checksum_is_enforced():
    data = _bmap_bytes().replace(b"> 5 <", b"> 6 <")
    with pytest.raises(VerifyError, match="own checksum"):
        bmap_mod.parse_bmap(data, "x.bmap")


def test_bmap_rejects_garbage():
    with pytest.raises(VerifyError, match="x.bmap: not valid XML"):
        bmap_mod.parse_bmap(b"<bmap", "x.bmap")


def test_range_checksums_need_a_checksum_type():
    text = _bmap_bytes().decode()
    start, end = text.index("<ChecksumType>"), text.index("</BmapFileChecksum>") + len("</BmapFileChecksum>")
    with pytest.raises(VerifyError, match="x.bmap: <Range> '0-1' has a checksum but the bmap names no <ChecksumType>"):
        bmap_mod.parse_bmap((text[:start] + text[end:]).encode(), "x.bmap")
