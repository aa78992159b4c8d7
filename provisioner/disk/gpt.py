"""Read a GUID Partition Table from raw bytes: protective MBR, primary and backup headers, entries.

Standard library only and Python 3.9 compatible (the installer zipapp imports it on rescue
systems). The one GPT reader of the project: pure parsing (`parse_header`, `parse_entries`,
`parse_mbr` take bytes; `parse_table` takes a `read_at(offset, length) -> bytes` callable, so
callers choose the I/O: a disk, an image file, a buffer held in memory), and `read_gpt(path)`, the
thin shell for a device or file. The installer, the resize planner (table.DiskTable), the A/B slots
and the rescue mode's check on the remote host all read through it.

Facts (UEFI spec 2.10 §5.2-5.3):
- LBA 0 holds the protective MBR: one partition record of type 0xEE, signature 0x55AA.
- LBA 1 holds the primary header ("EFI PART", revision 1.0, 92 bytes); the backup header sits
  in the last LBA (the primary's AlternateLBA) with its entry array just before it.
- The header CRC32 covers HeaderSize bytes with the CRC field zeroed; a second CRC32 covers
  NumberOfPartitionEntries * SizeOfPartitionEntry bytes of the entry array.
- GUIDs are stored mixed-endian: the first three fields little-endian, the last eight bytes as is.
- Entry attributes: bit 0 required, bit 1 no-block-io, bit 2 legacy BIOS bootable; bits 48-63
  are type-specific (CoreOS uses 48-51 priority, 52-55 tries, 56 successful: see layout.py).
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable

from provisioner.disk.layout import BootAttributes, decode_boot_attributes
from provisioner.errors import DiskError

SIGNATURE = b"EFI PART"
REVISION_1_0 = 0x00010000
HEADER_SIZE = 92
MBR_TYPE_PROTECTIVE = 0xEE

# struct layout of the 92-byte header (UEFI spec table 5-5).
_HEADER = struct.Struct("<8sIIII QQQQ 16s QIII")
_ENTRY = struct.Struct("<16s16sQQQ72s")
_ZERO_GUID = "00000000-0000-0000-0000-000000000000"

ReadAt = Callable[[int, int], bytes]


def guid_from_bytes(raw: bytes) -> str:
    """16 mixed-endian bytes -> 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B' (upper case, as sgdisk prints)."""
    return str(uuid.UUID(bytes_le=bytes(raw))).upper()


@dataclass(frozen=True)
class ProtectiveMbr:
    """LBA 0. `protective` is True for a proper PMBR (a 0xEE record and the 0x55AA signature)."""

    signature_ok: bool
    partition_types: tuple[int, ...]
    protective: bool
    hybrid: bool  # 0xEE plus other records (the old Flatcar "hybrid" flag, removed 2025)


@dataclass(frozen=True)
class GptHeader:
    lba: int  # where it was read
    revision: int
    header_size: int
    header_crc32: int
    my_lba: int
    alternate_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: str
    entries_lba: int
    entry_count: int
    entry_size: int
    entries_crc32: int
    problems: tuple[str, ...] = ()  # empty when the header (and its entry array) is valid

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Partition:
    """One used GPT entry: what the installer compares, the resize planner plans and a journal records."""

    number: int  # 1-based slot number, as the kernel and sgdisk count
    start: int  # first sector
    end: int  # last sector, inclusive (as sgdisk counts)
    type_guid: str
    partuuid: str
    name: str
    attributes: int = 0

    @property
    def sectors(self) -> int:
        return self.end - self.start + 1

    def start_bytes(self, sector_size: int = 512) -> int:
        return self.start * sector_size

    def size_bytes(self, sector_size: int = 512) -> int:
        return self.sectors * sector_size

    @property
    def boot(self) -> BootAttributes:
        """CoreOS gptprio fields (priority, tries, successful) from bits 48-56."""
        return decode_boot_attributes(self.attributes)

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "start": self.start, "end": self.end, "type_guid": self.type_guid,
                "partuuid": self.partuuid, "name": self.name, "attributes": self.attributes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Partition:
        """The inverse of to_dict; raises KeyError or TypeError for a malformed record."""
        return cls(**{key: data[key] for key in ("number", "start", "end", "type_guid", "partuuid", "name",
                                                  "attributes")})


def partition_layout(partitions: Iterable[Partition]) -> dict[int, tuple[int, int]]:
    """number -> (start sector, sectors): what the kernel must see (blockdev.reread_partitions)."""
    return {part.number: (part.start, part.sectors) for part in partitions}


@dataclass(frozen=True)
class GptTable:
    sector_size: int
    disk_size: int
    mbr: ProtectiveMbr
    primary: GptHeader | None  # None when LBA 1 has no "EFI PART" signature
    backup: GptHeader | None  # None when no backup header was found
    entries: tuple[Partition, ...] = ()  # used entries only, by number
    problems: tuple[str, ...] = field(default=())

    @property
    def valid(self) -> bool:
        """True when at least one header and its entry array pass every check."""
        return bool((self.primary and self.primary.valid) or (self.backup and self.backup.valid))

    @property
    def disk_guid(self) -> str | None:
        header = self.good_header
        return header.disk_guid if header else None

    @property
    def good_header(self) -> GptHeader | None:
        for header in (self.primary, self.backup):
            if header is not None and header.valid:
                return header
        return None

    def entry(self, number: int) -> Partition | None:
        for entry in self.entries:
            if entry.number == number:
                return entry
        return None

    def by_name(self, name: str) -> Partition | None:
        for entry in self.entries:
            if entry.name == name:
                return entry
        return None


def parse_mbr(sector: bytes) -> ProtectiveMbr:
    """Parse LBA 0 (at least 512 bytes)."""
    if len(sector) < 512:
        raise ValueError("an MBR needs 512 bytes")
    signature_ok = sector[510:512] == b"\x55\xaa"
    types = tuple(sector[446 + 16 * i + 4] for i in range(4))
    used = tuple(t for t in types if t != 0)
    protective = signature_ok and MBR_TYPE_PROTECTIVE in used
    return ProtectiveMbr(
        signature_ok=signature_ok,
        partition_types=used,
        protective=protective,
        hybrid=protective and len(used) > 1,
    )


def parse_header(sector: bytes, lba: int) -> GptHeader | None:
    """Parse a header read from `lba`; None if the signature is absent.

    Header problems (CRC, size, my_lba) are listed in `problems`; the entry CRC is checked by
    `check_entries`, which needs the entry array.
    """
    if len(sector) < HEADER_SIZE or sector[:8] != SIGNATURE:
        return None
    fields = _HEADER.unpack_from(sector, 0)
    (_, revision, header_size, header_crc, _reserved, my_lba, alternate_lba, first_usable,
     last_usable, disk_guid_raw, entries_lba, entry_count, entry_size, entries_crc) = fields
    problems = []
    if header_size < HEADER_SIZE or header_size > len(sector):
        problems.append(f"header size {header_size} out of range")
    else:
        scratch = bytearray(sector[:header_size])
        scratch[16:20] = b"\0\0\0\0"
        if zlib.crc32(bytes(scratch)) & 0xFFFFFFFF != header_crc:
            problems.append(f"header CRC32 mismatch at LBA {lba}")
    if my_lba != lba:
        problems.append(f"header at LBA {lba} says it is at LBA {my_lba}")
    if entry_size < 128 or entry_size % 8:
        problems.append(f"entry size {entry_size} is invalid")
    if entry_count > 16384:
        problems.append(f"{entry_count} entries is implausible")
    return GptHeader(
        lba=lba,
        revision=revision,
        header_size=header_size,
        header_crc32=header_crc,
        my_lba=my_lba,
        alternate_lba=alternate_lba,
        first_usable_lba=first_usable,
        last_usable_lba=last_usable,
        disk_guid=guid_from_bytes(disk_guid_raw),
        entries_lba=entries_lba,
        entry_count=entry_count,
        entry_size=entry_size,
        entries_crc32=entries_crc,
        problems=tuple(problems),
    )


def entries_length(header: GptHeader) -> int:
    return header.entry_count * header.entry_size


def check_entries(header: GptHeader, array: bytes) -> GptHeader:
    """Return `header` with an entry-array CRC problem added if `array` does not match."""
    if zlib.crc32(array[: entries_length(header)]) & 0xFFFFFFFF == header.entries_crc32:
        return header
    problem = f"partition entry array CRC32 mismatch (header at LBA {header.lba})"
    return GptHeader(**{**header.__dict__, "problems": header.problems + (problem,)})


def parse_entries(array: bytes, entry_count: int, entry_size: int) -> tuple[Partition, ...]:
    """Used entries (type GUID not all-zero) of an entry array, numbered from 1."""
    entries = []
    for index in range(entry_count):
        raw = array[index * entry_size: index * entry_size + _ENTRY.size]
        if len(raw) < _ENTRY.size:
            break
        type_raw, unique_raw, first, last, attributes, name_raw = _ENTRY.unpack(raw)
        if type_raw == b"\0" * 16:
            continue
        name = name_raw.decode("utf-16-le", "replace").split("\0", 1)[0]
        entries.append(Partition(
            number=index + 1,
            start=first,
            end=last,
            type_guid=guid_from_bytes(type_raw),
            partuuid=guid_from_bytes(unique_raw),
            name=name,
            attributes=attributes,
        ))
    return tuple(entries)


def parse_table(read_at: ReadAt, disk_size: int, sector_size: int = 512) -> GptTable:
    """Read PMBR, primary and backup GPT through `read_at`. Never raises on a bad table:
    everything wrong is listed in `problems` (and `valid` is False when no header is usable)."""
    last_lba = disk_size // sector_size - 1
    if last_lba < 2:
        empty = ProtectiveMbr(False, (), False, False)
        return GptTable(sector_size, disk_size, empty, None, None, (), ("too small for a GPT",))
    mbr = parse_mbr(read_at(0, 512))
    problems = []
    primary = _read_header(read_at, 1, sector_size, last_lba)
    backup_lba = last_lba
    if primary is not None and primary.valid and 0 < primary.alternate_lba <= last_lba:
        backup_lba = primary.alternate_lba  # an image written to a larger disk keeps it mid-disk
    backup = _read_header(read_at, backup_lba, sector_size, last_lba)
    if backup is None and backup_lba != last_lba:
        backup = _read_header(read_at, last_lba, sector_size, last_lba)
    if primary is None:
        problems.append("no primary GPT header (LBA 1)")
    elif not primary.valid:
        problems.extend(primary.problems)
    if backup is None:
        problems.append("no backup GPT header")
    elif not backup.valid:
        problems.extend(backup.problems)
    elif backup.my_lba != last_lba:
        problems.append(f"backup GPT header at LBA {backup.my_lba}, not at the disk end (LBA {last_lba})")
    if not mbr.protective:
        problems.append("no protective MBR")
    entries: tuple[Partition, ...] = ()
    for header in (primary, backup):
        if header is not None and header.valid:
            array = read_at(header.entries_lba * sector_size, entries_length(header))
            entries = parse_entries(array, header.entry_count, header.entry_size)
            break
    return GptTable(sector_size, disk_size, mbr, primary, backup, entries, tuple(problems))


def _read_header(read_at: ReadAt, lba: int, sector_size: int, last_lba: int) -> GptHeader | None:
    header = parse_header(read_at(lba * sector_size, sector_size), lba)
    if header is None or not header.valid:
        return header
    end = header.entries_lba * sector_size + entries_length(header)
    if header.entries_lba > last_lba or end > (last_lba + 1) * sector_size:
        problem = f"entry array of header at LBA {lba} lies past the disk end"
        return GptHeader(**{**header.__dict__, "problems": header.problems + (problem,)})
    return check_entries(header, read_at(header.entries_lba * sector_size, entries_length(header)))


def read_gpt(path: str, *, sector_size: int | None = None, require_valid: bool = True) -> GptTable:
    """Read the GPT of a block device or an image file.

    Raises DiskError when the path cannot be read, or (require_valid) when neither header is valid.
    """
    from provisioner.disk.blockdev import device_size, logical_sector_size

    try:
        size = device_size(path)
        if sector_size is None:
            sector_size = logical_sector_size(path)
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise DiskError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        def read_at(offset: int, length: int) -> bytes:
            return os.pread(fd, length, offset)

        table = parse_table(read_at, size, sector_size)
    finally:
        os.close(fd)
    if require_valid and not table.valid:
        raise DiskError(f"{path}: no valid GPT ({'; '.join(table.problems)})")
    return table
