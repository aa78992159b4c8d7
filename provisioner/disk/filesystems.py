"""Filesystem probing and the filesystem tools the resize helper runs (e2fsck, resize2fs, mkfs).

Facts: resize2fs sizes without a unit are filesystem blocks, so we always pass an explicit `K`
(shared/reference/installer.md §6 "Units"); e2fsck exit codes are a bit mask (0 clean, 1 fixed,
2 fixed and reboot, 4 left uncorrected, 8 operational error: e2fsck(8)).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from provisioner.core.commands import run
from provisioner.disk.plan import FsInfo
from provisioner.errors import CommandError, DiskError


def mountpoint_of(device: str) -> str | None:
    """Where `device` is mounted (first match in /proc/self/mountinfo), or None.

    Matched by major:minor, or by the mount source: btrfs reports an anonymous 0:N device in
    the major:minor field (proc(5) mountinfo; fs/btrfs uses anonymous bdevs).
    """
    try:
        rdev = os.stat(device).st_rdev
    except OSError:
        return None
    wanted = f"{os.major(rdev)}:{os.minor(rdev)}"
    real = os.path.realpath(device)
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) < 5:
                continue
            source = fields[fields.index("-") + 2] if "-" in fields[5:] else ""
            if fields[2] == wanted or (source.startswith("/") and os.path.realpath(source) == real):
                return fields[4].replace("\\040", " ")
    return None


def _blkid(device: str) -> dict[str, str]:
    # -p: probe the device itself, not blkid's cache (which may predate our changes).
    proc = run(["blkid", "-p", "-o", "export", device], check=False)
    if proc.returncode not in (0, 2):
        raise DiskError(f"{device}: blkid failed: {proc.stderr.strip()}")
    values = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


def _ext4_header(device: str) -> dict[str, str]:
    proc = run(["dumpe2fs", "-h", device], check=False)
    if proc.returncode != 0:
        raise DiskError(f"{device}: cannot read the ext4 superblock: {proc.stderr.strip().splitlines()[-1:]}")
    values = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    return values


def ext4_minimum(device: str, block_size: int) -> int:
    """resize2fs -P: the estimated minimum size in bytes (0 if resize2fs cannot tell)."""
    proc = run(["resize2fs", "-P", device], check=False)
    match = re.search(r"minimum size of the filesystem:\s*(\d+)", proc.stdout)
    return int(match.group(1)) * block_size if match else 0


def probe(device: str, *, minimum: bool = False) -> FsInfo:
    """What filesystem `device` holds, its size, used space and mount point.

    `minimum` also asks resize2fs -P (needed before a shrink). Raises DiskError when the
    superblock of a recognised ext4 cannot be read.
    """
    info = _blkid(device)
    fstype = info.get("TYPE")
    mountpoint = mountpoint_of(device)
    label = info.get("LABEL")
    if fstype in ("ext2", "ext3", "ext4"):
        header = _ext4_header(device)
        block_size = int(header["Block size"])
        blocks = int(header["Block count"])
        free = int(header["Free blocks"])
        used = (blocks - free) * block_size
        if mountpoint:
            stat = os.statvfs(mountpoint)
            used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
        return FsInfo(
            fstype="ext4" if fstype == "ext4" else fstype,
            size_bytes=blocks * block_size,
            block_size=block_size,
            used_bytes=used,
            min_bytes=ext4_minimum(device, block_size) if minimum else 0,
            mountpoint=mountpoint,
            label=label,
        )
    if fstype and mountpoint:
        stat = os.statvfs(mountpoint)
        return FsInfo(
            fstype=fstype,
            size_bytes=stat.f_blocks * stat.f_frsize,
            block_size=stat.f_frsize,
            used_bytes=(stat.f_blocks - stat.f_bfree) * stat.f_frsize,
            mountpoint=mountpoint,
            label=label,
        )
    return FsInfo(fstype=fstype, mountpoint=mountpoint, label=label)


def check_ext4(device: str) -> None:
    """e2fsck -f -p (preen: fix what is safe). Raises DiskError if problems are left."""
    proc = run(["e2fsck", "-f", "-p", device], check=False)
    if proc.returncode & ~1:  # 0 clean, 1 errors corrected; anything else needs a human
        last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
        raise DiskError(
            f"{device}: e2fsck -f -p exited {proc.returncode} ({last[0]}); "
            f"run 'e2fsck -f {device}' by hand, then run the same command again"
        )


def resize(device: str, fstype: str, size_bytes: int | None, mountpoint: str | None, *,
           undo: Path | None = None) -> None:
    """Resize a filesystem to `size_bytes` (None: fill its partition). Raises CommandError.

    `undo`: resize2fs's undo file (`-z`, offline ext only; see provisioner/disk/e2undo.py)."""
    if fstype in ("ext2", "ext3", "ext4"):
        argv = ["resize2fs"] + (["-z", str(undo)] if undo is not None and not mountpoint else []) + [device]
        if size_bytes is not None:
            argv.append(f"{size_bytes // 1024}K")
        try:
            run(argv)
        except CommandError as exc:
            # The kernel's EXT4_IOC_RESIZE_FS wants CAP_SYS_RESOURCE (fs/ext4/ioctl.c); containers often drop it.
            if mountpoint and "Permission denied" in exc.stderr:
                raise DiskError(
                    f"{device}: online resize refused by the kernel (this process lacks CAP_SYS_RESOURCE); "
                    f"the partition is grown: unmount {mountpoint} and run grow again to finish offline"
                ) from None
            raise
    elif fstype == "xfs" and mountpoint:
        run(["xfs_growfs", mountpoint])
    elif fstype == "btrfs" and mountpoint:
        run(["btrfs", "filesystem", "resize", "max", mountpoint])
    else:
        raise DiskError(f"{device}: cannot resize {fstype} {'online' if mountpoint else 'offline'}")


def make(device: str, fstype: str, label: str) -> None:
    """Create a filesystem (ext4, xfs, btrfs or swap) labelled `label`; 'none' erases old signatures.

    Raises DiskError when the tool fails.
    """
    argv = {
        "ext4": ["mkfs.ext4", "-q", "-F", "-L", label, device],
        "xfs": ["mkfs.xfs", "-q", "-f", "-L", label[:12], device],  # xfs labels hold 12 bytes
        "btrfs": ["mkfs.btrfs", "-q", "-f", "-L", label, device],
        "swap": ["mkswap", "-L", label, device],
        "none": ["wipefs", "-a", "-q", device],
    }.get(fstype)
    if argv is None:
        raise DiskError(f"{device}: cannot make a {fstype!r} filesystem")
    try:
        run(argv)
    except CommandError as exc:
        raise DiskError(f"{device}: {argv[0]} failed: {exc}") from None
