"""grow (offline, online), the guides' scenario (shrink ROOT 2 GiB -> 1 GiB, add DATA and STORE),
`disk show` and `disk plan`, on loop devices and image files with a real ext4 ROOT."""

from __future__ import annotations

import hashlib
import json

from provisioner.disk import blockdev
from tests.integration.disk.conftest import (
    DISK_SIZE,
    LAYOUT,
    ROOT_START,
    MiB,
    btrfs_root,
    check_disk,
    check_root_fs,
    disk_table,
    in_private_mount_ns,
    root_uuid,
    run,
)

BEFORE = {number: (start, start + size // 512 - 1) for number, _l, _t, start, size, _u, _a in LAYOUT}
LAST_USABLE = DISK_SIZE // 512 - 34  # once the backup GPT sits at the disk end


def grown_end(start: int) -> int:
    """Where a partition starting at `start` ends when grown to the disk end in whole MiB."""
    return start + (LAST_USABLE - start + 1) * 512 // MiB * MiB // 512 - 1


def ext4_bytes(device: str) -> int:
    fields = dict(
        line.split(":", 1) for line in run("dumpe2fs", "-h", device).stdout.splitlines() if ":" in line
    )
    return int(fields["Block count"]) * int(fields["Block size"])


def test_grow_offline_image_file(disk):
    uuid = root_uuid(disk)
    result = disk.cli("disk", "grow", disk.image)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("done: grow")
    expected = {**BEFORE, 9: (ROOT_START, grown_end(ROOT_START))}
    check_disk(disk, expected)
    assert root_uuid(disk) == uuid
    loop = disk.attach()
    assert ext4_bytes(blockdev.partition_path(loop, 9)) == (expected[9][1] - ROOT_START + 1) * 512
    disk.detach()
    # Unlike growpart's exit 1 NOCHANGE, a second grow is a clean no-op.
    again = disk.cli("disk", "grow", disk.image)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("nothing to do:"), again.stdout


CAP_SYS_RESOURCE = 24  # linux/capability.h: online ext4 resize (EXT4_IOC_RESIZE_FS) needs it


def has_capability(bit: int) -> bool:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def test_grow_online_mounted_ext4_root(disk):
    """Online grow of a mounted ext4 ROOT. Where the kernel refuses the online resize (containers
    drop CAP_SYS_RESOURCE, as this build host does), the command must say so in one line, leave
    the partition grown and the job journaled, and finish offline once ROOT is unmounted."""
    loop = disk.attach()
    root = blockdev.partition_path(loop, 9)
    mnt = disk.work / "root"
    mnt.mkdir()
    marker = "written while mounted\n"
    env = {"PROVISIONER_STATE_DIR": str(disk.state)}
    _, before, result, _, after, _ = in_private_mount_ns([
        ["mount", root, str(mnt), "rw"],
        ["statvfs", str(mnt)],
        ["cli", env, "disk", "grow", loop],
        ["write", str(mnt / "written-while-mounted"), marker],
        ["statvfs", str(mnt)],
        ["umount", str(mnt)],
    ])
    if has_capability(CAP_SYS_RESOURCE):
        assert result["returncode"] == 0, result["stderr"]
        assert after > before * 1.8
    else:
        assert result["returncode"] == 1, result
        assert result["stderr"].count("\n") == 1 and "CAP_SYS_RESOURCE" in result["stderr"], result["stderr"]
        assert list(disk.state.glob("*/job/journal.json")), "the interrupted grow must stay journaled"
        finish = disk.cli("disk", "grow", loop)
        assert finish.returncode == 0, finish.stderr
        assert "resumed an interrupted run" in finish.stdout, finish.stdout
    expected = {**BEFORE, 9: (ROOT_START, grown_end(ROOT_START))}
    disk.manifest = dict(disk.manifest, **{"written-while-mounted": hashlib.sha256(marker.encode()).hexdigest()})
    check_disk(disk, expected)
    assert ext4_bytes(root) == (expected[9][1] - ROOT_START + 1) * 512


def test_grow_online_mounted_btrfs_root(disk):
    """ROOT reformatted as btrfs (Ignition can do that): grown while mounted, files intact."""
    loop, root, mnt = btrfs_root(disk)
    env = {"PROVISIONER_STATE_DIR": str(disk.state)}
    _, written, result, size, found, _ = in_private_mount_ns([
        ["mount", root, str(mnt), "rw"],
        ["write_files", str(mnt), 3],
        ["cli", env, "disk", "grow", loop],
        ["statvfs", str(mnt)],
        ["hash", str(mnt)],
        ["umount", str(mnt)],
    ])
    assert result["returncode"] == 0, result["stderr"]
    assert size > 3 * (1 << 30)
    assert found == written
    check_disk(disk, {**BEFORE, 9: (ROOT_START, grown_end(ROOT_START))}, fs_check=False)
    assert run("btrfs", "check", "--readonly", root, check=False).returncode == 0


def test_shrink_then_add_data_and_store(disk):
    """The bare-metal guides' scenario, scaled down: ROOT 2 GiB -> 1 GiB, DATA (btrfs), STORE (rest)."""
    uuid = root_uuid(disk)
    shrink = disk.cli("disk", "shrink-root", disk.image, "--size", "1G", "--yes")
    assert shrink.returncode == 0, shrink.stderr
    root_end = ROOT_START + (1 << 30) // 512 - 1
    expected = {**BEFORE, 9: (ROOT_START, root_end)}
    check_disk(disk, expected)
    assert root_uuid(disk) == uuid
    assert "first-boot growth" in shrink.stderr  # the note about extend-filesystems

    data = disk.cli("disk", "add", disk.image, "--label", "DATA", "--size", "256MiB", "--fs", "btrfs", "--yes")
    assert data.returncode == 0, data.stderr
    expected[10] = (root_end + 1, root_end + 256 * MiB // 512)  # directly after ROOT: no gap to swallow
    check_disk(disk, expected, fs_check=False)

    store = disk.cli("disk", "add", disk.image, "--label", "STORE", "--size", "rest", "--fs", "none", "--yes")
    assert store.returncode == 0, store.stderr
    expected[11] = (expected[10][1] + 1, grown_end(expected[10][1] + 1))
    check_disk(disk, expected)

    loop = disk.attach()
    probe = run("blkid", "-p", "-o", "export", blockdev.partition_path(loop, 10)).stdout
    assert "TYPE=btrfs" in probe and "LABEL=DATA" in probe
    store_probe = run("blkid", "-p", "-o", "export", blockdev.partition_path(loop, 11), check=False).stdout
    assert not [line for line in store_probe.splitlines() if line.startswith("TYPE=")], store_probe
    disk.detach()

    table = disk_table(str(disk.image))
    assert [p.name for p in table.partitions][-2:] == ["DATA", "STORE"]
    # ROOT is now followed by DATA, so grow has nothing to do (as first boot's cgpt resize).
    grow = disk.cli("disk", "grow", disk.image)
    assert grow.returncode == 0 and grow.stdout.startswith("nothing to do:"), grow.stdout + grow.stderr

    shown = disk.cli("disk", "show", disk.image, "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {row["number"]: row for row in json.loads(shown.stdout)["partitions"]}
    assert rows[9]["fs"] == "ext4" and rows[9]["size"] == 1 << 30 and rows[9]["used"] > 150 * MiB
    assert rows[10]["fs"] == "btrfs" and rows[11]["fs"] is None
    # Every finished job leaves its journal and GPT backup in history/.
    history = list(disk.state.glob("*/history/*/gpt-before.bin"))
    assert len(history) == 3, history


def test_plan_and_dry_run_change_nothing(disk):
    before = disk.table_bytes()
    plan = disk.cli("disk", "plan", "shrink-root", disk.image, "--size", "1G")
    assert plan.returncode == 0, plan.stderr
    names = [line.split(":")[0].split(". ")[1] for line in plan.stdout.splitlines() if line.startswith("  ")]
    assert names == ["backup-gpt", "check-fs", "shrink-fs", "write-table", "reread-table", "check-fs-after"]
    dry = disk.cli("disk", "add", disk.image, "--label", "DATA", "--size", "rest", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    data = json.loads(dry.stdout)
    assert data["applied"] is False and data["expected"][-1]["name"] == "DATA"
    grow = disk.cli("disk", "plan", "grow", disk.image)
    assert grow.returncode == 0 and "write-table" in grow.stdout
    assert disk.table_bytes() == before
    assert not disk.state.exists() or not list(disk.state.rglob("journal.json"))
    check_root_fs(disk)
