"""After the image is on the disk: re-read the table, check the layout, place the configs.

flatcar-install (shared/reference/installer.md §1.2 steps 8-11): `blockdev --rereadpt` with
retries and `udevadm settle`, then mount ROOT and copy the cloud-config to
/var/lib/flatcar-install/user_data (coreos-install: /var/lib/coreos-install/user_data; we write
both), `-n` copies /run/systemd/network/* to ROOT:/etc/systemd/network without clobbering, and
the Ignition config goes to OEM:/config.ign. Partitions are found by NUMBER from the GPT we just
wrote (ROOT = 9, OEM = 6), never by a `${DEVICE}*` glob (flatcar/Flatcar#1506) or by
concatenating names (`nvme0n1p9`: blockdev.partition_path).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator

from provisioner.core.commands import run
from provisioner.disk import blockdev, layout
from provisioner.disk.gpt import GptTable, partition_layout, read_gpt
from provisioner.errors import CommandError, DiskError, InstallError

log = logging.getLogger("provisioner.install.postinstall")

CLOUD_CONFIG_PATHS = ("var/lib/coreos-install/user_data", "var/lib/flatcar-install/user_data")


def check_layout(table: GptTable) -> list[str]:
    """What is wrong with `table` as a CoreOS disk (empty list: fine). Pure."""
    problems = []
    root = table.entry(layout.ROOT)
    if root is None:
        problems.append("no partition 9 (ROOT)")
    elif root.name != "ROOT":
        problems.append(f"partition 9 is named {root.name!r}, expected 'ROOT'")
    for number, partuuid in ((layout.USR_A, layout.USR_A_PARTUUID), (layout.USR_B, layout.USR_B_PARTUUID)):
        entry = table.entry(number)
        if entry is None:
            problems.append(f"no partition {number} (USR-{'A' if number == layout.USR_A else 'B'})")
        elif entry.type_guid != layout.TYPE_USR:
            problems.append(f"partition {number} has type {entry.type_guid}, expected the CoreOS USR type")
        elif entry.partuuid != partuuid:
            problems.append(f"partition {number} PARTUUID {entry.partuuid} is not the fixed {partuuid}")
    return problems


def compare_tables(written: GptTable, image: GptTable) -> list[str]:
    """Differences between the table read back from the disk and the image's table. Pure."""
    problems = []
    mine = {e.number: e for e in written.entries}
    theirs = {e.number: e for e in image.entries}
    if set(mine) != set(theirs):
        problems.append(f"partitions {sorted(mine)} on disk, {sorted(theirs)} in the image")
    for number in sorted(set(mine) & set(theirs)):
        if mine[number] != theirs[number]:
            problems.append(f"partition {number} differs from the image")
    if written.disk_guid != image.disk_guid:
        problems.append("disk GUID differs from the image")
    return problems


def verify_disk(disk: str, image_table: GptTable) -> GptTable:
    """Read the disk's GPT back and compare it with the image's. Raises InstallError."""
    table = read_gpt(disk, require_valid=False)
    if not table.valid:
        raise InstallError(f"{disk}: no valid GPT after writing ({'; '.join(table.problems)})")
    problems = compare_tables(table, image_table) + check_layout(table)
    if problems:
        raise InstallError(f"{disk}: written table does not match the image: {'; '.join(problems)}")
    return table


@contextlib.contextmanager
def partition_nodes(target: str, table: GptTable) -> Iterator[str]:
    """Yield a block device whose partitions have nodes: the disk itself, or a loop device
    attached to an image file (detached afterwards)."""
    expected = partition_layout(table.entries)
    if blockdev.is_block_device(target):
        blockdev.reread_partitions(target, expected)
        yield target
        return
    loop = run(["losetup", "--find", "--show", "--partscan", target]).stdout.strip()
    try:
        blockdev.reread_partitions(loop, expected)
        yield loop
    finally:
        blockdev.forget_partitions(loop)
        run(["losetup", "-d", loop], check=False)


@contextlib.contextmanager
def mounted(device: str, what: str, workdir: str) -> Iterator[str]:
    point = tempfile.mkdtemp(prefix=f"{what.lower()}-", dir=workdir)
    try:
        try:
            run(["mount", device, point])
        except CommandError:
            fstype = run(["blkid", "-o", "value", "-s", "TYPE", device], check=False).stdout.strip()
            if fstype != "btrfs" or not shutil.which("btrfstune"):
                raise
            # flatcar-install: a duplicate btrfs fsid (another disk from the same image) blocks
            # the mount; give this one a new random fsid and retry (flatcar/init 6371236).
            run(["btrfstune", "-f", "-u", device])
            run(["mount", device, point])
        try:
            yield point
        finally:
            run(["umount", point], check=False)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(point)


def place_configs(disk: str, table: GptTable, *, cloud_config: bytes | None, ignition: bytes | None,
                  network_dir: str | None, workdir: str) -> list[str]:
    """Write the configs into ROOT/OEM. Returns what was placed. Raises InstallError, CommandError."""
    placed: list[str] = []
    if cloud_config is None and ignition is None and network_dir is None:
        return placed
    with partition_nodes(disk, table) as device:
        if cloud_config is not None or network_dir is not None:
            root = blockdev.partition_path(device, layout.ROOT)
            with mounted(root, "ROOT", workdir) as point:
                if cloud_config is not None:
                    for rel in CLOUD_CONFIG_PATHS:
                        path = os.path.join(point, rel)
                        os.makedirs(os.path.dirname(path), exist_ok=True)
                        with open(path, "wb") as handle:
                            handle.write(cloud_config)
                        os.chmod(path, 0o600)  # it may hold secrets (passwords, keys)
                        placed.append(f"ROOT:/{rel}")
                if network_dir is not None:
                    placed += _copy_network_units(network_dir, os.path.join(point, "etc/systemd/network"))
        if ignition is not None:
            oem = blockdev.partition_path(device, layout.OEM)
            with mounted(oem, "OEM", workdir) as point:
                with open(os.path.join(point, "config.ign"), "wb") as handle:
                    handle.write(ignition)
                placed.append("OEM:/config.ign")
    return placed


def _copy_network_units(source: str, destination: str) -> list[str]:
    """`cp --recursive --no-clobber --preserve --dereference` of the live system's units."""
    if not os.path.isdir(source):
        raise InstallError(f"-n: {source} does not exist (no network units to copy)")
    placed = []
    os.makedirs(destination, exist_ok=True)
    for name in sorted(os.listdir(source)):
        src, dst = os.path.join(source, name), os.path.join(destination, name)
        if os.path.exists(dst):
            continue
        if os.path.isdir(src):
            shutil.copytree(src, dst, symlinks=False)
        else:
            shutil.copy2(src, dst)
        placed.append(f"ROOT:/etc/systemd/network/{name}")
    return placed


def refuse_4kn(disk: str) -> None:
    """CoreOS images carry a 512-byte-sector GPT; a 4Kn disk would need every LBA rewritten
    (coreos/bugs#2109; Fedora CoreOS ships a separate metal4k image). Raises DiskError."""
    sector = blockdev.logical_sector_size(disk)
    if sector != 512:
        raise DiskError(f"{disk} has {sector}-byte logical sectors (4Kn); this image has a 512-byte-sector "
                        "GPT and would not boot. Use a 512e disk/mode or a 4Kn image; nothing written")
