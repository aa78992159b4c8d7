"""The CoreOS/Flatcar disk layout: partition numbers, labels, type GUIDs, fixed PARTUUIDs.

Source: flatcar/scripts build_library/disk_layout.json and disk_util (see
shared/reference/installer.md §2). Numbering is sparse on purpose: 1, 2, 3, 4, 6, 7, 9.
Start sectors are NOT fixed across releases: always read them from the image's GPT.
"""

from __future__ import annotations

from dataclasses import dataclass

SECTOR = 512

# Partition type GUIDs (cgpt type names in parentheses).
TYPE_EFI = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"  # efi
TYPE_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"  # bios
TYPE_USR = "5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6"  # coreos-usr / flatcar-rootfs
TYPE_LINUX_DATA = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"  # data
TYPE_RESERVED = "C95DC21A-DF0E-4340-8D7B-26CBFA9A03E0"  # coreos-reserved
TYPE_RESIZE = "3884DD41-8582-4404-B9A8-E9B84F2DF50E"  # coreos-resize: grown on first boot
TYPE_ROOT_RAID = "BE9067B9-EA49-4F15-B4F6-F36F8C9E1818"  # flatcar-root-raid
TYPE_LINUX_SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
TYPE_LINUX_RAID = "A19D880F-05FC-4D3B-A006-743F0F84911E"
TYPE_LINUX_LVM = "E6D6D379-F507-44C2-A23C-238F2A3DF928"

# Fixed partition GUIDs: GRUB maps USR-A's PARTUUID to vmlinuz-a, anything else to vmlinuz-b.
USR_A_PARTUUID = "7130C94A-213A-4E5A-8E26-6CCE9662F132"
USR_B_PARTUUID = "E03DD35C-7C2D-4A47-B3FE-27F15780A57C"
# The image's disk GUID; disk-uuid.service randomises it on first boot.
MAGIC_DISK_GUID = "00000000-0000-0000-0000-000000000001"

EFI_SYSTEM, BIOS_BOOT, USR_A, USR_B, OEM, OEM_CONFIG, ROOT = 1, 2, 3, 4, 6, 7, 9


@dataclass(frozen=True)
class PartitionSpec:
    number: int
    label: str
    type_guid: str
    filesystem: str | None  # what the image puts there ('' = none)
    partuuid: str | None = None  # fixed PARTUUID, when the layout fixes one


COREOS_LAYOUT: tuple[PartitionSpec, ...] = (
    PartitionSpec(EFI_SYSTEM, "EFI-SYSTEM", TYPE_EFI, "vfat"),
    PartitionSpec(BIOS_BOOT, "BIOS-BOOT", TYPE_BIOS_BOOT, None),
    PartitionSpec(USR_A, "USR-A", TYPE_USR, None, USR_A_PARTUUID),
    PartitionSpec(USR_B, "USR-B", TYPE_USR, None, USR_B_PARTUUID),
    PartitionSpec(OEM, "OEM", TYPE_LINUX_DATA, None),
    PartitionSpec(OEM_CONFIG, "OEM-CONFIG", TYPE_RESERVED, None),
    PartitionSpec(ROOT, "ROOT", TYPE_RESIZE, "ext4"),
)

# Partition types an operator can name (`provisioner disk add --type ...`).
TYPE_BY_NAME = {
    "linux-data": TYPE_LINUX_DATA,
    "linux-swap": TYPE_LINUX_SWAP,
    "raid": TYPE_LINUX_RAID,
    "lvm": TYPE_LINUX_LVM,
    "coreos-resize": TYPE_RESIZE,
    "coreos-usr": TYPE_USR,
    "coreos-reserved": TYPE_RESERVED,
    "efi": TYPE_EFI,
    "bios": TYPE_BIOS_BOOT,
}

# GPT attribute bits used for A/B USR selection (coreos/grub gpt_partition.h, cgptlib):
# bits 48-51 priority, 52-55 tries left, 56 successful.
_PRIORITY_SHIFT, _TRIES_SHIFT, _SUCCESSFUL_BIT = 48, 52, 56


@dataclass(frozen=True)
class BootAttributes:
    priority: int = 0
    tries: int = 0
    successful: bool = False


def decode_boot_attributes(attributes: int) -> BootAttributes:
    return BootAttributes(
        priority=(attributes >> _PRIORITY_SHIFT) & 0xF,
        tries=(attributes >> _TRIES_SHIFT) & 0xF,
        successful=bool((attributes >> _SUCCESSFUL_BIT) & 1),
    )


def encode_boot_attributes(boot: BootAttributes, base: int = 0) -> int:
    """Return `base` with the priority/tries/successful fields replaced."""
    if not (0 <= boot.priority <= 15 and 0 <= boot.tries <= 15):
        raise ValueError("priority and tries must be 0..15")
    mask = (0xF << _PRIORITY_SHIFT) | (0xF << _TRIES_SHIFT) | (1 << _SUCCESSFUL_BIT)
    value = base & ~mask
    value |= boot.priority << _PRIORITY_SHIFT
    value |= boot.tries << _TRIES_SHIFT
    value |= int(boot.successful) << _SUCCESSFUL_BIT
    return value
