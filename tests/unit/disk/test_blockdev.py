"""The one busy-disk policy (pure), on lsblk trees built in memory."""

from __future__ import annotations

import pytest

from provisioner.disk.blockdev import BlockNode, DiskUse, busy_reasons, node_from_json


def tree(*children: dict, name: str = "sdb") -> BlockNode:
    return node_from_json({"name": name, "type": "disk", "size": 1 << 30, "children": list(children)})


def part(name: str, *children: dict, mountpoints=()) -> dict:
    return {"name": name, "type": "part", "size": 1 << 29, "mountpoints": list(mountpoints), "children": list(children)}


def test_a_free_disk_has_no_reason():
    assert busy_reasons(tree(part("sdb1")), DiskUse()) == []


@pytest.mark.parametrize("holder_type", ["raid1", "linear", "lvm", "crypt", "mpath"])
def test_every_holder_type_built_on_the_disk_makes_it_busy(holder_type):
    disk = tree(part("sdb1", {"name": "held", "type": holder_type, "size": 1}))
    assert busy_reasons(disk, DiskUse()) == [f"/dev/held ({holder_type}) is built on /dev/sdb"]


def test_mounts_swap_and_sysfs_holders():
    disk = tree(part("sdb1", mountpoints=["[SWAP]"]), part("sdb2"), part("sdb3", mountpoints=["/srv"]))
    use = DiskUse(mounts={"/dev/sdb2": "/mnt"}, holders={"sdb2": ["dm-3"], "sdb3": ["held"]})
    assert busy_reasons(disk, use) == [
        "/dev/sdb1 is in use as swap",
        "/dev/sdb2 is mounted on /mnt",          # from /proc/self/mounts when lsblk shows no mountpoint
        "/dev/sdb3 is mounted on /srv",
        "/dev/dm-3 holds sdb2",                  # a holder lsblk's tree does not show
        "/dev/held holds sdb3",
    ]
    assert busy_reasons(tree(part("sdb1")), DiskUse(swaps=frozenset({"/dev/sdb1"}))) == ["/dev/sdb1 is in use as swap"]
