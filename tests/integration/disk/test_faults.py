"""Crash safety: SIGKILL the CLI before and after every step of shrink-root (and of add), re-run
the same command, and check the job finished with the data intact and the table as planned.

The kill comes from the documented test hook PROVISIONER_FAULT=before:<step>|after:<step>
(provisioner/disk/journal.py): `after:` fires once the step's effect is on disk but before the
journal records it, so the re-run must cope with a step that ran but is not marked done.
"""

from __future__ import annotations

import signal

import pytest

from tests.integration.disk.conftest import LAYOUT, ROOT_START, MiB, check_disk, root_uuid

SHRINK_STEPS = ["backup-gpt", "check-fs", "shrink-fs", "write-table", "reread-table", "check-fs-after"]
BEFORE = {number: (start, start + size // 512 - 1) for number, _l, _t, start, size, _u, _a in LAYOUT}
SHRUNK = {**BEFORE, 9: (ROOT_START, ROOT_START + (1 << 30) // 512 - 1)}


def shrink_args(disk) -> list[str]:
    return ["disk", "shrink-root", disk.target, "--size", "1G", "--yes"]


# after: every step; before: the two that matter most (before:X is after:X-1 plus a journal write).
FAULTS = [f"after:{step}" for step in SHRINK_STEPS] + ["before:shrink-fs", "before:write-table"]


@pytest.mark.parametrize("fault", FAULTS)
def test_kill_during_shrink_root_then_rerun(disk, fault):
    uuid = root_uuid(disk)
    disk.attach()  # a real block device, as /dev/sdX would be
    killed = disk.cli(*shrink_args(disk), fault=fault)
    assert killed.returncode == -signal.SIGKILL, f"{fault}: not killed: {killed.returncode} {killed.stderr}"
    journal = list(disk.state.glob("*/job/journal.json"))
    assert journal, f"{fault}: no journal left behind"

    if fault == "after:write-table":
        # Another command is refused while the job is unfinished: one line, naming the job.
        other = disk.cli("disk", "grow", disk.target)
        assert other.returncode == 1 and "shrink-root" in other.stderr and other.stderr.count("\n") == 1, other.stderr
        plan = disk.cli("disk", "plan", "shrink-root", disk.target, "--size", "1G")
        shown = disk.cli("disk", "show", disk.target)
        assert shown.returncode == 0 and "unfinished: 'shrink-root" in shown.stdout, shown.stdout + shown.stderr
        steps = [line.split(". ")[1].split(":")[0] for line in plan.stdout.splitlines() if line.startswith("  ")]
        assert plan.returncode == 0 and steps == ["write-table", "reread-table", "check-fs-after"], plan.stdout

    again = disk.cli(*shrink_args(disk))
    assert again.returncode == 0, f"{fault}: re-run failed: {again.stderr}"
    assert "resumed an interrupted run" in again.stdout, again.stdout
    assert not list(disk.state.glob("*/job/journal.json"))
    disk.detach()
    check_disk(disk, SHRUNK)
    assert root_uuid(disk) == uuid


def test_kill_image_file_shrink_after_resize_then_rerun(disk):
    """The same through an image file: the killed run leaves its loop device behind; the re-run
    attaches a new one and finishes."""
    killed = disk.cli(*shrink_args(disk), fault="after:shrink-fs")
    assert killed.returncode == -signal.SIGKILL
    again = disk.cli(*shrink_args(disk))
    assert again.returncode == 0, again.stderr
    check_disk(disk, SHRUNK)


@pytest.mark.parametrize("fault", ["after:write-table", "after:mkfs"])
def test_kill_during_add_then_rerun(disk, fault):
    shrink = disk.cli(*shrink_args(disk))
    assert shrink.returncode == 0, shrink.stderr
    add = ["disk", "add", disk.target, "--label", "DATA", "--size", "256M", "--fs", "ext4", "--yes"]
    killed = disk.cli(*add, fault=fault)
    assert killed.returncode == -signal.SIGKILL
    again = disk.cli(*add)
    assert again.returncode == 0, again.stderr
    end9 = SHRUNK[9][1]
    check_disk(disk, {**SHRUNK, 10: (end9 + 1, end9 + 256 * MiB // 512)})


def test_restore_after_kill_puts_the_old_table_back(disk):
    """The other way out of an interrupted shrink: `disk restore` loads the GPT saved before it.
    The old, larger ROOT still holds the (now smaller) filesystem, data intact."""
    killed = disk.cli(*shrink_args(disk), fault="after:write-table")
    assert killed.returncode == -signal.SIGKILL
    restored = disk.cli("disk", "restore", disk.image, "--yes")
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith("restored the table from before 'shrink-root"), restored.stdout
    check_disk(disk, BEFORE)
    again = disk.cli("disk", "restore", disk.image, "--yes")
    assert again.returncode == 1 and "no unfinished job" in again.stderr, again.stderr
    # The filesystem is 1 GiB in a 2 GiB partition now: grow fills it again.
    grow = disk.cli("disk", "grow", disk.image)
    assert grow.returncode == 0, grow.stderr


def test_restore_refused_once_the_filesystem_outgrew_the_old_partition(disk):
    killed = disk.cli("disk", "grow", disk.image, fault="after:grow-fs")
    assert killed.returncode == -signal.SIGKILL
    refused = disk.cli("disk", "restore", disk.image, "--yes")
    assert refused.returncode == 1 and "run 'grow' again" in refused.stderr, refused.stderr
    assert refused.stderr.count("\n") == 1
    finish = disk.cli("disk", "grow", disk.image)
    assert finish.returncode == 0 and "resumed" in finish.stdout, finish.stdout + finish.stderr
