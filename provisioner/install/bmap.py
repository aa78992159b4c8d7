"""bmaptool's block map (XML, versions 1.x and 2.0): which byte ranges of a raw image hold data.

Format (yoctoproject/bmaptool docs, shared/reference/installer.md §4): <ImageSize>, <BlockSize>,
<BlocksCount>, <MappedBlocksCount>, <ChecksumType> (2.0; any hashlib name, usually sha256; 1.3
used SHA1 with `sha1=` attributes), <BmapFileChecksum> computed over the file with that value
replaced by ASCII zeros, and <BlockMap> of <Range chksum="..."> first-last </Range> (inclusive
block numbers, or a single block). Pure parsing, standard library only.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from provisioner.errors import VerifyError


@dataclass(frozen=True)
class MappedRange:
    start: int  # byte offset in the image
    end: int  # exclusive
    checksum: str | None  # hex digest of the bytes [start, end), or None


@dataclass(frozen=True)
class Bmap:
    image_size: int
    block_size: int
    checksum_type: str | None
    ranges: tuple[MappedRange, ...]

    @property
    def mapped_bytes(self) -> int:
        return sum(r.end - r.start for r in self.ranges)

    def unmapped(self) -> list[tuple[int, int]]:
        """The holes as (start, end) byte ranges, in order."""
        holes = []
        position = 0
        for r in self.ranges:
            if r.start > position:
                holes.append((position, r.start))
            position = max(position, r.end)
        if position < self.image_size:
            holes.append((position, self.image_size))
        return holes


def parse_bmap(data: bytes, source: str = "bmap") -> Bmap:
    """Parse and self-check a bmap file. Raises VerifyError naming `source` on any problem."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise VerifyError(f"{source}: not valid XML ({exc})") from None
    if root.tag != "bmap":
        raise VerifyError(f"{source}: root element is <{root.tag}>, expected <bmap>")
    version = root.get("version", "1.0")
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if major not in (1, 2):
        raise VerifyError(f"{source}: bmap version {version} is not supported (1.x, 2.x)")

    def number(tag: str) -> int:
        text = (root.findtext(tag) or "").strip()
        if not text.isdigit():
            raise VerifyError(f"{source}: <{tag}> missing or not a number")
        return int(text)

    image_size, block_size = number("ImageSize"), number("BlockSize")
    if block_size <= 0 or block_size % 512:
        raise VerifyError(f"{source}: <BlockSize> {block_size} is not a multiple of 512")
    checksum_type = (root.findtext("ChecksumType") or "").strip().lower() or None
    file_checksum = (root.findtext("BmapFileChecksum") or "").strip()
    attribute = "chksum"
    if checksum_type is None and major == 1:
        checksum_type, attribute = "sha1", "sha1"
        file_checksum = (root.findtext("BmapFileSHA1") or "").strip()
    if checksum_type is not None and checksum_type not in hashlib.algorithms_available:
        raise VerifyError(f"{source}: checksum type {checksum_type!r} is unknown")
    if file_checksum and checksum_type:
        zeroed = data.replace(file_checksum.encode(), b"0" * len(file_checksum), 1)
        actual = hashlib.new(checksum_type, zeroed).hexdigest()
        if actual != file_checksum.lower():
            raise VerifyError(f"{source}: the bmap file's own checksum does not match (file corrupted)")

    ranges: list[MappedRange] = []
    block_map = root.find("BlockMap")
    if block_map is None:
        raise VerifyError(f"{source}: no <BlockMap>")
    for element in block_map.findall("Range"):
        text = (element.text or "").strip()
        try:
            first, _, last = text.partition("-")
            first_block = int(first)
            last_block = int(last) if last else first_block
        except ValueError:
            raise VerifyError(f"{source}: bad <Range> {text!r}") from None
        start = first_block * block_size
        end = min((last_block + 1) * block_size, image_size)
        if last_block < first_block or start >= image_size:
            raise VerifyError(f"{source}: <Range> {text!r} lies outside the image")
        if ranges and start < ranges[-1].end:
            raise VerifyError(f"{source}: ranges overlap or are out of order at {text!r}")
        checksum = element.get(attribute)
        if checksum and checksum_type is None:
            raise VerifyError(f"{source}: <Range> {text!r} has a checksum but the bmap names no <ChecksumType>")
        ranges.append(MappedRange(start, end, checksum))
    mapped = sum(r.end - r.start for r in ranges)
    declared = root.findtext("MappedBlocksCount")
    if declared and declared.strip().isdigit() and -(-mapped // block_size) > int(declared.strip()) + len(ranges):
        raise VerifyError(f"{source}: <MappedBlocksCount> disagrees with the ranges")
    return Bmap(image_size, block_size, checksum_type, tuple(ranges))
