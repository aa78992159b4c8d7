"""Filesystem images made from directories, none mounted: USR (squashfs), ROOT (ext4), OEM (btrfs).

USR is squashfs: read-only by construction (Flatcar's USR is a read-only btrfs with dm-verity),
compressed (so the 1 GiB slot and the PXE initrd stay small), built in one pass by mksquashfs on
both cores, loop-mountable by this host for tests, and the same file serves the PXE initrd.
"""

from __future__ import annotations

from pathlib import Path

from provisioner.core.commands import require_tool, run
from provisioner.errors import ImageBuildError


def make_squashfs(source: Path, output: Path, compression: str) -> Path:
    require_tool("mksquashfs")
    if output.exists():
        output.unlink()
    argv = ["mksquashfs", str(source), str(output), "-noappend", "-no-progress", "-quiet",
            "-comp", compression, "-processors", "2"]
    if compression == "zstd":
        argv += ["-Xcompression-level", "6"]
    argv += ["-b", "256K"]
    run(argv)
    return output


def make_ext4(output: Path, size_bytes: int, label: str, skeleton: Path | None = None) -> Path:
    """An ext4 image of size_bytes, optionally populated from `skeleton` (mkfs.ext4 -d)."""
    require_tool("mkfs.ext4")
    with open(output, "wb") as handle:
        handle.truncate(size_bytes)
    argv = ["mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0", "-O", "^orphan_file,^metadata_csum_seed"]
    if skeleton is not None:
        argv += ["-d", str(skeleton)]
    run([*argv, str(output)])
    return output


def make_btrfs(output: Path, size_bytes: int, label: str) -> Path:
    require_tool("mkfs.btrfs")
    with open(output, "wb") as handle:
        handle.truncate(size_bytes)
    run(["mkfs.btrfs", "-q", "-f", "-L", label, str(output)])
    return output


def make_root_skeleton(directory: Path) -> Path:
    """ROOT's content in the image: only the top-level layout; the initramfs seeds the rest."""
    directory.mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        path = directory / link
        if not path.is_symlink():
            path.symlink_to(f"usr/{link}")
    for name in ("usr", "dev", "proc", "sys", "run", "tmp", "boot", "oem", "mnt", "media", "srv", "opt"):
        (directory / name).mkdir(exist_ok=True)
    (directory / "tmp").chmod(0o1777)
    return directory


def check_fits(path: Path, limit: int, what: str) -> None:
    size = path.stat().st_size
    if size > limit:
        raise ImageBuildError(f"{what}: {size >> 20} MiB does not fit in {limit >> 20} MiB")
