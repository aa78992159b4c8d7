"""Busy disks, the disk choice of --disk auto, RAID stop plans, the --inspect report."""

from __future__ import annotations

import pytest

from provisioner.disk.blockdev import busy_reasons
from provisioner.errors import DiskError
from provisioner.remote import inspect
from tests.unit.remote.rescue_facts import GB, RAID_ROWS, disk_row, host_facts


def test_choose_disk_smallest_unused_over_10gb():
    choice = inspect.choose_disk(host_facts(RAID_ROWS))
    assert choice.disk.path == "/dev/nvme0n1"
    assert choice.rejected == (
        "/dev/sda: busy (/dev/md0 (raid1) is built on /dev/sda)",
        "/dev/sdb: busy (/dev/md0 (raid1) is built on /dev/sdb)",
        "/dev/sdc: 7.5 GiB is not larger than 9.3 GiB",   # flatcar-install -s: more than 10,000,000,000 bytes
    )   # loop0 and sr0 are not of type disk: passed over without a word


def test_choose_disk_ties_go_to_the_first_name_and_types_filter():
    rows = [disk_row("sdb", 20 * GB), disk_row("sda", 20 * GB), disk_row("loop3", 12 * GB, type_="loop")]
    assert inspect.choose_disk(host_facts(rows)).disk.path == "/dev/sda"
    assert inspect.choose_disk(host_facts(rows), types=("disk", "loop")).disk.path == "/dev/loop3"
    assert inspect.choose_disk(host_facts(rows), min_size=1, types=("loop",)).disk.path == "/dev/loop3"


def test_choose_disk_none_left_names_each_reason():
    rows = [disk_row("vda", 50 * GB, [disk_row("vda1", 50 * GB, type_="part")])]
    with pytest.raises(DiskError, match=r"/dev/vda: busy \(/dev/vda1 is mounted on /\)"):
        inspect.choose_disk(host_facts(rows, mounts=[("/dev/vda1", "/")]))


def test_busy_reasons_mounts_swap_holders():
    rows = [disk_row("sda", 100 * GB, [disk_row("sda1", 1 * GB, type_="part"), disk_row("sda2", 99 * GB, type_="part")])]
    facts = host_facts(rows, mounts=[("/dev/sda2", "/mnt")], swaps=["/dev/sda1"], holders={"sda2": ["dm-3"]})
    assert busy_reasons(facts.disk("/dev/sda"), facts.disk_use) == [
        "/dev/sda1 is in use as swap", "/dev/sda2 is mounted on /mnt", "/dev/dm-3 holds sda2"]


def test_stop_plan_topmost_first_then_zero_superblocks():
    facts = host_facts(RAID_ROWS)
    assert inspect.stop_plan(facts, facts.disk("/dev/sda")) == [
        ["dmsetup", "remove", "vg0-root"],
        ["mdadm", "--stop", "/dev/md0"],
        ["mdadm", "--zero-superblock", "/dev/sda1"],
    ]


def test_stop_plan_refuses_mounted():
    rows = [disk_row("sda", 100 * GB, [disk_row("sda1", 100 * GB, [disk_row("md0", 100 * GB, type_="raid1")], "part")])]
    facts = host_facts(rows, mounts=[("/dev/md0", "/srv")])
    with pytest.raises(DiskError, match="/dev/md0 is mounted on /srv; unmount it first"):
        inspect.stop_plan(facts, facts.disk("/dev/sda"))


def test_report_names_choice_and_python():
    text = inspect.format_report(host_facts(RAID_ROWS))
    assert "python3: 3.9.2" in text and "--disk auto would choose /dev/nvme0n1" in text
    assert "tools missing: mdadm" in text
