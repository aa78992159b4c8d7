"""Refusals: one line on stderr, the right exit code, and the table bytes identical afterwards."""

from __future__ import annotations

from provisioner.disk import blockdev
from tests.integration.disk.conftest import check_root_fs, in_private_mount_ns


def refused(disk, args, exit_code: int, *words: str) -> str:
    before = disk.table_bytes()
    result = disk.cli(*args)
    assert result.returncode == exit_code, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("provisioner: error: "), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert disk.table_bytes() == before, "the partition table changed"
    assert not list(disk.state.glob("*/job/journal.json")), "a refused command left a journal"
    return result.stderr


def test_shrink_below_used_space(disk):
    refused(disk, ["disk", "shrink-root", disk.image, "--size", "200M", "--yes"], 1, "used", "safety margin")
    check_root_fs(disk)


def test_shrink_mounted_root(disk):
    loop = disk.attach()
    mnt = disk.work / "root"
    mnt.mkdir()
    before = disk.table_bytes()
    env = {"PROVISIONER_STATE_DIR": str(disk.state)}
    _, result, _ = in_private_mount_ns([
        ["mount", blockdev.partition_path(loop, 9), str(mnt), "rw"],
        ["cli", env, "disk", "shrink-root", loop, "--size", "1G", "--yes"],
        ["umount", str(mnt)],
    ])
    assert result["returncode"] == 1, result
    stderr = result["stderr"]
    assert stderr.count("\n") == 1 and "is mounted on" in stderr and "unmount" in stderr, stderr
    assert disk.table_bytes() == before
    assert not list(disk.state.glob("*/job/journal.json"))


def test_partition_path_instead_of_disk(disk):
    loop = disk.attach()
    part = blockdev.partition_path(loop, 9)
    refused(disk, ["disk", "grow", part], 1, "is a partition", loop)
    refused(disk, ["disk", "shrink-root", part, "--size", "1G", "--yes"], 1, "is a partition")


def test_unknown_filesystem_and_bad_options(disk):
    refused(disk, ["disk", "add", disk.image, "--label", "DATA", "--size", "100M", "--fs", "ntfs", "--yes"], 2,
            "--fs", "ntfs")
    refused(disk, ["disk", "add", disk.image, "--label", "DATA", "--size", "100M", "--type", "nope", "--yes"], 2,
            "unknown partition type")
    refused(disk, ["disk", "add", disk.image, "--label", "ROOT", "--size", "100M", "--yes"], 2, "already")
    refused(disk, ["disk", "shrink-root", disk.image, "--size", "lots", "--yes"], 2, "--size")
    refused(disk, ["disk", "shrink-root", disk.image, "--size", "3G", "--yes"], 2, "not smaller")
    # No --yes and no terminal to ask on: refuse rather than guess.
    refused(disk, ["disk", "shrink-root", disk.image, "--size", "1G"], 2, "--yes")
    refused(disk, ["disk", "grow", disk.work / "missing.img"], 1, "no such device")
