"""Files written whole: the one atomic, durable write of the project.

A reader (another process, the next boot, a resumed job) sees either the old file or the new one,
never a mix, and after a crash the rename survives: temp file in the same directory, fsync, rename,
fsync of the directory (the rename is only durable once the directory entry is on disk).

Standard library only, Python >= 3.9 (the installer zipapp bundles core/).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def fsync_path(path: PathLike) -> None:
    """fsync a file or a directory; raises OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: PathLike, data: str | bytes, *, mode: int = 0o644,
                 owner: tuple[int, int] | None = None) -> None:
    """Replace `path` with `data` atomically and durably (parents created, 0755).

    `mode` is applied before the rename, and `owner` (uid, gid) too, so the file never exists
    with the wrong permissions. On any failure the old file is left as it was; raises OSError."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if owner is not None:
                os.fchown(handle.fileno(), owner[0], owner[1])
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_path(target.parent)
