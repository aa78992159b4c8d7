"""Pure planning for `provisioner disk grow|shrink-root|add`: table + filesystem facts -> steps.

Nothing here touches a disk. The I/O shell (provisioner.disk.resize) reads the table and probes
the filesystem, asks for a plan, prints it (`--dry-run`, `disk plan`) or applies it step by step
under a journal (provisioner.disk.journal). Each step has a unique name: the journal records
finished steps by name, and the test hook PROVISIONER_FAULT=after:<name> kills the process there.

Facts encoded here (shared/reference/installer.md §3, §6):
- ROOT is partition 9. Its type GUID (coreos-resize) makes first boot's `cgpt resize` grow it up to
  the next partition or the end of the disk, whenever the gain is at least 2 MiB.
- ext4 cannot shrink online; xfs cannot shrink at all. Shrinking is e2fsck -f, resize2fs to the
  size, then rewriting p9 with the same start, type, PARTUUID, name and attribute bits.
- Starts and sizes are kept on 1 MiB boundaries (growpart rounds to whole MiB since cloud-utils #68).
- Growth (ours and cgpt's) only ever moves a partition's end; the start never moves.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from provisioner.core.sizes import REST, MiB, align_down, align_up, format_size
from provisioner.disk import layout
from provisioner.disk.gpt import Partition
from provisioner.disk.table import DiskTable
from provisioner.errors import DiskError, UsageError

ROOT = layout.ROOT
FILESYSTEMS = ("ext4", "xfs", "btrfs", "swap", "none")
GROWABLE = ("ext4", "xfs", "btrfs")
# e2fsck and resize2fs serve ext2/ext3 exactly as ext4: plan them as one family.
EXT_FAMILY = ("ext2", "ext3", "ext4")
# cgpt resize (seismograph cgpt_resize.c) skips gains below 2 MiB: smaller gaps after ROOT survive.
CGPT_MIN_RESIZE = 2 * MiB
MIN_GAIN = MiB  # below this, grow says "nothing to do" (growpart's default fudge is 1 MiB too)


def shrink_undo_bytes(fs: FsInfo, target: int) -> int:
    """Room resize2fs's undo file may need for a shrink to `target` bytes.

    The file keeps the old contents of every block resize2fs writes (e2fsprogs undo_io.c): the
    blocks it moves data into (at most the used space, at most what lies past the new end) plus the
    metadata it rewrites (group descriptors, bitmaps, moved inodes and extent blocks), bounded here
    by 1/512 of the filesystem and 16 MiB."""
    return min(fs.used_bytes, max(fs.size_bytes - target, 0)) + fs.size_bytes // 512 + 16 * MiB


def shrink_margin(used: int) -> int:
    """Free space kept above what ROOT uses when shrinking: 10% of the used space, at least 128 MiB."""
    return max(128 * MiB, align_up(used // 10, MiB))


@dataclass(frozen=True)
class FsInfo:
    """What the I/O shell learned about a partition's filesystem."""

    fstype: str | None  # 'ext4', 'xfs', 'btrfs', 'swap', ... or None when blkid finds nothing
    size_bytes: int = 0  # the filesystem's own size (ext4: block count * block size)
    block_size: int = 4096
    used_bytes: int = 0
    min_bytes: int = 0  # resize2fs -P estimate, in bytes (0 when unknown)
    mountpoint: str | None = None
    label: str | None = None


# --------------------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Step:
    name: str

    def describe(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": type(self).__name__}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            data[item.name] = value.to_dict() if isinstance(value, Partition) else value
        return data


@dataclass(frozen=True)
class BackupTable(Step):
    def describe(self) -> str:
        return "save the partition table (sgdisk --backup) into the journal directory"


@dataclass(frozen=True)
class CheckFilesystem(Step):
    number: int = ROOT
    fstype: str = "ext4"

    def describe(self) -> str:
        return f"check the {self.fstype} filesystem on partition {self.number} (e2fsck -f -p)"


@dataclass(frozen=True)
class ResizeFilesystem(Step):
    number: int = ROOT
    fstype: str = "ext4"
    size_bytes: int | None = None  # None: fill the partition
    mountpoint: str | None = None  # set for an online grow
    undo_bytes: int = 0  # room resize2fs's undo file may need in the state dir (checked before a shrink)

    def describe(self) -> str:
        target = "to fill the partition" if self.size_bytes is None else f"to {format_size(self.size_bytes)}"
        where = f"online, mounted on {self.mountpoint}" if self.mountpoint else "offline"
        tool = {"ext4": "resize2fs", "xfs": "xfs_growfs", "btrfs": "btrfs filesystem resize"}.get(self.fstype, "?")
        if self.fstype == "ext4" and not self.mountpoint:
            tool += " -z, its undo file in the journal"
            if self.undo_bytes:
                tool += f" (up to {format_size(self.undo_bytes)})"
        return f"resize the {self.fstype} filesystem on partition {self.number} {target} ({tool}, {where})"


@dataclass(frozen=True)
class WritePartition(Step):
    partition: Partition = None  # type: ignore[assignment]
    replace: bool = False  # rewrite an existing entry (same start) rather than create one
    relocate_backup: bool = True  # sgdisk -e: backup GPT to the disk end

    def describe(self) -> str:
        p = self.partition
        verb = "rewrite" if self.replace else "create"
        keep = ", same start, type, PARTUUID, name and attributes" if self.replace else ""
        tail = "; move the backup GPT to the disk end" if self.relocate_backup else ""
        return (
            f"{verb} partition {p.number} '{p.name}': sectors {p.start}-{p.end} "
            f"({format_size(p.sectors * 512)}){keep}{tail} (sgdisk)"
        )


@dataclass(frozen=True)
class RelocateBackup(Step):
    def describe(self) -> str:
        return "move the backup GPT to the disk end (sgdisk -e)"


@dataclass(frozen=True)
class RereadTable(Step):
    layout: tuple = ()  # ((number, start, sectors), ...)

    def describe(self) -> str:
        return "tell the kernel about the new table (BLKRRPART, partx fallback)"

    def expected(self) -> dict[int, tuple[int, int]]:
        return {int(n): (int(s), int(c)) for n, s, c in self.layout}


@dataclass(frozen=True)
class MakeFilesystem(Step):
    number: int = 0
    fstype: str = "ext4"
    label: str = ""

    def describe(self) -> str:
        if self.fstype == "none":
            return f"erase stale filesystem signatures on the new partition {self.number} (wipefs -a)"
        return f"make a {self.fstype} filesystem labelled '{self.label}' on partition {self.number}"


STEP_KINDS = {cls.__name__: cls for cls in (
    BackupTable, CheckFilesystem, ResizeFilesystem, WritePartition, RelocateBackup, RereadTable, MakeFilesystem,
)}


def step_from_dict(data: dict) -> Step:
    """Rebuild a step saved in a journal. Raises ValueError on an unknown kind."""
    data = dict(data)
    kind = STEP_KINDS.get(data.pop("kind", None))
    if kind is None:
        raise ValueError(f"unknown step kind in journal: {data!r}")
    if "partition" in data and isinstance(data["partition"], dict):
        data["partition"] = Partition.from_dict(data["partition"])
    if "layout" in data:
        data["layout"] = tuple(tuple(row) for row in data["layout"])
    return kind(**data)


@dataclass(frozen=True)
class Plan:
    command: str  # 'grow', 'shrink-root', 'add'
    key: str  # the command and its arguments, e.g. 'shrink-root --size 1073741824'
    steps: tuple[Step, ...]
    expected: tuple[Partition, ...]  # the table once the plan is applied
    notes: tuple[str, ...] = field(default=())  # warnings and explanations for the operator
    nothing_to_do: str = ""  # set (with no steps) when the disk already is as asked

    @property
    def undo_bytes(self) -> int:
        """Room the plan's resize2fs undo files may need in the state dir."""
        return sum(step.undo_bytes for step in self.steps if isinstance(step, ResizeFilesystem))

    def render(self) -> str:
        lines = [f"plan: {self.key}"]
        if self.nothing_to_do:
            lines.append(f"nothing to do: {self.nothing_to_do}")
        for index, step in enumerate(self.steps, 1):
            lines.append(f"  {index}. {step.name}: {step.describe()}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "command": self.command,
            "key": self.key,
            "steps": [s.to_dict() for s in self.steps],
            "expected": [p.to_dict() for p in self.expected],
            "notes": list(self.notes),
            "nothing_to_do": self.nothing_to_do,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls(
            command=data["command"],
            key=data["key"],
            steps=tuple(step_from_dict(s) for s in data["steps"]),
            expected=tuple(Partition.from_dict(p) for p in data["expected"]),
            notes=tuple(data.get("notes", ())),
            nothing_to_do=data.get("nothing_to_do", ""),
        )


# -------------------------------------------------------------------------------- command keys
# A journal is resumed only by the same command: the key is made from the operator's arguments
# (not from the plan, which depends on how far an interrupted run got).


def grow_key() -> str:
    return "grow"


def shrink_key(size: int) -> str:
    return f"shrink-root --size {align_up(size, MiB) if size > 0 else size}"


def add_key(*, label: str, size: int, fstype: str, type_name: str | None, number: int | None) -> str:
    size_text = "rest" if size == REST else str(align_up(size, MiB))
    return (
        f"add --label {label} --size {size_text} --fs {fstype} --type {type_name or 'default'} "
        f"--number {number or 'auto'}"
    )


# ------------------------------------------------------------------------------------- helpers


def _root(table: DiskTable) -> Partition:
    root = table.partition(ROOT)
    if root is None:
        raise DiskError(f"no partition {ROOT} (ROOT) in the table: not a CoreOS-layout disk")
    return root


def _replace(parts: tuple[Partition, ...], new: Partition) -> tuple[Partition, ...]:
    others = [p for p in parts if p.number != new.number]
    return tuple(sorted(others + [new], key=lambda p: p.number))


def _reread(name: str, parts: tuple[Partition, ...]) -> RereadTable:
    return RereadTable(name, tuple((p.number, p.start, p.sectors) for p in parts))


def _mib_sectors(table: DiskTable) -> int:
    return MiB // table.sector_size


# ---------------------------------------------------------------------------------------- grow


def plan_grow(table: DiskTable, fs: FsInfo) -> Plan:
    """Grow ROOT (partition 9) up to the next partition or the disk end, then its filesystem.

    Only grows. Raises DiskError when there is no ROOT or its filesystem cannot be grown as it is
    (xfs/btrfs must be mounted: their tools grow mounted filesystems only).
    """
    root = _root(table)
    ss = table.sector_size
    key = grow_key()
    if fs.fstype in EXT_FAMILY:
        fs = dataclasses.replace(fs, fstype="ext4")
    next_start = table.next_start_after(root.start)
    limit = next_start - 1 if next_start is not None else table.max_last_usable
    # Keep the size a whole number of MiB, so a following partition would start aligned.
    sectors = align_down((limit - root.start + 1) * ss, MiB) // ss
    new_end = max(root.end, root.start + sectors - 1)
    grow_partition = (new_end - root.end) * ss >= MIN_GAIN
    if not grow_partition:
        new_end = root.end
    new_root = dataclasses.replace(root, end=new_end)
    part_bytes = new_root.sectors * ss
    grow_fs = fs.fstype in GROWABLE and part_bytes - fs.size_bytes >= MIN_GAIN
    relocate = not table.backup_at_end
    notes = []
    if fs.fstype not in GROWABLE:
        notes.append(f"ROOT holds {fs.fstype or 'no filesystem'}: only the partition is grown")
    if grow_fs and fs.fstype in ("xfs", "btrfs") and not fs.mountpoint:
        raise DiskError(f"ROOT holds {fs.fstype}, which grows only while mounted: mount it and run grow again")
    if not (grow_partition or grow_fs or relocate):
        why = f"ROOT already ends at sector {root.end}"
        why += f" (next partition starts at {next_start})" if next_start is not None else " (the end of the disk)"
        if fs.fstype in GROWABLE:
            why += " and its filesystem fills it"
        return Plan("grow", key, (), table.partitions, tuple(notes), nothing_to_do=why)

    steps: list[Step] = [BackupTable("backup-gpt")]
    expected = _replace(table.partitions, new_root)
    if grow_partition:
        steps.append(WritePartition("write-table", new_root, replace=True, relocate_backup=True))
        steps.append(_reread("reread-table", expected))
    elif relocate:
        steps.append(RelocateBackup("relocate-backup"))
    if grow_fs:
        offline_ext4 = fs.fstype == "ext4" and not fs.mountpoint
        if offline_ext4:
            # resize2fs insists on a fresh e2fsck -f before an offline resize (resize/main.c).
            steps.append(CheckFilesystem("check-fs", ROOT, "ext4"))
        steps.append(ResizeFilesystem("grow-fs", ROOT, fs.fstype or "", None, fs.mountpoint))
        if offline_ext4:
            steps.append(CheckFilesystem("check-fs-after", ROOT, "ext4"))
    if next_start is not None and grow_partition:
        notes.append(f"ROOT grows up to the next partition (sector {next_start})")
    return Plan("grow", key, tuple(steps), expected, tuple(notes))


# --------------------------------------------------------------------------------- shrink-root


def plan_shrink_root(table: DiskTable, fs: FsInfo, size: int) -> Plan:
    """Shrink ROOT's ext4 filesystem and partition 9 to `size` bytes (rounded up to 1 MiB).

    Raises DiskError when ROOT is mounted, is not ext4, or `size` is below the used space plus
    the safety margin; UsageError when `size` is not smaller than ROOT is now.
    """
    root = _root(table)
    ss = table.sector_size
    if size == REST or size <= 0:
        raise UsageError("shrink-root --size needs a size such as 100G")
    target = align_up(size, MiB)
    key = shrink_key(size)
    if fs.mountpoint:
        raise DiskError(
            f"ROOT is mounted on {fs.mountpoint}: ext4 cannot shrink online; "
            "unmount it (boot a rescue system for the live root) and run shrink-root again"
        )
    if fs.fstype not in EXT_FAMILY:
        reason = {
            None: "ROOT has no filesystem that blkid recognises",
            "xfs": "ROOT holds xfs, which cannot shrink",
        }.get(fs.fstype, f"ROOT holds {fs.fstype}; shrink-root handles ext4 only")
        raise DiskError(reason)
    current = root.sectors * ss
    if target >= current:
        raise UsageError(
            f"--size {format_size(target)} is not smaller than ROOT ({format_size(current)}); use 'disk grow' to grow"
        )
    used = fs.used_bytes
    margin = shrink_margin(used)
    # resize2fs -P is resize2fs's own floor (it refuses anything smaller); our margin is on top of
    # the used space, so the filesystem is not left full after the shrink.
    smallest = align_up(max(used + margin, fs.min_bytes), MiB)
    if target < smallest:
        floor = f", resize2fs's minimum {format_size(fs.min_bytes)}" if fs.min_bytes > used + margin else ""
        raise DiskError(
            f"--size {format_size(target)} is below what ROOT needs: {format_size(used)} used "
            f"plus a {format_size(margin)} safety margin{floor}; the smallest allowed is {format_size(smallest)}"
        )
    new_root = dataclasses.replace(root, end=root.start + target // ss - 1)
    expected = _replace(table.partitions, new_root)
    steps = (
        BackupTable("backup-gpt"),
        CheckFilesystem("check-fs", ROOT, "ext4"),
        ResizeFilesystem("shrink-fs", ROOT, "ext4", target, None, shrink_undo_bytes(fs, target)),
        WritePartition("write-table", new_root, replace=True, relocate_backup=True),
        _reread("reread-table", expected),
        CheckFilesystem("check-fs-after", ROOT, "ext4"),
    )
    notes = []
    if root.type_guid.upper() == layout.TYPE_RESIZE:
        notes.append(
            "ROOT keeps its coreos-resize type, so first-boot growth (extend-filesystems) will grow it "
            "back up to the next partition: add partitions right after ROOT with 'disk add', or mask "
            "extend-filesystems.service"
        )
    return Plan("shrink-root", key, steps, expected, tuple(notes))


# ----------------------------------------------------------------------------------------- add


_GUID_RE = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")


def resolve_type(name: str | None, fstype: str) -> str:
    """`linux-data`, `linux-swap`, `raid`, `lvm`, ... or a GUID -> type GUID. Raises UsageError."""
    if name is None:
        return layout.TYPE_LINUX_SWAP if fstype == "swap" else layout.TYPE_LINUX_DATA
    if _GUID_RE.match(name):
        return name.upper()
    guid = layout.TYPE_BY_NAME.get(name.lower())
    if guid is None:
        raise UsageError(f"--type {name!r}: unknown partition type (use {', '.join(layout.TYPE_BY_NAME)} or a GUID)")
    return guid


def check_filesystem_name(fstype: str) -> str:
    if fstype not in FILESYSTEMS:
        raise UsageError(f"--fs {fstype!r}: unknown filesystem (choose one of {', '.join(FILESYSTEMS)})")
    return fstype


def plan_add(
    table: DiskTable,
    *,
    label: str,
    size: int,
    fstype: str,
    new_partuuid: str,
    type_name: str | None = None,
    number: int | None = None,
) -> Plan:
    """Add one partition in the free space after ROOT, as close to ROOT as it fits.

    `size` in bytes (rounded up to 1 MiB) or sizes.REST. Raises UsageError for a bad label, type,
    filesystem or number, DiskError when the space after ROOT is too small.
    """
    check_filesystem_name(fstype)
    type_guid = resolve_type(type_name, fstype)
    if not label or len(label) > 36:
        raise UsageError(f"--label {label!r}: a GPT partition name has 1 to 36 characters")
    for part in table.partitions:
        if part.name == label:
            raise UsageError(f"--label {label}: partition {part.number} already has that name")
    requested_number = number
    if number is None:
        used = {p.number for p in table.partitions}
        number = next(n for n in range(10, 129) if n not in used)
    elif not 1 <= number <= 128:
        raise UsageError(f"--number {number}: GPT partition numbers run from 1 to 128")
    elif table.partition(number) is not None:
        raise UsageError(f"--number {number}: partition {number} already exists")
    root = _root(table)
    ss = table.sector_size
    mib = _mib_sectors(table)
    want = None if size == REST else align_up(size, MiB) // ss
    key = add_key(label=label, size=size, fstype=fstype, type_name=type_name, number=requested_number)
    largest = 0
    chosen = None
    for first, last in table.free_extents(table.max_last_usable):
        if last < root.end:
            continue
        start = align_up(first, mib)
        room = align_down(last + 1, mib) - start  # whole MiB that fit
        largest = max(largest, room)
        if want is None and room >= mib:
            chosen = (start, start + room - 1)
            break
        if want is not None and room >= want:
            chosen = (start, start + want - 1)
            break
    if chosen is None:
        asked = "any space" if want is None else format_size(want * ss)
        raise DiskError(
            f"not enough free space after ROOT for {asked} (largest free extent: {format_size(largest * ss)}); "
            "shrink ROOT first with 'disk shrink-root'"
        )
    new = Partition(number, chosen[0], chosen[1], type_guid, new_partuuid.upper(), label, 0)
    expected = _replace(table.partitions, new)
    steps: list[Step] = [
        BackupTable("backup-gpt"),
        WritePartition("write-table", new, replace=False, relocate_backup=True),
        _reread("reread-table", expected),
    ]
    # A new partition may cover an old filesystem's superblock (space freed by shrink-root):
    # with --fs none we still erase such signatures, so nothing mounts a ghost.
    steps.append(MakeFilesystem("mkfs" if fstype != "none" else "wipe", number, fstype, label))
    notes = [_gap_note(root, expected, ss)]
    return Plan("add", key, tuple(steps), expected, tuple(n for n in notes if n))


def _gap_note(root: Partition, parts: tuple[Partition, ...], sector_size: int) -> str:
    """First boot's cgpt resize grows ROOT into any gap of 2 MiB or more right after it."""
    if root.type_guid.upper() != layout.TYPE_RESIZE:
        return ""
    following = [p.start for p in parts if p.start > root.start]
    if not following:
        return ""
    gap = (min(following) - root.end - 1) * sector_size
    if gap >= CGPT_MIN_RESIZE:
        return (
            f"warning: {format_size(gap)} stays free right after ROOT; first-boot growth (cgpt resize) "
            "will swallow it: fill it first, or mask extend-filesystems.service"
        )
    return ""
