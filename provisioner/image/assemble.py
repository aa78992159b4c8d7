"""Assemble the raw GPT disk image: its partition table (partition_table.py, sgdisk on a sparse
file), then each partition's filesystem image copied to its offset, skipping zero blocks so the
file stays sparse (what bmaptool later maps and the installer skips).
"""

from __future__ import annotations

import os
from pathlib import Path

from provisioner.core.commands import run
from provisioner.errors import ImageBuildError
from provisioner.image.partition_table import ImagePartitionTable, sgdisk_argv

BLOCK = 1 << 20


def copy_sparse(source: Path, target_fd: int, offset: int) -> int:
    """Write source's non-zero 1 MiB blocks at offset; returns the bytes written."""
    written = 0
    zero = bytes(BLOCK)
    with open(source, "rb") as handle:
        position = offset
        while block := handle.read(BLOCK):
            if block != zero[: len(block)]:
                os.pwrite(target_fd, block, position)
                written += len(block)
            position += len(block)
    return written


def assemble_disk(table: ImagePartitionTable, image: Path, contents: dict[str, Path]) -> Path:
    """Write `image` from the table and {partition label: filesystem image}; raises ImageBuildError
    when a filesystem image is bigger than its partition."""
    image.parent.mkdir(parents=True, exist_ok=True)
    if image.exists():
        image.unlink()
    with open(image, "wb") as handle:
        handle.truncate(table.size_bytes)

    run(sgdisk_argv(table, str(image)))
    fd = os.open(image, os.O_WRONLY)
    try:
        for label, source in contents.items():
            part = table.by_label(label)
            size = source.stat().st_size
            if size > part.size_bytes:
                raise ImageBuildError(f"assemble: the {label} filesystem ({size >> 20} MiB) does not fit its "
                                      f"{part.size_bytes >> 20} MiB partition: raise partitions_mib.{label}")
            copy_sparse(source, fd, part.offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return image
