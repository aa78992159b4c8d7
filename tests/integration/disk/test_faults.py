"""Crash safety: SIGKILL the CLI before and after every step of shrink-root (and of add), re-run
the same command, and check the job finished with the data intact and the table as planned.

The kill comes from the documented test hook PROVISIONER_FAULT=before:<step>|after:<step>
(provisioner/disk/journal.py): `after:` fires once the step's effect is on disk but before the
journal records it, so the re-run must cope with a step that ran but is not marked done.
The tests at the end kill inside the shrink step itself, while resize2fs moves blocks (and only
the CLI, leaving resize2fs running); test_kill_anywhere.py kills at moments spread over whole jobs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.disk import blockdev, e2undo
from tests.integration.disk.conftest import (
    LAYOUT,
    ROOT_START,
    MiB,
    check_disk,
    cli_env,
    in_private_mount_ns,
    kill_group_after,
    root_uuid,
    run,
    start_cli,
)

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


# ----------------------------------------------------------------- kills inside a step, not between


def undo_file(disk):
    return next(iter(disk.state.glob("*/job/shrink-fs.e2undo")), None)


def start_shrink_and_wait_for_moving_blocks(disk):
    """Start shrink-root and return once resize2fs is moving blocks (its undo file holds records
    of blocks it overwrote and is not finished): the moment a kill used to corrupt the filesystem."""
    process = start_cli(*shrink_args(disk), env=cli_env(disk.state))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        undo = undo_file(disk)
        record = e2undo.read_record(undo) if undo else None
        if record and record.state is e2undo.UndoState.INTERRUPTED and record.keys >= 20:
            return process
        time.sleep(0.02)
    kill_group_after(process, 0)
    pytest.fail("resize2fs never got to moving blocks")


def test_kill_while_resize2fs_moves_blocks_then_rerun(disk):
    disk.attach()
    process = start_shrink_and_wait_for_moving_blocks(disk)
    assert kill_group_after(process, 0) is None
    again = disk.cli(*shrink_args(disk))
    assert again.returncode == 0, again.stderr
    assert "resize2fs was interrupted; replayed its undo file" in again.stderr, again.stderr
    assert undo_file(disk) is None
    disk.detach()
    check_disk(disk, SHRUNK)


def test_restore_after_a_kill_while_resize2fs_moves_blocks(disk):
    """restore undoes the interrupted resize2fs too: the filesystem is back at its old size."""
    disk.attach()
    assert kill_group_after(start_shrink_and_wait_for_moving_blocks(disk), 0) is None
    restored = disk.cli("disk", "restore", disk.target, "--yes")
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith("restored the table from before 'shrink-root"), restored.stdout
    assert "and undid its interrupted resize2fs (e2undo)" in restored.stdout, restored.stdout
    root = blockdev.partition_path(disk.loop, 9)
    assert "Block count:              524288" in run("dumpe2fs", "-h", root).stdout  # 2 GiB of 4 KiB blocks
    disk.detach()
    check_disk(disk, BEFORE)


def child_named(parent: int, name: str, timeout: float = 60) -> int:
    """The pid of `parent`'s child called `name` (from /proc), once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat_fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    comm = Path(f"/proc/{entry}/comm").read_text().strip()
                except OSError:
                    continue
                if int(stat_fields[1]) == parent and comm == name:
                    return int(entry)
        time.sleep(0.02)
    pytest.fail(f"no {name} child of {parent} within {timeout} s")


def test_a_child_left_running_is_named_and_waited_for(disk):
    """Killing only the CLI leaves its resize2fs running on the disk: the re-run names it, waits
    for it, and then finishes the job."""
    disk.attach()
    process = start_shrink_and_wait_for_moving_blocks(disk)
    child = child_named(process.pid, "resize2fs")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    again = disk.cli(*shrink_args(disk))
    assert again.returncode == 0, again.stderr
    assert f"resize2fs (pid {child}) is still running on {disk.loop}p9; waiting up to 60 s" in again.stderr, again.stderr
    disk.detach()
    check_disk(disk, SHRUNK)


def test_wait_gives_up_and_names_the_program_holding_the_disk(disk):
    loop = disk.attach()
    part = blockdev.partition_path(loop, 9)
    before = disk.table_bytes()
    with open(part, "rb") as held:
        holder = subprocess.Popen(["sleep", "60"], stdin=held)
    try:
        refused = disk.cli(*shrink_args(disk), "--wait", "1")
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr == (  # the progress line while it waits, then the one error line
        f"sleep (pid {holder.pid}) is still running on {part}; waiting up to 1 s for it to finish\n"
        f"provisioner: error: sleep (pid {holder.pid}) is still running on {part} after 1 s: "
        "let it finish (or kill it), then run the same command again\n"
    )
    assert disk.table_bytes() == before and not list(disk.state.glob("*/job/journal.json"))


def test_a_step_that_fails_keeps_the_job_and_says_what_restore_would_do(disk):
    """Resumed while ROOT is mounted, shrink-fs fails: one line with the cause, where the job is
    kept and what 'disk restore' would do now; restore then does exactly that."""
    loop = disk.attach()
    killed = disk.cli(*shrink_args(disk), fault="before:shrink-fs")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    mnt = disk.work / "root"
    mnt.mkdir()
    env = {"PROVISIONER_STATE_DIR": str(disk.state)}
    _, failed, _ = in_private_mount_ns([
        ["mount", blockdev.partition_path(loop, 9), str(mnt), "rw"],
        ["cli", env, *shrink_args(disk)],
        ["umount", str(mnt)],
    ])
    assert failed["returncode"] == 1, failed
    error = failed["stderr"].splitlines()[-1]
    job = next(disk.state.glob("*/job"))
    assert error.startswith("provisioner: error: ") and "is mounted on" in error, error
    assert f"; the job is kept in {job}: run the same command again once that is fixed, or " in error, error
    assert error.endswith(
        "'disk restore --yes' would put back the partition table from before 'shrink-root --size 1073741824'"
    ), error
    restored = disk.cli("disk", "restore", loop, "--yes")
    assert restored.returncode == 0, restored.stderr
    disk.detach()
    check_disk(disk, BEFORE)


def test_a_rerun_after_the_job_finished_says_so(disk):
    """A kill after the journal moved to history (the job had finished, its output was lost): the
    same command again says so and exits 0 instead of refusing a size ROOT already has."""
    disk.attach()
    assert disk.cli(*shrink_args(disk)).returncode == 0
    before = disk.table_bytes()
    again = disk.cli(*shrink_args(disk))
    assert again.returncode == 0, again.stderr
    history = next(disk.state.glob("*/history/*-shrink-root"))
    assert again.stdout == f"nothing to do: 'shrink-root --size 1073741824' already finished (journal in {history})\n"
    assert disk.table_bytes() == before
