"""The OS image's partition table, laid out from the recipe (pure): start sectors, sizes, types,
PARTUUIDs, A/B bits.

Alignment as flatcar/scripts build_library/disk_util does it (shared/reference/installer.md §2):
partitions start on 4096-sector (2 MiB) boundaries after the 34 reserved GPT sectors, and the
disk size is a multiple of 258048 sectors (the LCM of 2 MiB and the 16-head/63-sector cylinder).
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.disk.layout import (
    COREOS_LAYOUT,
    MAGIC_DISK_GUID,
    SECTOR,
    USR_A,
    BootAttributes,
    encode_boot_attributes,
)

PART_ALIGNMENT = 4096  # sectors
DISK_ALIGNMENT = 258048  # sectors
GPT_RESERVED_SECTORS = 34  # protective MBR + header + 32 sectors of entries
BACKUP_GPT_SECTORS = 33  # entries + header at the disk end
MIB_SECTORS = 1024 * 1024 // SECTOR


@dataclass(frozen=True)
class ImagePartition:
    number: int
    label: str
    type_guid: str
    start: int  # first sector
    size: int  # sectors
    partuuid: str | None
    attributes: int

    @property
    def end(self) -> int:
        """Last sector (inclusive, as sgdisk and sfdisk count)."""
        return self.start + self.size - 1

    @property
    def offset(self) -> int:
        return self.start * SECTOR

    @property
    def size_bytes(self) -> int:
        return self.size * SECTOR


@dataclass(frozen=True)
class ImagePartitionTable:
    disk_guid: str
    total_sectors: int
    partitions: tuple[ImagePartition, ...]

    @property
    def size_bytes(self) -> int:
        return self.total_sectors * SECTOR

    def by_label(self, label: str) -> ImagePartition:
        for part in self.partitions:
            if part.label == label:
                return part
        raise KeyError(label)


def _align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def boot_attributes_for(number: int) -> int:
    """Flatcar's image bits: USR-A priority 1 + successful; USR-B priority 0, tries 0 (cgpt add -S1 -P1)."""
    if number == USR_A:
        return encode_boot_attributes(BootAttributes(priority=1, tries=0, successful=True))
    return 0


def image_partition_table(partitions_mib: dict[str, int]) -> ImagePartitionTable:
    """The image's partition table for these sizes (MiB by label); raises KeyError for a missing label."""
    planned = []
    cursor = _align_up(GPT_RESERVED_SECTORS, PART_ALIGNMENT)
    for spec in COREOS_LAYOUT:
        size = partitions_mib[spec.label] * MIB_SECTORS
        planned.append(ImagePartition(
            number=spec.number, label=spec.label, type_guid=spec.type_guid, start=cursor, size=size,
            partuuid=spec.partuuid, attributes=boot_attributes_for(spec.number)))
        cursor = _align_up(cursor + size, PART_ALIGNMENT)
    last_end = planned[-1].end
    total = _align_up(last_end + 1 + BACKUP_GPT_SECTORS, DISK_ALIGNMENT)
    return ImagePartitionTable(disk_guid=MAGIC_DISK_GUID, total_sectors=total, partitions=tuple(planned))


def sgdisk_argv(table: ImagePartitionTable, image: str) -> list[str]:
    """One sgdisk call that writes the whole table onto `image` (a file or a device)."""
    argv = ["sgdisk", "--clear", f"--disk-guid={table.disk_guid}"]
    for part in table.partitions:
        n = part.number
        argv += [f"--new={n}:{part.start}:{part.end}", f"--typecode={n}:{part.type_guid}",
                 f"--change-name={n}:{part.label}"]
        if part.partuuid:
            argv.append(f"--partition-guid={n}:{part.partuuid}")
        for bit in range(64):
            if part.attributes >> bit & 1:
                argv.append(f"--attributes={n}:set:{bit}")
    argv.append(image)
    return argv
