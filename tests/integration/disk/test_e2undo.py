"""The facts provisioner/disk/e2undo.py relies on, checked against this machine's e2fsprogs.

An ext4 image file (no loop device needed) whose data lies above the size it is shrunk to, so
resize2fs must move it. resize2fs -z (and e2undo) are killed at an exact write with strace's fault
injection (`-e inject=pwrite64:signal=SIGKILL:when=N`), at fractions of the writes a whole run
makes: deterministic moments inside the block moving, which a timer could not hit reliably.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from provisioner.disk import e2undo
from provisioner.errors import DiskError
from tests.integration.disk.conftest import MiB, run

SHRUNK = "80M"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """256 MiB ext4: a 100 MiB filler written first, three 8 MiB files after it, the filler removed."""
    for tool in ("mkfs.ext4", "debugfs", "e2fsck", "resize2fs", "e2undo", "strace"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run 'make setup'", pytrace=False)
    work = tmp_path_factory.mktemp("e2undo")
    (work / "src").mkdir()
    (work / "src" / "filler").write_bytes(os.urandom(100 * MiB))
    fs = work / "fs.img"
    run("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", work / "src", fs, "256M")
    commands = []
    for index in range(3):
        (work / f"data{index}").write_bytes(os.urandom(8 * MiB))
        commands.append(f"write {work / f'data{index}'} data{index}")
    script = work / "debugfs.cmds"
    script.write_text("\n".join([*commands, "rm filler"]) + "\n")
    run("debugfs", "-w", "-f", script, fs)
    run("e2fsck", "-fy", fs)
    return fs


@pytest.fixture(scope="module")
def resize_writes(image, tmp_path_factory) -> int:
    """How many pwrite64 calls a whole resize2fs -z of `image` makes."""
    work = tmp_path_factory.mktemp("e2undo-count")
    return pwrites(["resize2fs", "-z", work / "undo", copy(image, work), SHRUNK], work)


def copy(image: Path, directory: Path) -> Path:
    target = directory / "fs.img"
    run("cp", "--sparse=always", image, target)
    return target


def killed_at(write: int, argv: list) -> None:
    """Run argv, SIGKILLed by strace at its `write`-th pwrite64 (never if it makes fewer)."""
    run("strace", "-f", "-o", os.devnull, "-e", "trace=pwrite64",
        "-e", f"inject=pwrite64:signal=SIGKILL:when={write}", *argv, check=False)


def pwrites(argv: list, directory: Path) -> int:
    """How many pwrite64 calls a whole run of argv makes."""
    summary = directory / "strace.summary"
    run("strace", "-f", "-c", "-o", summary, "-e", "trace=pwrite64", *argv)
    # strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall
    rows = [line.split() for line in summary.read_text().splitlines() if line.endswith(" pwrite64")]
    assert len(rows) == 1, summary.read_text()
    return int(rows[0][3])


def first_difference(a: Path, b: Path) -> int | None:
    """The first byte offset where the two images differ outside the primary superblock (whose
    state flag e2undo leaves 'not clean' on purpose), or None."""
    sb = range(e2undo.SUPERBLOCK_OFFSET, e2undo.SUPERBLOCK_OFFSET + e2undo.SUPERBLOCK_SIZE)
    with open(a, "rb") as left, open(b, "rb") as right:
        offset = 0
        while True:
            chunk_a, chunk_b = left.read(MiB), right.read(MiB)
            if not chunk_a and not chunk_b:
                return None
            if chunk_a != chunk_b:
                for index, (x, y) in enumerate(zip(chunk_a, chunk_b, strict=False)):
                    if x != y and offset + index not in sb:
                        return offset + index
                if len(chunk_a) != len(chunk_b):
                    return offset + min(len(chunk_a), len(chunk_b))
            offset += MiB


def test_a_whole_run_leaves_a_finished_record(image, tmp_path):
    fs, undo = copy(image, tmp_path), tmp_path / "undo"
    run("resize2fs", "-z", undo, fs, SHRUNK)
    record = e2undo.read_record(undo)
    assert record.state is e2undo.UndoState.FINISHED and record.keys > 0, record.state
    assert undo.stat().st_size > 24 * MiB  # the files moved: the old contents of their new blocks are kept
    assert e2undo.replay(undo, str(fs)) == record  # a finished record is never replayed
    assert "Block count:              20480" in run("dumpe2fs", "-h", fs).stdout


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_an_interrupted_resize_is_undone_exactly(image, resize_writes, tmp_path, fraction):
    fs, undo = copy(image, tmp_path), tmp_path / "undo"
    killed_at(int(resize_writes * fraction), ["resize2fs", "-z", undo, fs, SHRUNK])
    record = e2undo.read_record(undo)
    assert record.state is e2undo.UndoState.INTERRUPTED and record.keys > 0, record
    assert first_difference(fs, image) is not None, "resize2fs was killed before it changed a block"

    # e2undo itself killed half-way: replayed again from the start, the result is the same.
    killed_at(max(2, record.keys // 2), ["e2undo", undo, fs])
    assert e2undo.replay(undo, str(fs)).state is e2undo.UndoState.INTERRUPTED
    e2undo.discard(undo)
    assert not undo.exists()
    assert first_difference(fs, image) is None  # every block as before resize2fs; only the superblock's state
    assert run("e2fsck", "-fn", fs, check=False).returncode == 0
    assert "Block count:              65536" in run("dumpe2fs", "-h", fs).stdout


def test_a_kill_before_the_first_record_leaves_nothing_to_undo(image, tmp_path):
    fs, undo = copy(image, tmp_path), tmp_path / "undo"
    killed_at(1, ["resize2fs", "-z", undo, fs, SHRUNK])
    assert e2undo.read_record(undo).state is e2undo.UndoState.EMPTY
    assert first_difference(fs, image) is None


def test_an_undo_file_of_another_filesystem_is_refused(image, resize_writes, tmp_path):
    fs, undo = copy(image, tmp_path), tmp_path / "undo"
    killed_at(resize_writes // 2, ["resize2fs", "-z", undo, fs, SHRUNK])
    assert e2undo.read_record(undo).state is e2undo.UndoState.INTERRUPTED
    other = tmp_path / "other.img"
    run("mkfs.ext4", "-q", "-F", other, "64M")
    before = other.read_bytes()
    with pytest.raises(DiskError, match="the undo file was written for the filesystem .*, not the one on"):
        e2undo.replay(undo, str(other))
    assert other.read_bytes() == before and undo.exists()
