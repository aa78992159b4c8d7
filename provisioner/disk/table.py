"""A disk's partition table as the resize planner sees it: sectors, free extents, and where the
backup GPT would sit if it were at the disk end.

Built from the one GPT reader's result (`DiskTable.from_gpt(gpt.read_gpt(...))`); the partitions
are gpt.Partition, so what the planner plans and what the reader reads compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.disk.gpt import GptTable, Partition
from provisioner.errors import DiskError

# A standard GPT keeps 128 entries of 128 bytes: 32 sectors of 512 bytes (UEFI spec §5.3.2).
_DEFAULT_ENTRY_BYTES = 128 * 128


@dataclass(frozen=True)
class DiskTable:
    sector_size: int
    total_sectors: int  # of the device (not of the image the table was made for)
    disk_guid: str
    first_usable: int
    last_usable: int  # as the primary header says (mid-disk when an image was written to a bigger disk)
    entry_sectors: int  # size of one partition entry array in sectors
    backup_at_end: bool  # the backup header is valid and sits in the device's last sector
    partitions: tuple[Partition, ...]
    problems: tuple[str, ...] = ()

    @classmethod
    def from_gpt(cls, raw: GptTable, path: str) -> DiskTable:
        """The planner's view of a table read from `path`. Raises DiskError when no header is valid."""
        header = raw.good_header
        if header is None:
            problems = "; ".join(raw.problems) or "no GPT"
            raise DiskError(f"{path}: no valid GPT partition table ({problems})")
        entry_bytes = header.entry_count * header.entry_size or _DEFAULT_ENTRY_BYTES
        total = raw.disk_size // raw.sector_size
        primary = raw.primary if raw.primary is not None and raw.primary.valid else header
        return cls(
            sector_size=raw.sector_size,
            total_sectors=total,
            disk_guid=header.disk_guid,
            first_usable=primary.first_usable_lba,
            last_usable=primary.last_usable_lba,
            entry_sectors=-(-entry_bytes // raw.sector_size),
            backup_at_end=raw.backup is not None and raw.backup.valid and raw.backup.my_lba == total - 1,
            partitions=raw.entries,
            problems=raw.problems,
        )

    def partition(self, number: int) -> Partition | None:
        for part in self.partitions:
            if part.number == number:
                return part
        return None

    @property
    def max_last_usable(self) -> int:
        """The last usable sector once the backup GPT sits at the device end (sgdisk -e)."""
        return self.total_sectors - 1 - self.entry_sectors - 1

    def next_start_after(self, sector: int) -> int | None:
        """Start of the first partition that begins after `sector`, or None."""
        starts = [p.start for p in self.partitions if p.start > sector]
        return min(starts) if starts else None

    def free_extents(self, last_usable: int | None = None) -> list[tuple[int, int]]:
        """Unallocated (first, last) sector ranges, inclusive, in disk order."""
        last_usable = self.last_usable if last_usable is None else last_usable
        extents = []
        cursor = self.first_usable
        for part in sorted(self.partitions, key=lambda p: p.start):
            if part.start > cursor:
                extents.append((cursor, part.start - 1))
            cursor = max(cursor, part.end + 1)
        if cursor <= last_usable:
            extents.append((cursor, last_usable))
        return extents
