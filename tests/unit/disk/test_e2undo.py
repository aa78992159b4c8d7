"""Reading resize2fs's undo header (pure): which records say 'replay me' and which do not."""

from __future__ import annotations

import struct
import uuid

import pytest

from provisioner.disk.e2undo import HEADER_SIZE, MAGIC, STATE_FINISHED, UndoState, parse_record

BLOCK = 1024
FS_UUID = uuid.UUID("0f6c2e6a-3d0b-4a8e-9a51-2d7f0b6e8c11")


def superblock_copy() -> bytes:
    """A superblock as undo_io stores it: s_magic (0xEF53 at 0x38) inverted, the UUID at 0x68."""
    block = bytearray(BLOCK)
    struct.pack_into("<H", block, 0x38, 0xEF53 ^ 0xFFFF)
    block[0x68:0x78] = FS_UUID.bytes
    return bytes(block)


def undo_file(keys: int, state: int, *, block_size: int = BLOCK, super_at: int = 1) -> bytes:
    header = struct.pack("<8sQQQIIII", MAGIC, keys, super_at, 2, block_size, 4096, 0, state)
    content = header.ljust(block_size, b"\0") + superblock_copy()
    return content


def parse(content: bytes):
    return parse_record(content[:HEADER_SIZE], lambda offset, length: content[offset:offset + length])


def test_interrupted_record_and_its_superblock():
    record = parse(undo_file(keys=7, state=0))
    assert record.state is UndoState.INTERRUPTED and record.keys == 7
    assert struct.unpack_from("<H", record.superblock, 0x38)[0] == 0xEF53  # magic put back
    assert record.fs_uuid == str(FS_UUID)


def test_finished_record():
    assert parse(undo_file(keys=7, state=STATE_FINISHED)).state is UndoState.FINISHED


@pytest.mark.parametrize("content", [
    b"",                                 # created, nothing written yet
    b"\0" * 3 * BLOCK,                   # the zeroed header blocks undo_io lays out first
    b"E2UNDO0",                          # a header cut short
    undo_file(keys=0, state=0),          # a header with no block recorded
])
def test_nothing_recorded_is_empty(content):
    record = parse(content)
    assert record.state is UndoState.EMPTY and record.superblock == b"" and record.fs_uuid == ""


@pytest.mark.parametrize("content, words", [
    (undo_file(keys=3, state=0, block_size=512), "undo block size 512"),
    (undo_file(keys=3, state=0, super_at=0), "superblock copy at block 0"),
    (undo_file(keys=3, state=0)[:BLOCK + 100], "cut short"),
])
def test_inconsistent_headers_raise(content, words):
    with pytest.raises(ValueError, match=words):
        parse(content)
