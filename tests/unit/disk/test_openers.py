"""Finding the processes that hold a disk or image file open, from /proc (real processes)."""

from __future__ import annotations

import subprocess

from provisioner.disk.blockdev import Opener, openers


def test_a_child_holding_the_file_is_named_and_we_are_not(tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 4096)
    other = tmp_path / "other.img"
    other.write_bytes(b"\0")
    with open(image, "rb") as ours:  # this process holds it too: never reported
        assert openers([], (str(image),)) == []
        holder = subprocess.Popen(["sleep", "30"], stdin=ours)
    try:
        found = openers([], (str(image),))
        assert found == [Opener(holder.pid, "sleep", str(image))]
        assert found[0].describe() == f"sleep (pid {holder.pid}) is still running on {image}"
        assert openers([], (str(other),)) == []
    finally:
        holder.kill()
        holder.wait()
    assert openers([], (str(image),)) == []


def test_missing_files_and_disks_hold_nothing(tmp_path):
    assert openers(["/dev/no-such-disk"], (str(tmp_path / "absent.img"),)) == []
