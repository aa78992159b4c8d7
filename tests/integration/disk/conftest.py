"""Fixtures for the resize helper: CoreOS-layout disks built with the real sgdisk, a real ext4
ROOT (written through the kernel, so resize2fs has to move real blocks) and a sha256 manifest.

The template images are made once per session: a 2 GiB ROOT whose low half was taken by a
preallocated filler while the data files were written (then the filler was deleted), so the
data lives above 1 GiB and a shrink to 1 GiB must relocate it. `template` holds ~200 MiB of
files; `small_template` ~45 MiB, for the tests that repeat a whole job many times. Each test gets
a sparse copy, extended to a bigger "disk" as when an image is written to a larger drive (the
backup GPT then sits mid-disk, as flatcar-install leaves it).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.disk import blockdev, layout
from provisioner.disk.gpt import partition_layout, read_gpt
from provisioner.disk.table import DiskTable
from tests.fixtures.system import need_root

REPO = Path(__file__).resolve().parents[3]
MiB = 1 << 20
GiB = 1 << 30
IMAGE_SIZE = 2 * GiB + 64 * MiB  # the "image": small partitions, then a 2 GiB ROOT, then the backup GPT
DISK_SIZE = 4 * GiB  # the "disk" it is written to
ROOT_START = 114688  # sectors: 56 MiB, 4096-aligned like Flatcar's starts
ROOT_SIZE = 2 * GiB
ROOT_ATTRIBUTES = 1 << 60  # any type-specific bit: must survive every rewrite

# (number, label, type, start sector, size, partuuid, attributes): the CoreOS layout scaled down.
LAYOUT = (
    (1, "EFI-SYSTEM", layout.TYPE_EFI, 4096, 8 * MiB, None, 0),
    (2, "BIOS-BOOT", layout.TYPE_BIOS_BOOT, 20480, 1 * MiB, None, 0),
    (3, "USR-A", layout.TYPE_USR, 24576, 16 * MiB, layout.USR_A_PARTUUID,
     layout.encode_boot_attributes(layout.BootAttributes(priority=1, tries=0, successful=True))),
    (4, "USR-B", layout.TYPE_USR, 57344, 16 * MiB, layout.USR_B_PARTUUID, 0),
    (6, "OEM", layout.TYPE_LINUX_DATA, 90112, 8 * MiB, None, 0),
    (7, "OEM-CONFIG", layout.TYPE_RESERVED, 106496, 4 * MiB, None, 0),
    (9, "ROOT", layout.TYPE_RESIZE, ROOT_START, ROOT_SIZE, None, ROOT_ATTRIBUTES),
)


def disk_table(path: str) -> DiskTable:
    """The resize planner's view of the GPT of `path`, read as `provisioner disk` reads it."""
    return DiskTable.from_gpt(read_gpt(path, require_valid=False), path)


def run(*argv, check: bool = True, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=check, env=env, timeout=timeout)


def cli_env(state: Path, fault: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PROVISIONER_STATE_DIR=str(state))
    env.pop("PROVISIONER_FAULT", None)
    if fault:
        env["PROVISIONER_FAULT"] = fault
    return env


def provisioner(*args: str, state: Path, fault: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real CLI in a child process (so a fault-injected SIGKILL kills only it)."""
    return subprocess.run(
        [sys.executable, "-m", "provisioner.cli.main", *map(str, args)],
        capture_output=True, text=True, env=cli_env(state, fault), timeout=timeout,
    )


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen:
    """Start the real CLI as the leader of a process group of its own (what a login session or a
    service is), so the test can kill it together with its e2fsck/resize2fs children."""
    return subprocess.Popen(
        [sys.executable, "-m", "provisioner.cli.main", *map(str, args)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def kill_group_after(process: subprocess.Popen, delay: float) -> int | None:
    """SIGKILL the whole process group of `process` after `delay` s (a power cut for the job, or a dying
    SSH session taking its children along). Returns the exit code if it finished before, else None."""
    try:
        return process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None


def in_private_mount_ns(actions: list) -> list:
    """Run nsrun.py actions (mount, CLI, hash...) in a mount namespace of our own (see nsrun.py)."""
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-m", "tests.integration.disk.nsrun"],
        input=json.dumps(actions), capture_output=True, text=True, cwd=REPO, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 0, f"nsrun failed (exit {proc.returncode}): {proc.stderr}"
    return json.loads(proc.stdout)


def make_table(image: Path) -> None:
    argv = ["sgdisk", "-a", "1", "-U", layout.MAGIC_DISK_GUID]
    for number, label, type_guid, start, size, partuuid, attributes in LAYOUT:
        argv += [f"-n={number}:{start}:{start + size // 512 - 1}", f"-t={number}:{type_guid}", f"-c={number}:{label}"]
        if partuuid:
            argv.append(f"-u={number}:{partuuid}")
        if attributes:
            argv.append(f"-A={number}:=:{attributes:016x}")
    run(*argv, str(image))


def attach(image: Path) -> str:
    """losetup + partition nodes (partx: this kernel has no table parser)."""
    loop = run("losetup", "--find", "--show", "--partscan", str(image)).stdout.strip()
    blockdev.reread_partitions(loop, partition_layout(read_gpt(loop).entries))
    return loop


def detach(loop: str) -> None:
    run("umount", "-l", blockdev.partition_path(loop, 9), check=False)
    blockdev.forget_partitions(loop)
    run("losetup", "-d", loop, check=False)


def detach_all(image: Path) -> None:
    """Detach every loop device on `image` (a SIGKILLed CLI leaves its own behind)."""
    out = run("losetup", "-j", str(image), "-O", "NAME", "-n", check=False).stdout
    for loop in out.split():
        detach(loop)


def write_files(root: Path, seed: int = 9, small: bool = False) -> dict[str, str]:
    """About 200 MiB (small: 45 MiB) of incompressible files in nested dirs; returns the sha256 manifest."""
    rng = random.Random(seed)
    manifest = {}
    if small:
        sizes = [16 * MiB, 8 * MiB] + [2 * MiB] * 8 + [rng.randrange(1, 200_000) for _ in range(60)]
    else:
        sizes = [64 * MiB, 32 * MiB] + [4 * MiB] * 20 + [rng.randrange(1, 200_000) for _ in range(150)]
    for index, size in enumerate(sizes):
        rel = f"d{index % 7}/sub{index % 3}/file{index:03d}.bin"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(size)
        path.write_bytes(data)
        manifest[rel] = hashlib.sha256(data).hexdigest()
    return manifest


def hash_tree(root: Path) -> dict[str, str]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@dataclass
class Template:
    image: Path
    manifest: dict[str, str]


def build_template(directory: Path, *, small: bool) -> Template:
    need_root()
    for tool in ("sgdisk", "e2fsck", "resize2fs", "e2undo", "mkfs.ext4", "mkfs.btrfs", "partx", "losetup"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run 'make setup'", pytrace=False)
    image = directory / "coreos.img"
    with open(image, "wb") as handle:
        handle.truncate(IMAGE_SIZE)
    make_table(image)
    loop = attach(image)
    mnt = directory / "mnt"
    mnt.mkdir()
    try:
        root = blockdev.partition_path(loop, 9)
        run("mkfs.ext4", "-q", "-L", "ROOT", root)
        # Take the low half first, so the files land high and a shrink must move them.
        _, _, manifest, _, _ = in_private_mount_ns([
            ["mount", root, str(mnt), "rw"],
            ["fallocate", str(mnt / "filler"), 1100 * MiB],
            ["write_files", str(mnt), 9, small],
            ["rm", str(mnt / "filler")],
            ["umount", str(mnt)],
        ])
    finally:
        detach(loop)
    # Flush the loop device's writes to the file before `cp --sparse` looks for holes in it.
    with open(image, "rb") as handle:
        os.fsync(handle.fileno())
    return Template(image, manifest)


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Template:
    return build_template(tmp_path_factory.mktemp("disk-template"), small=False)


@pytest.fixture(scope="session")
def small_template(tmp_path_factory) -> Template:
    return build_template(tmp_path_factory.mktemp("disk-template-small"), small=True)


@dataclass
class ScratchDisk:
    image: Path
    manifest: dict[str, str]
    state: Path
    work: Path
    loop: str | None = None

    def attach(self) -> str:
        self.loop = attach(self.image)
        return self.loop

    def detach(self) -> None:
        if self.loop:
            detach(self.loop)
            self.loop = None

    @property
    def target(self) -> str:
        """What to pass to the CLI: the loop device when attached, else the image file."""
        return self.loop or str(self.image)

    def cli(self, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
        return provisioner(*args, state=self.state, fault=fault)

    def table_bytes(self) -> bytes:
        """The bytes of both GPT copies (first 34 sectors, the backup where the primary says, the end)."""
        table = disk_table(str(self.image))
        size = os.path.getsize(self.image)
        with open(self.image, "rb") as handle:
            head = handle.read(34 * 512)
            handle.seek(size - 33 * 512)
            tail = handle.read()
            handle.seek((table.last_usable + 1) * 512)
            backup = handle.read(33 * 512)
        return head + backup + tail


def scratch_disk(template: Template, directory: Path) -> ScratchDisk:
    """A copy of the template on a bigger disk (sparse file) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    image = directory / "disk.img"
    run("cp", "--sparse=always", template.image, image)
    with open(image, "r+b") as handle:
        handle.truncate(DISK_SIZE)
    return ScratchDisk(image, dict(template.manifest), directory / "state", directory)


@pytest.fixture
def disk(template, tmp_path) -> ScratchDisk:
    """A scratch disk for one test; detached in teardown."""
    test_disk = scratch_disk(template, tmp_path)
    yield test_disk
    test_disk.detach()
    detach_all(test_disk.image)


def btrfs_root(disk: ScratchDisk) -> tuple[str, str, Path]:
    """Attach the disk and reformat its ROOT as btrfs (Ignition can do that); returns the loop
    device, ROOT's partition and an empty directory to mount it on."""
    loop = disk.attach()
    root = blockdev.partition_path(loop, 9)
    run("mkfs.btrfs", "-q", "-f", "-L", "ROOT", root)
    mnt = disk.work / "root"
    mnt.mkdir()
    return loop, root, mnt


def check_disk(disk: ScratchDisk, expected: dict[int, tuple[int, int]], *, fs_check: bool = True) -> None:
    """After an operation: table as planned (our reader), sgdisk -v clean with the backup at the end,
    e2fsck -fn clean on ROOT, every file's sha256 unchanged."""
    table = disk_table(str(disk.image))
    got = {p.number: (p.start, p.end) for p in table.partitions}
    assert got == expected, f"table differs from the plan: {got} != {expected}"
    assert table.backup_at_end and not table.problems, table.problems
    verify = run("sgdisk", "-v", disk.image)
    assert "No problems found" in verify.stdout, verify.stdout
    root = table.partition(9)
    assert (root.name, root.type_guid, root.attributes) == ("ROOT", layout.TYPE_RESIZE, ROOT_ATTRIBUTES)
    usr_a = table.partition(3)
    assert usr_a.partuuid == layout.USR_A_PARTUUID and usr_a.attributes == LAYOUT[2][6]
    if fs_check:
        check_root_fs(disk)


def check_root_fs(disk: ScratchDisk) -> None:
    was_attached = disk.loop is not None
    loop = disk.loop or disk.attach()
    mnt = disk.work / "check-mnt"
    mnt.mkdir(exist_ok=True)
    try:
        root = blockdev.partition_path(loop, 9)
        fsck = run("e2fsck", "-fn", root, check=False)
        assert fsck.returncode == 0, f"e2fsck -fn: exit {fsck.returncode}\n{fsck.stdout}\n{fsck.stderr}"
        _, found = in_private_mount_ns([["mount", root, str(mnt), "ro,noload"], ["hash", str(mnt)]])
        assert found == disk.manifest, "file contents changed"
    finally:
        if not was_attached:
            disk.detach()


def root_uuid(disk: ScratchDisk) -> str:
    return disk_table(str(disk.image)).partition(9).partuuid
