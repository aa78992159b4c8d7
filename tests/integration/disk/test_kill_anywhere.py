"""Crash safety at any moment, not only between steps (docs/resize.md, "What a kill in the middle
of a step leaves").

The whole process group of a real job is SIGKILLed (a power cut for the job, or a dying SSH session
taking its e2fsck/resize2fs along) at moments spread over it: every 0.25 s from the start until the
job would have finished (on a slow machine at most MAX_GRID moments, spread evenly), plus the
middle of every step, so each step is killed inside. Then the same command is run again. After each moment: the re-run
finished (exit 0), no job is left in the journal, the table is exactly as planned with the backup
GPT at the end (our reader and sgdisk -v), e2fsck -fn is clean and every file's sha256 is unchanged.

How long a job and each of its steps take is measured by a first, uninterrupted run on its own
copy (its JSON logs time every step; the result is checked the same way). Every moment starts from a fresh sparse copy of `small_template` (ROOT 2 GiB with ~45 MiB of
files above 1 GiB, so the shrink to 1 GiB moves all of them). One job at a time, a handful of
processes each: the machine is shared.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provisioner.disk import blockdev, e2undo
from tests.integration.disk.conftest import (
    DISK_SIZE,
    LAYOUT,
    ROOT_START,
    MiB,
    ScratchDisk,
    Template,
    btrfs_root,
    check_disk,
    cli_env,
    detach_all,
    in_private_mount_ns,
    kill_group_after,
    run,
    scratch_disk,
    start_cli,
)

# The kill moments come from a timed first run: a test on the other core would make the killed runs slower
# than it, and the sweep would miss the later steps.
pytestmark = pytest.mark.serial

STEP = 0.25  # seconds between two kill moments
MIN_MOMENTS = 6  # a job shorter than MIN_MOMENTS * STEP gets this many, spread evenly
MAX_GRID = 16  # a longer job (a slow machine) gets this many, spread evenly: the suite's time budget
BEFORE = {number: (start, start + size // 512 - 1) for number, _l, _t, start, size, _u, _a in LAYOUT}
SHRUNK = {**BEFORE, 9: (ROOT_START, ROOT_START + (1 << 30) // 512 - 1)}
LAST_USABLE = DISK_SIZE // 512 - 34
GROWN = {**BEFORE, 9: (ROOT_START, ROOT_START + (LAST_USABLE - ROOT_START + 1) * 512 // MiB * MiB // 512 - 1)}
DATA = {**BEFORE, 10: (BEFORE[9][1] + 1, BEFORE[9][1] + 256 * MiB // 512)}


def kill_moments(duration: float, steps: dict[str, tuple[float, float]] | None = None) -> list[float]:
    """Every STEP seconds until the job would have finished (at least MIN_MOMENTS spread evenly,
    at most MAX_GRID), plus the middle of every step of the job, so each step is killed inside
    however the grid falls. `steps`: step -> (start, end), seconds after the command started."""
    count = int(duration / STEP)
    if MIN_MOMENTS <= count <= MAX_GRID:
        grid = [STEP * k for k in range(1, count + 1)]
    else:
        spread = min(max(count, MIN_MOMENTS), MAX_GRID)
        grid = [duration * k / (spread + 1) for k in range(1, spread + 1)]
    middles = [(start + end) / 2 for start, end in (steps or {}).values()]
    return sorted({round(moment, 2) for moment in grid + middles})


def timed_run(disk: ScratchDisk, args: list[str]) -> tuple[float, dict[str, tuple[float, float]]]:
    """Run the job uninterrupted with JSON logs; returns its duration and when each step ran."""
    start = time.time()
    result = disk.cli("-v", "--log-format", "json", *args)
    duration = time.time() - start
    assert result.returncode == 0, result.stderr
    starts: dict[str, float] = {}
    steps: dict[str, tuple[float, float]] = {}
    for line in result.stderr.splitlines():
        event = json.loads(line)
        message, at = event["message"], event["time"] - start
        name = message.partition(": ")[2].split(" ")[0]
        if message.endswith(" ..."):
            starts[name] = at
        elif " done in " in message and name in starts:
            steps[name] = (starts[name], at)
    assert steps, result.stderr
    return duration, steps


@dataclass
class Killed:
    """What one killed run left in the journal, for the failure message and the coverage check."""

    delay: float
    done: list[str] = field(default_factory=list)  # the steps it had recorded
    undo: dict[str, str] = field(default_factory=dict)  # step -> state of its resize2fs undo file

    @classmethod
    def read(cls, delay: float, state: Path) -> Killed:
        killed = cls(delay)
        for job in state.glob("*/job"):
            steps = job / "steps.log"
            killed.done = steps.read_text().split() if steps.exists() else []
            for undo in job.glob("*.e2undo"):
                killed.undo[undo.name.removesuffix(".e2undo")] = e2undo.read_record(undo).state.value
        return killed


def sweep(
    template: Template,
    work: Path,
    args: Callable[[ScratchDisk], list[str]],
    check: Callable[[ScratchDisk], None],
    *,
    attach: bool,
) -> list[Killed]:
    """Run the job once to time it, then kill it at every moment and check the re-run's result."""
    reference = scratch_disk(template, work / "reference")
    try:
        target = reference.attach() if attach else None
        duration, steps = timed_run(reference, args(reference))
        assert target is None or reference.target == target
        reference.detach()
        check(reference)
    finally:
        discard(reference)
    killed: list[Killed] = []
    moments = kill_moments(duration, steps)
    for delay in moments:
        disk = scratch_disk(template, work / f"killed-after-{delay}s")
        try:
            if attach:
                disk.attach()
            code = kill_group_after(start_cli(*args(disk), env=cli_env(disk.state)), delay)
            if code is not None:  # this run was quicker than the reference: nothing to resume
                assert code == 0, f"the run to be killed after {delay} s failed by itself (exit {code})"
                continue
            killed.append(Killed.read(delay, disk.state))
            again = disk.cli(*args(disk))
            assert again.returncode == 0, f"re-run after a kill at {killed[-1]}: {again.stderr}"
            assert not list(disk.state.glob("*/job")), f"{killed[-1]}: a job is left in the journal"
            disk.detach()
            check(disk)
        finally:
            discard(disk)
    assert len(killed) >= MIN_MOMENTS // 2, f"only {len(killed)} runs were killed before they finished"
    # For the test report (pytest -s): how much of the job the moments covered.
    print(f"{' '.join(args(reference)[:2])}: {duration:.2f} s, killed at {len(killed)} of {len(moments)} moments;"
          f" {sum('interrupted' in k.undo.values() for k in killed)} inside resize2fs (undo replayed)", file=sys.stderr)
    return killed


def discard(disk: ScratchDisk) -> None:
    disk.detach()
    detach_all(disk.image)
    shutil.rmtree(disk.work)


def test_shrink_root_killed_at_any_moment(small_template, tmp_path):
    def args(disk: ScratchDisk) -> list[str]:
        return ["disk", "shrink-root", disk.target, "--size", "1G", "--yes"]

    killed = sweep(small_template, tmp_path, args, lambda disk: check_disk(disk, SHRUNK), attach=True)
    # The moments must have hit resize2fs while it was moving blocks (the case the undo file is for),
    # and the runs before and after it.
    assert any(k.undo.get("shrink-fs") == "interrupted" for k in killed), killed
    assert any("shrink-fs" not in k.done for k in killed) and any("shrink-fs" in k.done for k in killed), killed


def test_offline_grow_killed_at_any_moment(small_template, tmp_path):
    def args(disk: ScratchDisk) -> list[str]:
        return ["disk", "grow", str(disk.image)]

    killed = sweep(small_template, tmp_path, args, lambda disk: check_disk(disk, GROWN), attach=False)
    assert any("grow-fs" not in k.done for k in killed) and any("write-table" in k.done for k in killed), killed


def test_add_killed_at_any_moment(small_template, tmp_path):
    def args(disk: ScratchDisk) -> list[str]:
        return ["disk", "add", disk.target, "--label", "DATA", "--size", "256M", "--fs", "ext4", "--yes"]

    def check(disk: ScratchDisk) -> None:
        check_disk(disk, DATA)
        loop = disk.attach()
        data = blockdev.partition_path(loop, 10)
        probe = run("blkid", "-p", "-o", "export", data).stdout
        assert "TYPE=ext4" in probe and "LABEL=DATA" in probe, probe
        assert run("e2fsck", "-fn", data, check=False).returncode == 0
        disk.detach()

    killed = sweep(small_template, tmp_path, args, check, attach=True)
    assert any("write-table" not in k.done for k in killed), killed


def test_online_grow_killed_at_any_moment(small_template, tmp_path):
    """A mounted btrfs ROOT grown online (the kernel resizes it, in its own transactions): killed
    at every moment, grown again while still mounted, the files intact and `btrfs check` clean."""
    texts = {f"file{index}.txt": f"line {index}\n" * 20_000 for index in range(5)}
    expected = {name: hashlib.sha256(text.encode()).hexdigest() for name, text in texts.items()}

    def grow_mounted(disk: ScratchDisk, delay: float | None) -> tuple[bool, float]:
        """mkfs.btrfs and files, then the grow (killed after `delay` s first) while mounted in a
        namespace of our own; checks the result. Returns (whether the kill came first, grow seconds)."""
        loop, root, mnt = btrfs_root(disk)
        env = {"PROVISIONER_STATE_DIR": str(disk.state)}
        kill = [["cli_killed", env, delay, "disk", "grow", loop]] if delay is not None else []
        *_, code, grown, found, size, _ = in_private_mount_ns([
            ["mount", root, str(mnt), "rw"],
            *[["write", str(mnt / name), text] for name, text in texts.items()],
            *(kill or [["statvfs", str(mnt)]]),
            ["cli", env, "disk", "grow", loop],
            ["hash", str(mnt)],
            ["statvfs", str(mnt)],
            ["umount", str(mnt)],
        ])
        assert grown["returncode"] == 0, f"killed after {delay} s, the re-run failed: {grown['stderr']}"
        assert found == expected and size > 3 * (1 << 30), (found, size)
        assert not list(disk.state.glob("*/job")), f"killed after {delay} s: a job is left in the journal"
        disk.detach()
        check_disk(disk, GROWN, fs_check=False)
        assert run("btrfs", "check", "--readonly", blockdev.partition_path(disk.attach(), 9), check=False).returncode == 0
        disk.detach()
        return bool(kill) and code is None, grown["seconds"]

    reference = scratch_disk(small_template, tmp_path / "reference")
    try:
        _, duration = grow_mounted(reference, None)
    finally:
        discard(reference)
    killed = 0
    for delay in kill_moments(duration):
        disk = scratch_disk(small_template, tmp_path / f"killed-after-{delay}s")
        try:
            killed += grow_mounted(disk, delay)[0]
        finally:
            discard(disk)
    assert killed >= MIN_MOMENTS // 2, f"only {killed} runs were killed before they finished"
    print(f"online grow: {duration:.2f} s, killed at {killed} moments", file=sys.stderr)
