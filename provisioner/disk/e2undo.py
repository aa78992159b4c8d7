"""resize2fs's undo file (`resize2fs -z FILE`): read what it recorded, and replay it with e2undo.

Why: an offline resize2fs rewrites metadata in place while it moves blocks (it marks the
filesystem with the error flag first, resize/resize2fs.c), so a process killed half-way leaves a
filesystem that e2fsck may or may not repair. With `-z`, e2fsprogs' undo I/O manager copies the old
contents of every block into the undo file before it overwrites the block, so `e2undo` can put the
filesystem back exactly as it was before resize2fs started.

Facts this module relies on (e2fsprogs 1.47, lib/ext2fs/undo_io.c and misc/e2undo.c; checked by
tests/integration/disk/test_e2undo.py against the tools of this machine):
- For every block it has not saved yet, undo_io writes the old contents, then its key block, the
  header and a copy of the current superblock into the undo file, and only then the block itself to
  the device. So after a SIGKILL the file covers every block that reached the device.
- File layout: a 512-byte header in block 0 (magic "E2UNDO02", key count, where the superblock copy
  sits, undo block size, state flags), a copy of the filesystem's superblock (s_magic inverted),
  then key blocks and data. State bit 1 ("finished") is set only when resize2fs closes the
  filesystem after its last write; without it the record is incomplete: the run was interrupted.
- A header-less or empty file means resize2fs was stopped before it wrote anything.
- e2undo refuses (exit 1) when the superblock on the device differs from the copy in the file. After
  a kill that happens in two short windows (right after resize2fs writes the primary superblock,
  before it records the next block), and the record is still complete; `e2undo -f` replays it
  anyway, but also skips e2undo's checksum checks, so it is used only then, and only once the
  filesystem UUID in the copy is the one on the device.
- e2undo exits 0 after replaying an incomplete record and marks the filesystem not clean, so the
  next `e2fsck -f -p` checks it fully (it finds the filesystem from before resize2fs).
"""

from __future__ import annotations

import enum
import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisioner.core.commands import run
from provisioner.core.files import fsync_path
from provisioner.errors import CommandError, DiskError

MAGIC = b"E2UNDO02"
HEADER_SIZE = 512
STATE_FINISHED = 0x1
SUPERBLOCK_OFFSET = 1024  # the primary ext2/3/4 superblock: 1024 bytes at byte 1024 of the filesystem
SUPERBLOCK_SIZE = 1024
# magic, num_keys, super_offset, key_offset, block_size, fs_block_size, sb_crc, state (struct undo_header)
_HEADER = struct.Struct("<8sQQQIIII")
_MAGIC_AT = 0x38  # s_magic in struct ext2_super_block (lib/ext2fs/ext2_fs.h)
_UUID_AT = 0x68  # s_uuid


class UndoState(enum.Enum):
    EMPTY = "empty"  # no file, or nothing recorded: resize2fs changed nothing
    INTERRUPTED = "interrupted"  # blocks recorded, never closed: replay before anything else
    FINISHED = "finished"  # resize2fs closed the filesystem after its last write


@dataclass(frozen=True)
class UndoRecord:
    """What an undo file says about the run that wrote it."""

    state: UndoState
    keys: int = 0
    superblock: bytes = b""  # the copy of the filesystem's superblock, magic restored (empty when EMPTY)

    @property
    def fs_uuid(self) -> str:
        return str(uuid.UUID(bytes=self.superblock[_UUID_AT:_UUID_AT + 16])) if self.superblock else ""


def parse_record(header: bytes, read_block: Callable[[int, int], bytes]) -> UndoRecord:
    """Decode an undo file's header; `read_block(offset, length)` reads the rest of the file.

    Raises ValueError when the header is there but inconsistent (not something a kill leaves)."""
    if len(header) < HEADER_SIZE or header[:8] != MAGIC:
        return UndoRecord(UndoState.EMPTY)
    _magic, keys, super_block, _key_offset, block_size, _fs_block_size, _sb_crc, state = _HEADER.unpack_from(header)
    if not 1024 <= block_size <= 1 << 20 or super_block == 0:
        raise ValueError(f"undo block size {block_size}, superblock copy at block {super_block}")
    copy = bytearray(read_block(super_block * block_size, SUPERBLOCK_SIZE))
    if len(copy) != SUPERBLOCK_SIZE:
        raise ValueError("the superblock copy is cut short")
    magic = struct.unpack_from("<H", copy, _MAGIC_AT)[0] ^ 0xFFFF  # stored inverted (undo_io.c)
    struct.pack_into("<H", copy, _MAGIC_AT, magic)
    finished = bool(state & STATE_FINISHED)
    if keys == 0 and not finished:
        return UndoRecord(UndoState.EMPTY)
    return UndoRecord(UndoState.FINISHED if finished else UndoState.INTERRUPTED, keys, bytes(copy))


def read_record(path: Path) -> UndoRecord:
    """The state of the undo file at `path` (EMPTY when absent). Raises DiskError when it is damaged."""
    try:
        with open(path, "rb") as handle:
            def read_block(offset: int, length: int) -> bytes:
                handle.seek(offset)
                return handle.read(length)

            return parse_record(handle.read(HEADER_SIZE), read_block)
    except FileNotFoundError:
        return UndoRecord(UndoState.EMPTY)
    except (OSError, ValueError) as exc:
        raise DiskError(f"{path}: unreadable resize2fs undo file ({exc})") from None


def read_superblock(device: str) -> bytes:
    """The primary superblock of the ext filesystem on `device`. Raises DiskError."""
    try:
        with open(device, "rb") as handle:
            handle.seek(SUPERBLOCK_OFFSET)
            return handle.read(SUPERBLOCK_SIZE)
    except OSError as exc:
        raise DiskError(f"{device}: cannot read the superblock: {exc.strerror}") from None


def replay(path: Path, device: str) -> UndoRecord:
    """Put the filesystem on `device` back as it was before the interrupted resize2fs of `path`.

    Returns the record it replayed (EMPTY or FINISHED records are left alone). Raises DiskError when
    the file belongs to another filesystem or e2undo fails; the undo file is kept then.
    """
    record = read_record(path)
    if record.state is not UndoState.INTERRUPTED:
        return record
    current = read_superblock(device)
    if current[_UUID_AT:_UUID_AT + 16] != record.superblock[_UUID_AT:_UUID_AT + 16]:
        raise DiskError(
            f"{path}: the undo file was written for the filesystem {record.fs_uuid}, not the one on {device}; "
            "move it away only if you know that filesystem is fine"
        )
    argv = ["e2undo"] + ([] if current == record.superblock else ["-f"]) + [str(path), device]
    try:
        run(argv)
    except CommandError as exc:
        raise DiskError(
            f"{device}: e2undo could not replay {path} (exit {exc.returncode}: {_last_line(exc.stderr)}); "
            f"the filesystem may be half-resized: run 'e2fsck -f {device}' by hand"
        ) from None
    return record


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no message"


def discard(path: Path) -> None:
    """Remove an undo file once it was replayed or its resize finished, durably: resize2fs -z
    appends to an existing file of the same filesystem, so the next resize must start a new one."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_path(path.parent)
