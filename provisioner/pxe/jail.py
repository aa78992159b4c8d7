"""Serve files from a root directory without ever leaving it (TFTP and HTTP /assets share this).

tftpy's own check joins and `abspath`s the name, so a symlink inside the root can point anywhere
(reference/pxe.md §5). Here: NUL and `..` components are refused, an absolute name is taken
relative to the root, the result is resolved with realpath and must stay under the root
(commonpath), and it is opened with O_NOFOLLOW as a regular file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class JailError(Exception):
    """`denied` True: the name tries to leave the root (or is not a file we serve); False: not found."""

    def __init__(self, message: str, denied: bool):
        super().__init__(message)
        self.denied = denied


def resolve_in_jail(root: Path, requested: str) -> Path:
    """The real path of `requested` under `root` (root must already be a realpath); raises JailError."""
    if "\0" in requested:
        raise JailError("NUL in file name", denied=True)
    name = requested.replace("\\", "/")   # Windows-style PXE clients (dnsmasq converts them too)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise JailError("'..' in file name", denied=True)
    if not parts:
        raise JailError("no file name", denied=False)
    candidate = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([str(root), candidate]) != str(root):
        raise JailError("path leaves the served root", denied=True)
    if not os.path.isfile(candidate):
        raise JailError("file not found", denied=False)
    return Path(candidate)


def open_in_jail(root: Path, requested: str):
    """Open a file under root read-only (binary file object); raises JailError."""
    path = resolve_in_jail(root, requested)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise JailError(f"cannot open: {exc.strerror}", denied=exc.errno != errno.ENOENT) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise JailError("not a regular file", denied=True)
    return os.fdopen(fd, "rb")


def open_regular_file(path: Path):
    """Open a file we chose ourselves (not a client's name), following symlinks: Debian's ipxe package
    ships /usr/lib/ipxe/ipxe.efi as a symlink to /boot/ipxe.efi. Raises JailError."""
    try:
        handle = open(os.path.realpath(path), "rb")
    except OSError as exc:
        raise JailError(f"cannot open {path}: {exc.strerror}", denied=exc.errno != errno.ENOENT) from None
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise JailError(f"{path} is not a regular file", denied=True)
    return handle
