"""Block-device plumbing shared by the installer, the resize helper and the rescue mode.

Standard library only (and Python 3.9 compatible): the installer ships as a zipapp to rescue
systems that have nothing but python3.

Facts this module encodes:
- partition device names: `sda9`, but `nvme0n1p9`, `mmcblk0p9`, `loop0p9` (a digit-ending disk
  name takes a `p`).
- after a table change the kernel must re-read it (BLKRRPART). Some kernels (this build host,
  containers) have no partition-table parser: BLKRRPART succeeds but no `loopNpM` nodes appear.
  `partx -u`/`partx -a` tell the kernel about each partition from user space, so we fall back
  to them whenever the nodes do not match the table.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass, field

from provisioner.core.commands import run
from provisioner.errors import DiskError

BLKRRPART = 0x125F  # linux/fs.h: _IO(0x12, 95)
BLKGETSIZE64 = 0x80081272  # linux/fs.h: _IOR(0x12, 114, size_t)
BLKSSZGET = 0x1268  # logical sector size
BLKPBSZGET = 0x127B  # physical sector size


def partition_path(disk: str, number: int) -> str:
    """/dev/sda + 9 -> /dev/sda9; /dev/nvme0n1 + 9 -> /dev/nvme0n1p9."""
    return f"{disk}p{number}" if disk[-1].isdigit() else f"{disk}{number}"


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def device_size(path: str) -> int:
    """Size in bytes of a block device or a regular file."""
    if is_block_device(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
            return int.from_bytes(buf, "little")
        finally:
            os.close(fd)
    return os.path.getsize(path)


def logical_sector_size(path: str) -> int:
    if not is_block_device(path):
        return 512
    fd = os.open(path, os.O_RDONLY)
    try:
        return int.from_bytes(fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4), "little")
    finally:
        os.close(fd)


@dataclass
class BlockNode:
    """One row of `lsblk --json --bytes` (a disk, a partition, or a holder such as md/dm)."""

    name: str
    path: str
    type: str
    size: int
    fstype: str | None = None
    label: str | None = None
    partlabel: str | None = None
    mountpoints: list = field(default_factory=list)
    children: list = field(default_factory=list)
    read_only: bool = False  # lsblk RO column, when asked for (true/false, or "1"/"0" before util-linux 2.33)

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


_LSBLK_COLUMNS = "NAME,PATH,TYPE,SIZE,FSTYPE,LABEL,PARTLABEL,MOUNTPOINTS"


def node_from_json(row: dict) -> BlockNode:
    """One `lsblk --json --bytes` row (and its children) -> BlockNode; also used on rows read remotely."""
    mountpoints = row.get("mountpoints") or ([row["mountpoint"]] if row.get("mountpoint") else [])
    return BlockNode(
        name=row["name"],
        path=row.get("path") or "/dev/" + row["name"],
        type=row.get("type") or "",
        size=int(row.get("size") or 0),
        fstype=row.get("fstype"),
        label=row.get("label"),
        partlabel=row.get("partlabel"),
        mountpoints=[m for m in mountpoints if m],
        children=[node_from_json(c) for c in row.get("children") or []],
        read_only=row.get("ro") in (True, 1, "1"),
    )


def lsblk(device: str | None = None) -> list[BlockNode]:
    """Read `lsblk --json --bytes` (machine output as data, never prose)."""
    argv = ["lsblk", "--json", "--bytes", "-o", _LSBLK_COLUMNS]
    if device:
        argv.append(device)
    data = json.loads(run(argv).stdout)
    return [node_from_json(row) for row in data.get("blockdevices", [])]


# lsblk TYPEs that, built on a disk, hold it: md RAID levels, LVM/device-mapper, dm-crypt and
# multipath (flatcar-install accepts `mpath` targets since flatcar/init#24).
HOLDER_TYPES = ("raid0", "raid1", "raid4", "raid5", "raid6", "raid10", "linear", "md", "lvm", "dm", "crypt", "mpath")


@dataclass(frozen=True)
class DiskUse:
    """What a host uses its block devices for, besides the lsblk tree: the inputs of `busy_reasons`."""

    mounts: dict[str, str] = field(default_factory=dict)  # source device -> mountpoint (/proc/self/mounts)
    swaps: frozenset[str] = frozenset()  # devices in /proc/swaps
    holders: dict[str, list[str]] = field(default_factory=dict)  # kernel name -> /sys/block/.../holders


def busy_reasons(disk: BlockNode, use: DiskUse) -> list[str]:
    """Why writing `disk` would destroy something in use: mounts, swap, md/dm/LVM/multipath holders.

    The one busy-disk policy, for the installer, the resize commands and the rescue mode (pure: the
    rescue mode feeds it facts gathered on the remote host). Empty when the disk is free. The sysfs
    holders catch what lsblk's tree may not show (an auto-assembled RAID or LVM it cannot name)."""
    reasons: list[str] = []
    nodes = list(disk.walk())
    for node in nodes:
        targets = [m for m in node.mountpoints if m != "[SWAP]"] or \
            ([use.mounts[node.path]] if node.path in use.mounts else [])
        if node.path in use.swaps or "[SWAP]" in node.mountpoints:  # lsblk shows active swap as "[SWAP]"
            reasons.append(f"{node.path} is in use as swap")
        for target in targets:
            reasons.append(f"{node.path} is mounted on {target}")
        if node is not disk and node.type in HOLDER_TYPES:
            reasons.append(f"{node.path} ({node.type}) is built on {disk.path}")
    for name in [disk.name] + [child.name for child in disk.children if child.type == "part"]:
        for holder in use.holders.get(name, []):
            named = any(f"/dev/{holder}" in reason or f"({holder})" in reason for reason in reasons)
            if not named and not any(node.name == holder for node in nodes):
                reasons.append(f"/dev/{holder} holds {name}")
    return reasons


def local_disk_use(disk: str) -> DiskUse:
    """This host's mounts, swaps and the sysfs holders of `disk` and its partitions."""
    mounts: dict[str, str] = {}
    for line in _read_lines("/proc/self/mounts"):
        fields = line.split()
        if len(fields) >= 2 and fields[0].startswith("/dev/"):
            mounts.setdefault(fields[0], fields[1])
    swaps = frozenset(os.path.realpath(line.split()[0]) for line in _read_lines("/proc/swaps")[1:] if line.strip())
    sys_block = f"/sys/block/{os.path.basename(os.path.realpath(disk))}"
    holders = {}
    for name, directory in [(os.path.basename(sys_block), sys_block)] + \
            [(entry, f"{sys_block}/{entry}") for entry in _sys_partitions(sys_block)]:
        found = _listdir(f"{directory}/holders")
        if found:
            holders[name] = found
    return DiskUse(mounts, swaps, holders)


def local_busy_reasons(disk: str) -> list[str]:
    """`busy_reasons` for a disk of this host (lsblk, /proc, sysfs). Raises CommandError (lsblk)."""
    roots = lsblk(disk)
    return busy_reasons(roots[0], local_disk_use(disk)) if roots else []


def _read_lines(path: str) -> list[str]:
    try:
        with open(path) as handle:
            return handle.read().splitlines()
    except OSError:
        return []


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _sys_partitions(sys_block: str) -> list[str]:
    name = os.path.basename(sys_block)
    return [e for e in _listdir(sys_block) if e.startswith(name) and os.path.exists(f"{sys_block}/{e}/partition")]


def disk_of_partition(partition: str) -> str:
    """'/dev/vda9' -> '/dev/vda' through sysfs (nvme0n1p9 and loop0p9 too: no name arithmetic).

    Raises DiskError when the kernel does not know `partition` as a partition."""
    if not is_partition(partition):
        raise DiskError(f"{partition}: not a partition the kernel knows")
    name = os.path.basename(os.path.realpath(partition))
    # /sys/class/block/<part> links into the disk's own directory: .../block/<disk>/<part>
    return "/dev/" + os.path.basename(os.path.dirname(os.path.realpath(f"/sys/class/block/{name}")))


def is_partition(path: str) -> bool:
    """True for /dev/sda1, /dev/nvme0n1p2, /dev/loop0p9 (the kernel knows it as a partition)."""
    real = os.path.realpath(path)
    name = os.path.basename(real)
    return os.path.exists(f"/sys/class/block/{name}/partition")


def kernel_partitions(disk: str) -> dict[int, tuple[int, int]]:
    """Partitions the kernel currently knows for `disk`: number -> (start sector, sectors)."""
    name = os.path.basename(os.path.realpath(disk))
    sys_block = f"/sys/block/{name}"
    result: dict[int, tuple[int, int]] = {}
    for entry in _sys_partitions(sys_block):
        base = f"{sys_block}/{entry}"
        with open(f"{base}/partition") as number, open(f"{base}/start") as start, open(f"{base}/size") as size:
            result[int(number.read())] = (int(start.read()), int(size.read()))
    return result


@dataclass(frozen=True)
class Opener:
    """A process that has a disk, one of its partitions or its image file open."""

    pid: int
    command: str  # /proc/PID/comm: e2fsck, resize2fs, ...
    path: str  # what it has open, as its /proc/PID/fd link names it

    def describe(self) -> str:
        return f"{self.command} (pid {self.pid}) is still running on {self.path}"


def loops_backed_by(image: str) -> list[str]:
    """The loop devices attached to the file `image` (sysfs backing_file), e.g. left by a killed run."""
    wanted = os.path.realpath(image)
    found = []
    for name in _listdir("/sys/block"):
        lines = _read_lines(f"/sys/block/{name}/loop/backing_file")
        if lines and lines[0].removesuffix(" (deleted)") == wanted:
            found.append(f"/dev/{name}")
    return found


def openers(disks: list[str], files: tuple[str, ...] = ()) -> list[Opener]:
    """Processes other than this one holding `disks` (or their partitions) or `files` open.

    Read from /proc/*/fd like fuser(1): block devices match by device number, files by inode. Only
    links under /dev and the files themselves are stat'ed, so a hung network mount elsewhere cannot
    stall the scan. Processes that vanish or that we may not inspect are skipped.
    """
    numbers = set()
    for disk in disks:
        name = os.path.basename(os.path.realpath(disk))
        entries = [f"/sys/block/{name}"] + [f"/sys/block/{name}/{p}" for p in _sys_partitions(f"/sys/block/{name}")]
        for entry in entries:
            lines = _read_lines(f"{entry}/dev")
            if lines:
                major, minor = (int(x) for x in lines[0].split(":"))
                numbers.add(os.makedev(major, minor))
    inodes = set()
    for path in files:
        try:
            info = os.stat(path)
        except OSError:
            continue
        inodes.add((info.st_dev, info.st_ino))
    real_files = {os.path.realpath(path) for path in files}
    found = []
    for pid_text in _listdir("/proc"):
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        fd_dir = f"/proc/{pid_text}/fd"
        for fd in _listdir(fd_dir):
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
                if not (target.startswith("/dev/") or target in real_files):
                    continue
                info = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            held = info.st_rdev in numbers if stat.S_ISBLK(info.st_mode) else (info.st_dev, info.st_ino) in inodes
            if held:
                command = (_read_lines(f"/proc/{pid_text}/comm") or ["?"])[0]
                found.append(Opener(int(pid_text), command, target))
                break
    return found


def _blkrrpart(disk: str) -> bool:
    fd = os.open(disk, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, BLKRRPART)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def reread_partitions(disk: str, expected: dict[int, tuple[int, int]] | None = None, attempts: int = 5) -> None:
    """Make the kernel's view of `disk`'s partitions match its table, and the nodes exist.

    `expected` (number -> (start, sectors)) is what the table now holds; when given, we check the
    kernel agrees and fall back to `partx` when it does not. Retries BLKRRPART because udev or a
    just-closed writer may hold the device for a moment. Raises DiskError if the kernel still
    disagrees (the message says the table on disk is fine and a reboot will pick it up).
    """
    if not is_block_device(disk):
        return
    reread = False
    for attempt in range(attempts):
        if _blkrrpart(disk):
            reread = True
            break
        time.sleep(0.2 * (attempt + 1))
    if reread:
        # Only a successful re-read makes udev events of ours worth waiting for; after a refused one
        # (a partition is mounted) settling would just wait out everyone else's queue (seen: 10 s
        # per call during an emulated boot).
        settle()
        if expected is None or kernel_partitions(disk) == expected:
            if expected is not None or kernel_partitions(disk):
                _wait_for_nodes(disk, kernel_partitions(disk))
                return
    # No in-kernel parser, or a partition in use kept the old view: tell the kernel from user space.
    current = kernel_partitions(disk)
    for number in sorted(set(current) - set(expected or {})):
        run(["partx", "-d", "--nr", str(number), disk], check=False)
    if current:
        run(["partx", "-u", disk], check=False)
    run(["partx", "-a", disk], check=False)
    now = kernel_partitions(disk)
    if reread or set(now) != set(current):
        # Partitions came or went, or the disk is free for udev's own re-read: let udev finish. Not for a
        # resize in place on a disk in use (ROOT grown at first boot): the kernel refuses udev's re-read
        # too, nothing else changes, and settling waited out the whole boot's coldplug queue (10 s of
        # every first boot under emulation).
        settle()
        now = kernel_partitions(disk)
    if expected is not None and now != expected:
        raise DiskError(
            f"{disk}: the partition table on disk is written, but the kernel still sees "
            f"{sorted(now)} instead of {sorted(expected)} (a partition is in use?); reboot to pick it up"
        )
    _wait_for_nodes(disk, now)


def settle() -> None:
    if shutil.which("udevadm"):
        run(["udevadm", "settle", "--timeout=10"], check=False)


def _wait_for_nodes(disk: str, partitions: dict[int, tuple[int, int]], timeout: float = 5.0) -> None:
    """Wait for /dev nodes; create them with mknod if no udev is running (containers, rescue)."""
    deadline = time.monotonic() + timeout
    name = os.path.basename(os.path.realpath(disk))
    for number in partitions:
        path = partition_path(disk, number)
        while not is_block_device(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not is_block_device(path):
            dev_file = f"/sys/block/{name}/{os.path.basename(partition_path('/dev/' + name, number))}/dev"
            with open(dev_file) as handle:
                major, minor = (int(x) for x in handle.read().split(":"))
            os.mknod(path, 0o660 | stat.S_IFBLK, os.makedev(major, minor))


def forget_partitions(disk: str) -> None:
    """Drop all partition nodes of `disk` from the kernel (before the table is overwritten)."""
    if is_block_device(disk) and kernel_partitions(disk):
        run(["partx", "-d", disk], check=False)


def resolve_disk_argument(path: str) -> str:
    """Check `path` names a whole disk (block device) or an image file; refuse a partition."""
    if not os.path.exists(path):
        raise DiskError(f"{path}: no such device or file")
    if is_block_device(path) and is_partition(path):
        raise DiskError(f"{path} is a partition; give the whole disk (e.g. {disk_of_partition(path)})")
    return path
