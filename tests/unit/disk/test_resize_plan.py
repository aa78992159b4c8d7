"""The pure planner: grow, shrink-root and add decisions on tables built in memory."""

from __future__ import annotations

import dataclasses

import pytest

from provisioner.core.sizes import REST, GiB, MiB
from provisioner.disk import layout
from provisioner.disk import plan as planner
from provisioner.disk.gpt import Partition
from provisioner.disk.plan import FsInfo, Plan
from provisioner.disk.table import DiskTable
from provisioner.errors import DiskError, UsageError

ROOT_START = 114688
ROOT_UUID = "02C8FF97-3DEF-4D1C-ABF5-647253063599"
NEW_UUID = "11111111-2222-4333-8444-555555555555"


def coreos_table(root_bytes: int = 2 * GiB, disk_bytes: int = 4 * GiB, backup_at_end: bool = False,
                 extra: tuple[Partition, ...] = ()) -> DiskTable:
    parts = [
        Partition(1, 4096, 20479, layout.TYPE_EFI, "A246EAD2-E636-4009-8A84-C62AA71D783D", "EFI-SYSTEM"),
        Partition(3, 24576, 57343, layout.TYPE_USR, layout.USR_A_PARTUUID, "USR-A", 1 << 56 | 1 << 48),
        Partition(4, 57344, 90111, layout.TYPE_USR, layout.USR_B_PARTUUID, "USR-B"),
        Partition(9, ROOT_START, ROOT_START + root_bytes // 512 - 1, layout.TYPE_RESIZE, ROOT_UUID, "ROOT", 1 << 60),
        *extra,
    ]
    total = disk_bytes // 512
    image_last = ROOT_START + root_bytes // 512 + 2047 + 33
    return DiskTable(
        sector_size=512, total_sectors=total, disk_guid=layout.MAGIC_DISK_GUID, first_usable=34,
        last_usable=total - 34 if backup_at_end else image_last, entry_sectors=32,
        backup_at_end=backup_at_end, partitions=tuple(parts),
    )


def ext4(size: int, used: int = 300 * MiB, mountpoint: str | None = None) -> FsInfo:
    return FsInfo("ext4", size_bytes=size, used_bytes=used, min_bytes=used + 50 * MiB, mountpoint=mountpoint)


def names(plan: Plan) -> list[str]:
    return [step.name for step in plan.steps]


# -------------------------------------------------------------------------------------- grow


def test_grow_to_disk_end_keeps_identity_and_aligns():
    table = coreos_table()
    plan = planner.plan_grow(table, ext4(2 * GiB))
    assert names(plan) == ["backup-gpt", "write-table", "reread-table", "check-fs", "grow-fs", "check-fs-after"]
    root = next(p for p in plan.expected if p.number == 9)
    old = table.partition(9)
    assert (root.start, root.partuuid, root.type_guid, root.name, root.attributes) == (
        old.start, old.partuuid, old.type_guid, old.name, old.attributes)
    assert root.end <= table.max_last_usable and (root.sectors * 512) % MiB == 0
    assert table.max_last_usable - root.end < MiB // 512
    write = plan.steps[1]
    assert write.replace and write.relocate_backup


def test_grow_online_has_no_fsck_and_records_mountpoint():
    plan = planner.plan_grow(coreos_table(), ext4(2 * GiB, mountpoint="/"))
    assert names(plan) == ["backup-gpt", "write-table", "reread-table", "grow-fs"]
    assert plan.steps[-1].mountpoint == "/"


def test_grow_stops_at_next_partition():
    data = Partition(10, ROOT_START + 3 * GiB // 512, ROOT_START + 3 * GiB // 512 + 2047, layout.TYPE_LINUX_DATA,
                     NEW_UUID, "DATA")
    table = coreos_table(extra=(data,))
    plan = planner.plan_grow(table, ext4(2 * GiB))
    root = next(p for p in plan.expected if p.number == 9)
    assert root.end == data.start - 1


def test_grow_nothing_to_do_when_full():
    table = coreos_table(root_bytes=4 * GiB - ROOT_START * 512 - MiB, backup_at_end=True)
    root_bytes = table.partition(9).sectors * 512
    plan = planner.plan_grow(table, ext4(root_bytes))
    assert plan.nothing_to_do and not plan.steps


def test_grow_only_fs_when_partition_already_grown():
    table = coreos_table(root_bytes=4 * GiB - ROOT_START * 512 - MiB, backup_at_end=True)
    plan = planner.plan_grow(table, ext4(2 * GiB))
    assert names(plan) == ["backup-gpt", "check-fs", "grow-fs", "check-fs-after"]


def test_grow_relocates_backup_only_when_root_cannot_grow():
    data = Partition(10, coreos_table().partition(9).end + 1, 6_000_000, layout.TYPE_LINUX_DATA, NEW_UUID, "DATA")
    table = coreos_table(extra=(data,))
    plan = planner.plan_grow(table, ext4(2 * GiB))
    assert names(plan) == ["backup-gpt", "relocate-backup"]


def test_grow_offline_xfs_refused():
    with pytest.raises(DiskError, match="mount it"):
        planner.plan_grow(coreos_table(), FsInfo("xfs", size_bytes=GiB))


# ------------------------------------------------------------------------------- shrink-root


def test_shrink_plan_order_and_sizes():
    table = coreos_table()
    plan = planner.plan_shrink_root(table, ext4(2 * GiB), 1 * GiB)
    assert names(plan) == ["backup-gpt", "check-fs", "shrink-fs", "write-table", "reread-table", "check-fs-after"]
    assert plan.steps[2].size_bytes == GiB
    root = plan.steps[3].partition
    assert root.start == ROOT_START and root.sectors == GiB // 512 and root.attributes == 1 << 60
    assert plan.key == "shrink-root --size 1073741824"
    assert any("first-boot growth" in note for note in plan.notes)


def test_shrink_reserves_room_for_the_undo_file():
    # The used space (all of it may move, being at most what lies past the new end) plus
    # 1/512 of the filesystem and 16 MiB for the metadata resize2fs rewrites.
    plan = planner.plan_shrink_root(coreos_table(), ext4(2 * GiB, used=300 * MiB), GiB)
    assert plan.undo_bytes == 300 * MiB + 4 * MiB + 16 * MiB
    assert "resize2fs -z, its undo file in the journal (up to 320 MiB)" in plan.steps[2].describe()
    # A shrink cannot move more than what lies past the new end.
    assert planner.shrink_undo_bytes(ext4(2 * GiB, used=1800 * MiB), 1900 * MiB) == 148 * MiB + 4 * MiB + 16 * MiB
    grow = planner.plan_grow(coreos_table(), ext4(2 * GiB))
    assert grow.undo_bytes == 0 and "resize2fs -z, its undo file in the journal," in grow.steps[-2].describe()


def test_shrink_size_rounded_up_to_mib():
    plan = planner.plan_shrink_root(coreos_table(), ext4(2 * GiB), GiB - 4096)
    assert plan.steps[2].size_bytes == GiB
    assert plan.key == planner.shrink_key(GiB)


@pytest.mark.parametrize("fs, size, error, text", [
    (ext4(2 * GiB, used=900 * MiB), GiB, DiskError, "safety margin"),
    (ext4(2 * GiB, mountpoint="/"), GiB, DiskError, "mounted on /"),
    (FsInfo("xfs", size_bytes=2 * GiB), GiB, DiskError, "cannot shrink"),
    (FsInfo(None), GiB, DiskError, "no filesystem"),
    (ext4(2 * GiB), 3 * GiB, UsageError, "not smaller"),
    (ext4(2 * GiB), 0, UsageError, "needs a size"),
])
def test_shrink_refusals(fs, size, error, text):
    with pytest.raises(error, match=text):
        planner.plan_shrink_root(coreos_table(), fs, size)


def test_shrink_respects_resize2fs_minimum():
    fs = dataclasses.replace(ext4(2 * GiB, used=100 * MiB), min_bytes=1200 * MiB)
    with pytest.raises(DiskError, match="resize2fs's minimum"):
        planner.plan_shrink_root(coreos_table(), fs, GiB)


def test_margin():
    assert planner.shrink_margin(0) == 128 * MiB
    assert planner.shrink_margin(10 * GiB) == GiB


# --------------------------------------------------------------------------------------- add


def shrunk() -> DiskTable:
    return coreos_table(root_bytes=GiB)


def test_add_right_after_root():
    table = shrunk()
    plan = planner.plan_add(table, label="DATA", size=500 * MiB, fstype="btrfs", new_partuuid=NEW_UUID)
    new = plan.expected[-1]
    assert (new.number, new.name, new.start) == (10, "DATA", table.partition(9).end + 1)
    assert new.sectors == 500 * MiB // 512 and new.type_guid == layout.TYPE_LINUX_DATA
    assert names(plan) == ["backup-gpt", "write-table", "reread-table", "mkfs"]
    assert not plan.notes


def test_add_rest_fills_to_aligned_end():
    table = shrunk()
    plan = planner.plan_add(table, label="STORE", size=REST, fstype="none", new_partuuid=NEW_UUID)
    new = plan.expected[-1]
    assert new.end <= table.max_last_usable and (new.end + 1) % (MiB // 512) == 0
    assert names(plan)[-1] == "wipe"


def test_add_types_and_numbers():
    table = shrunk()
    swap = planner.plan_add(table, label="SWAP", size=GiB, fstype="swap", new_partuuid=NEW_UUID, number=5)
    new = {p.number: p for p in swap.expected}[5]
    assert new.type_guid == layout.TYPE_LINUX_SWAP and [p.number for p in swap.expected] == [1, 3, 4, 5, 9]
    raid = planner.plan_add(table, label="R", size=GiB, fstype="none", new_partuuid=NEW_UUID, type_name="raid")
    assert raid.expected[-1].type_guid == layout.TYPE_LINUX_RAID
    guid = planner.plan_add(table, label="G", size=GiB, fstype="none", new_partuuid=NEW_UUID,
                            type_name="e6d6d379-f507-44c2-a23c-238f2a3df928")
    assert guid.expected[-1].type_guid == layout.TYPE_LINUX_LVM


@pytest.mark.parametrize("kwargs, error, text", [
    (dict(fstype="ntfs"), UsageError, "unknown filesystem"),
    (dict(type_name="nope"), UsageError, "unknown partition type"),
    (dict(label="ROOT"), UsageError, "already has that name"),
    (dict(number=9), UsageError, "already exists"),
    (dict(number=200), UsageError, "1 to 128"),
    (dict(size=10 * GiB), DiskError, "not enough free space"),
])
def test_add_refusals(kwargs, error, text):
    args = dict(label="DATA", size=GiB, fstype="ext4", new_partuuid=NEW_UUID)
    args.update(kwargs)
    with pytest.raises(error, match=text):
        planner.plan_add(shrunk(), **args)


def test_add_warns_about_gap_after_root():
    # A 16 MiB hole right after ROOT that a 64 MiB partition cannot use.
    table = shrunk()
    end9 = table.partition(9).end
    blocker = Partition(12, end9 + 1 + 16 * MiB // 512, end9 + 16 * MiB // 512 + 2048, layout.TYPE_LINUX_DATA,
                        "22222222-2222-4333-8444-555555555555", "X")
    table = dataclasses.replace(table, partitions=table.partitions + (blocker,))
    plan = planner.plan_add(table, label="DATA", size=64 * MiB, fstype="ext4", new_partuuid=NEW_UUID)
    new = {p.number: p for p in plan.expected}[10]
    assert new.start > blocker.end
    assert any("swallow" in note for note in plan.notes)


def test_add_without_root_refused():
    table = dataclasses.replace(shrunk(), partitions=shrunk().partitions[:-1])
    with pytest.raises(DiskError, match="no partition 9"):
        planner.plan_add(table, label="DATA", size=GiB, fstype="ext4", new_partuuid=NEW_UUID)


# ------------------------------------------------------------------------------ serialisation


def test_plan_round_trips_through_journal_form():
    for plan in (
        planner.plan_grow(coreos_table(), ext4(2 * GiB, mountpoint="/")),
        planner.plan_shrink_root(coreos_table(), ext4(2 * GiB), GiB),
        planner.plan_add(shrunk(), label="DATA", size=REST, fstype="xfs", new_partuuid=NEW_UUID),
    ):
        assert Plan.from_dict(plan.to_dict()) == plan
        assert all(step.describe() for step in plan.steps)
        assert plan.render().splitlines()[0] == f"plan: {plan.key}"


def test_add_key_ignores_derived_number():
    assert planner.add_key(label="D", size=REST, fstype="none", type_name=None, number=None) == \
        "add --label D --size rest --fs none --type default --number auto"


def test_free_extents():
    table = shrunk()
    extents = table.free_extents(table.max_last_usable)
    assert extents[0] == (34, 4095)
    assert extents[-1] == (table.partition(9).end + 1, table.max_last_usable)
    assert (20480, 24575) in extents
