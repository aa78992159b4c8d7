"""Write a raw image stream to a disk: mapped ranges only, holes zeroed, GPT committed last.

Pipeline: the reader (this thread) fills page-aligned buffers from the decompressor, hashes the
bmap ranges and hands the buffers to writer threads, which `pwrite` them with O_DIRECT (so the
page cache does not balloon and the disk stays busy while the next buffer is read); without
O_DIRECT an fdatasync every 256 MiB bounds the dirty pages. Memory is bounded by the buffer pool
(BUFFERS x CHUNK), whatever the image size.

Crash safety: before any data, the first and last MiB of the disk are zeroed (flatcar-install
zeroes the last 512 KiB for the same reason: stale backup GPTs and ZFS labels). The image's own
GPT regions (PMBR + primary header + entries at the start, backup entries + header at the image
end) are held in memory and written only after everything else is on the disk and every check
(bmap ranges, sha512, signature, stream length) passed. So until the very last write the disk
has no valid GPT: a kill -9, a power cut or a failed check leave a disk that boots nothing and
that `gpt.read_gpt` reports as "no valid GPT".
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import ctypes.util
import fcntl
import hashlib
import logging
import mmap
import os
import queue
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from provisioner.disk import gpt
from provisioner.disk.blockdev import device_size, is_block_device, logical_sector_size
from provisioner.errors import DiskError, InstallError, VerifyError
from provisioner.install.bmap import Bmap, MappedRange

log = logging.getLogger("provisioner.install.writer")

CHUNK = 4 << 20
BUFFERS = 8  # 32 MiB of buffers in all
WRITER_THREADS = 2
SYNC_EVERY = 256 << 20
WIPE_BYTES = 1 << 20
BLKDISCARD = 0x1277  # linux/fs.h _IO(0x12,119)
BLKZEROOUT = 0x127F  # linux/fs.h _IO(0x12,127)
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
HEAD_HOLD = 40 * 512  # PMBR + header + 128 x 128-byte entries = 34 sectors, rounded to 4 KiB
TAIL_HOLD = 33 * 512  # backup entries + backup header
_ZERO_CHUNK = bytes(CHUNK)


def held_regions(image_size: int) -> list[tuple[int, int]]:
    """The byte ranges of the image written last: its primary and backup GPT areas."""
    tail = max(HEAD_HOLD, (image_size - TAIL_HOLD) // 4096 * 4096)
    head = (0, min(HEAD_HOLD, image_size))
    return [head, (tail, image_size)] if tail < image_size else [head]


def image_size_from_head(head: bytes, label: str) -> int:
    """The image size implied by its primary GPT header (backup at the last LBA).

    Raises VerifyError when the stream does not start with a valid GPT (not a disk image).
    """
    header = gpt.parse_header(head[512:1024], 1) if len(head) >= 1024 else None
    if header is None or not header.valid:
        why = "no GPT signature" if header is None else "; ".join(header.problems)
        raise VerifyError(f"{label}: the image does not start with a valid GPT ({why}): not a disk image?")
    array = head[header.entries_lba * 512: header.entries_lba * 512 + gpt.entries_length(header)]
    if len(array) == gpt.entries_length(header) and not gpt.check_entries(header, array).valid:
        raise VerifyError(f"{label}: the image's partition entry array fails its CRC32")
    return (header.alternate_lba + 1) * 512


def hole_checker(bmap: Bmap) -> Callable[[int, int], bool]:
    """A predicate: does [start, end) lie entirely inside one bmap hole (outside the GPT areas)?
    The decompressor uses it to skip frames that would only produce unwritten zeros."""
    holes = subtract(bmap.unmapped(), held_regions(bmap.image_size))
    starts = [start for start, _ in holes]

    def inside_hole(start: int, end: int) -> bool:
        index = bisect.bisect_right(starts, start) - 1
        return index >= 0 and end <= holes[index][1]

    return inside_hole


def subtract(pieces: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Remove `holes` from the byte ranges `pieces` (both lists of (start, end))."""
    result = []
    for start, end in pieces:
        cursor = start
        for h_start, h_end in holes:
            if h_end <= cursor or h_start >= end:
                continue
            if h_start > cursor:
                result.append((cursor, h_start))
            cursor = max(cursor, h_end)
        if cursor < end:
            result.append((cursor, end))
    return result


class Target:
    """The disk (or image file) being written."""

    def __init__(self, path: str, *, direct: bool = True, exclusive: bool = True):
        self.path = path
        self.is_block = is_block_device(path)
        flags = os.O_WRONLY | os.O_CLOEXEC
        try:
            self.fd = os.open(path, flags | (os.O_EXCL if self.is_block and exclusive else 0))
        except OSError as exc:
            if exc.errno == 16:  # EBUSY: the kernel says someone holds it (mount, md, dm)
                raise DiskError(f"{path}: device is busy (mounted or held by md/dm/LVM); nothing written") from None
            raise DiskError(f"{path}: cannot open for writing: {exc.strerror}") from None
        self.direct_fd: int | None = None
        if direct and self.is_block:
            try:
                self.direct_fd = os.open(path, flags | os.O_DIRECT)
            except OSError:
                log.info("%s: O_DIRECT not available, using buffered writes with fdatasync", path)
        self.size = device_size(path)
        self.sector = logical_sector_size(path)
        self._since_sync = 0
        self._lock = threading.Lock()

    def write(self, offset: int, data, aligned_buffer: bool = False) -> None:
        """pwrite all of `data` at `offset`; O_DIRECT when the caller's buffer is page-aligned
        (mmap) and offset and length suit the device. Raises DiskError."""
        view = memoryview(data)
        aligned = aligned_buffer and offset % 4096 == 0 and len(view) % self.sector == 0
        fd = self.direct_fd if (self.direct_fd is not None and aligned) else self.fd
        while view:
            try:
                n = os.pwrite(fd, view, offset)
            except OSError as exc:
                raise DiskError(f"{self.path}: write at byte {offset} failed: {exc.strerror}") from None
            view = view[n:]
            offset += n
        if fd == self.fd:
            with self._lock:
                self._since_sync += len(data)
                due = self._since_sync >= SYNC_EVERY
                if due:
                    self._since_sync = 0
            if due:
                os.fdatasync(self.fd)

    def zero(self, start: int, end: int, policy: str = "zero") -> None:
        """Make [start, end) read as zeros ('zero') or hint it unused ('discard')."""
        if end <= start or policy == "skip":
            return
        if self.is_block:
            request = BLKDISCARD if policy == "discard" else BLKZEROOUT
            try:
                fcntl.ioctl(self.fd, request, struct.pack("QQ", start, end - start))
                return
            except OSError as exc:
                if policy == "discard":
                    log.info("%s: discard not supported (%s); leaving the range as is", self.path, exc.strerror)
                    return
        elif _punch_hole(self.fd, start, end - start):
            return
        self._write_zeros(start, end)

    def _write_zeros(self, start: int, end: int) -> None:
        zeros = bytes(min(CHUNK, end - start))
        while start < end:
            n = min(len(zeros), end - start)
            self.write(start, zeros[:n])
            start += n

    def flush(self) -> None:
        os.fsync(self.fd)
        if self.direct_fd is not None:
            os.fsync(self.direct_fd)

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        for fd in (self.direct_fd, self.fd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.direct_fd = None
        self.fd = -1  # never write through a closed (and maybe reused) descriptor number

    def wipe_gpt(self, image_size: int | None = None) -> None:
        """Zero the first and last MiB of the disk (and the image-end backup GPT area)."""
        self._write_zeros(0, min(WIPE_BYTES, self.size))
        self._write_zeros(max(0, self.size - WIPE_BYTES), self.size)
        if image_size and image_size < self.size:
            self._write_zeros(max(0, image_size - WIPE_BYTES), image_size)
        self.flush()


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    """fallocate(PUNCH_HOLE) on a regular file, via libc (no stdlib wrapper exists)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        result = libc.fallocate(ctypes.c_int(fd), ctypes.c_int(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE),
                                ctypes.c_longlong(offset), ctypes.c_longlong(length))
        return result == 0
    except (OSError, AttributeError):
        return False


@dataclass
class _Job:
    buffer: mmap.mmap | None
    base: int  # image offset of buffer[0]
    pieces: list[tuple[int, int]]  # image byte ranges inside the buffer
    zero: tuple[int, int] | None = None


@dataclass
class WriteResult:
    image_size: int
    written: int = 0  # bytes written from the image
    zeroed: int = 0  # bytes of holes zeroed/discarded
    skipped: int = 0  # bytes of holes left as they were
    held: dict[int, bytes] = field(default_factory=dict)  # offset -> GPT area bytes, written at commit


class WriterPool:
    """Writer threads taking jobs from a bounded queue; buffers come back to `free` when written."""

    def __init__(self, target: Target, policy: str, threads: int = WRITER_THREADS):
        self.target = target
        self.policy = policy
        self.free: queue.Queue[mmap.mmap] = queue.Queue()
        for _ in range(BUFFERS):
            self.free.put(mmap.mmap(-1, CHUNK))
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.error: BaseException | None = None
        self.stopped = False
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                if self.error is None:
                    if job.zero is not None:
                        self.target.zero(job.zero[0], job.zero[1], self.policy)
                    elif job.buffer is not None:
                        for start, end in job.pieces:
                            self.target.write(start, memoryview(job.buffer)[start - job.base: end - job.base], True)
            except BaseException as exc:  # noqa: BLE001 - reported to the reader via check()
                self.error = exc
            finally:
                if job.buffer is not None:
                    self.free.put(job.buffer)

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def take_buffer(self) -> mmap.mmap:
        while True:
            try:
                return self.free.get(timeout=0.5)
            except queue.Empty:
                self.check()
                if self.stopped:
                    raise InstallError("writer stopped") from None

    def close(self) -> None:
        """Wait for every queued job; raise the first writer error."""
        for _ in self._threads:
            self.jobs.put(None)
        for thread in self._threads:
            thread.join()
        self.check()


# What the decompressing thread hands to the copying one: a filled buffer and its length, (None, n)
# for n bytes of a hole it skipped, (buffer, 0) at the end of the stream, or the exception it raised.
Piece = tuple[Optional[mmap.mmap], int]
ReadPiece = Callable[[memoryview], tuple[str, int]]


def copy_stream(
    read_piece: ReadPiece,
    target: Target,
    bmap: Bmap | None,
    *,
    policy: str = "zero",
    verify_ranges: bool = True,
    label: str = "image",
    on_progress: Callable[[int, int, int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> WriteResult:
    """Copy the raw image read through `read_piece` (decompress.DecompressStream) onto `target`, except its GPT
    areas, which are returned in `WriteResult.held` for `commit()`.

    `bmap` None means "every block mapped"; then all-zero chunks become zero/discard requests.
    `on_start(image_size)` runs once the stream head proved to be a disk image that fits, just
    before the first write (the installer wipes the old GPTs there).
    Raises VerifyError (range checksum, size mismatch, no GPT in the image), DiskError.
    """
    pool = WriterPool(target, policy)
    ready: queue.Queue[Piece | BaseException] = queue.Queue()
    producer = threading.Thread(target=_produce, args=(read_piece, pool, ready), daemon=True)
    producer.start()
    try:
        buffer, n = _next(ready)
        if buffer is None:
            raise VerifyError(f"{label}: the stream starts inside a hole (no GPT at the start?)")
        image_size = _checked_image_size(bytes(memoryview(buffer)[: min(n, HEAD_HOLD)]), target, bmap, label)
        if on_start is not None:
            on_start(image_size)
        copy = _StreamCopy(image_size, pool, bmap, policy=policy, verify_ranges=verify_ranges, label=label)
        last_report = 0.0
        while n:
            if buffer is None:
                copy.skipped_hole(n)
            else:
                copy.piece(buffer, n)
                now = time.monotonic()
                if on_progress is not None and now - last_report >= 0.2:
                    last_report = now
                    on_progress(copy.position, image_size, copy.result.written)
            pool.check()
            buffer, n = _next(ready)
        if buffer is not None:
            pool.free.put(buffer)
        result = copy.finish()
        if on_progress is not None:
            on_progress(copy.position, image_size, result.written)
        return result
    finally:
        pool.stopped = True
        pool.close()
        producer.join(timeout=5)


def _produce(read_piece: ReadPiece, pool: WriterPool, ready: queue.Queue[Piece | BaseException]) -> None:
    """Decompress into free buffers ahead of the hashing/dispatching thread (the decompressors
    release the GIL, so this overlaps them with the sha256 of the bmap ranges)."""
    try:
        buffer = None
        while not pool.stopped:
            if buffer is None:
                buffer = pool.take_buffer()
            kind, n = read_piece(memoryview(buffer))
            if kind == "skip":
                ready.put((None, n))  # the buffer stays ours for the next piece
                continue
            ready.put((buffer, n))
            buffer = None
            if n == 0:
                return
    except BaseException as exc:  # noqa: BLE001 - re-raised by the consumer
        ready.put(exc)


def _next(ready: queue.Queue[Piece | BaseException]) -> Piece:
    item = ready.get()
    if isinstance(item, BaseException):
        raise item
    return item


def _checked_image_size(head: bytes, target: Target, bmap: Bmap | None, label: str) -> int:
    """The image size from the stream's GPT, checked against the bmap and the target.

    Raises VerifyError (no GPT, bmap disagrees), DiskError (the image does not fit; nothing written)."""
    image_size = image_size_from_head(head, label)
    if bmap is not None and bmap.image_size != image_size:
        raise VerifyError(f"{label}: the bmap says {bmap.image_size} bytes but the image's GPT ends at {image_size}")
    if image_size > target.size:
        raise DiskError(f"{target.path}: {target.size} bytes is smaller than the image ({image_size} bytes); "
                        "nothing written")
    return image_size


class _StreamCopy:
    """The copying side of copy_stream, one piece of the image at a time: keeps the GPT areas for
    commit(), picks the byte ranges to write (the bmap's, or the non-zero chunks without one),
    checks each bmap range's checksum as its last byte passes, and queues the writes and the
    zeroing of holes on the writer pool."""

    def __init__(self, image_size: int, pool: WriterPool, bmap: Bmap | None, *, policy: str,
                 verify_ranges: bool, label: str) -> None:
        self.image_size = image_size
        self.pool = pool
        self.policy = policy
        self.checksum_type = (bmap.checksum_type if verify_ranges and bmap is not None else None) or ""
        self.label = label
        self.result = WriteResult(image_size)
        self.position = 0
        self.held = held_regions(image_size)
        self._held_data = {start: bytearray(end - start) for start, end in self.held}
        self._ranges: list[MappedRange] | None = list(bmap.ranges) if bmap is not None else None
        self._index = 0  # the first bmap range not yet fully read
        self._digest: Any = None  # hashlib object of the range being read
        if bmap is not None:  # holes first: one request each (BLKZEROOUT is cheap on SSD/NVMe/loop)
            for start, end in subtract(bmap.unmapped(), self.held):
                self._clear(start, end)

    def skipped_hole(self, n: int) -> None:
        """The decompressor skipped `n` bytes it knew to be a hole: nothing mapped or held may be in them."""
        end = self.position + n
        ranges = self._ranges
        if (ranges is not None and self._index < len(ranges) and ranges[self._index].start < end) or \
                subtract([(self.position, end)], self.held) != [(self.position, end)]:
            raise InstallError(f"{self.label}: internal error: skipped bytes {self.position}-{end} are mapped")
        self.position = end

    def piece(self, buffer: mmap.mmap, n: int) -> None:
        """Take the next `n` bytes of the image, in `buffer` (handed on to a writer, or back to the pool)."""
        end = self.position + n
        if end > self.image_size:
            raise VerifyError(f"{self.label}: the stream is longer than the image size {self.image_size} "
                              "(corrupt image?)")
        view = memoryview(buffer)[:n]
        self._keep_held(view, end)
        pieces = subtract(self._mapped_pieces(view, end), self.held)
        if pieces:
            self.pool.jobs.put(_Job(buffer, self.position, pieces))
            self.result.written += sum(stop - start for start, stop in pieces)
        else:
            self.pool.free.put(buffer)
        self.position = end

    def finish(self) -> WriteResult:
        """The result once the stream ended. Raises VerifyError when it ended early."""
        if self.position != self.image_size:
            raise VerifyError(f"{self.label}: the stream ended after {self.position} of {self.image_size} bytes "
                              "(truncated image)")
        if self._ranges is not None and self._index < len(self._ranges):
            missing = self._ranges[self._index]
            raise VerifyError(f"{self.label}: the stream ended before bmap range {missing.start}-{missing.end}")
        self.result.held = {start: bytes(data) for start, data in self._held_data.items()}
        self.result.written += sum(len(data) for data in self.result.held.values())
        return self.result

    def _keep_held(self, view: memoryview, end: int) -> None:
        for start, stop in self.held:
            lo, hi = max(start, self.position), min(stop, end)
            if lo < hi:
                self._held_data[start][lo - start: hi - start] = view[lo - self.position: hi - self.position]

    def _mapped_pieces(self, view: memoryview, end: int) -> list[tuple[int, int]]:
        """The byte ranges of [position, end) to write."""
        if self._ranges is None:
            if view != _ZERO_CHUNK[: len(view)]:
                return [(self.position, end)]
            for start, stop in subtract([(self.position, end)], self.held):
                self._clear(start, stop)
            return []
        return self._bmap_pieces(self._ranges, view, end)

    def _bmap_pieces(self, ranges: list[MappedRange], view: memoryview, end: int) -> list[tuple[int, int]]:
        pieces = []
        while self._index < len(ranges) and ranges[self._index].start < end:
            mapped = ranges[self._index]
            lo, hi = max(mapped.start, self.position), min(mapped.end, end)
            if lo < hi:
                pieces.append((lo, hi))
                if self.checksum_type and mapped.checksum:
                    if lo == mapped.start:
                        self._digest = hashlib.new(self.checksum_type)
                    self._digest.update(view[lo - self.position: hi - self.position])
            if mapped.end > end:
                break  # the range goes on in the next piece
            self._check_range(mapped)
            self._index += 1
        return pieces

    def _check_range(self, mapped: MappedRange) -> None:
        if self.checksum_type and mapped.checksum and self._digest is not None:
            if self._digest.hexdigest() != mapped.checksum.lower():
                raise VerifyError(f"{self.label}: bmap checksum mismatch for bytes {mapped.start}-{mapped.end} "
                                  "(corrupt image or wrong bmap)")
            self._digest = None

    def _clear(self, start: int, end: int) -> None:
        """A hole of the image: queue its zeroing (or discard), or leave it (policy skip)."""
        if self.policy == "skip":
            self.result.skipped += end - start
        else:
            self.pool.jobs.put(_Job(None, 0, [], (start, end)))
            self.result.zeroed += end - start


def commit(target: Target, result: WriteResult) -> None:
    """Flush the data, then write the held GPT areas: backup first, primary last (as GRUB's
    gptprio writes them), each followed by a flush. Raises DiskError."""
    target.flush()
    for start in sorted(result.held, reverse=True):
        target.write(start, result.held[start])
        target.flush()
