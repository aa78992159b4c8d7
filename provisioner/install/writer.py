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
from typing import Callable

from provisioner.disk import gpt
from provisioner.disk.blockdev import device_size, is_block_device, logical_sector_size
from provisioner.errors import DiskError, InstallError, VerifyError
from provisioner.install.bmap import Bmap

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
        self.written = 0
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
                    else:
                        for start, end in job.pieces:
                            self.target.write(start, memoryview(job.buffer)[start - job.base: end - job.base], True)
                            self.written += end - start
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


def copy_stream(
    read_piece: Callable[[memoryview], tuple[str, int]],
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
    ready: queue.Queue = queue.Queue()
    producer = threading.Thread(target=_produce, args=(read_piece, pool, ready), daemon=True)
    producer.start()
    try:
        return _copy(ready, target, bmap, pool, policy, verify_ranges, label, on_progress, on_start)
    finally:
        pool.stopped = True
        pool.close()
        producer.join(timeout=5)


def _produce(read_piece, pool: WriterPool, ready: queue.Queue) -> None:
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


def _next(ready: queue.Queue):
    item = ready.get()
    if isinstance(item, BaseException):
        raise item
    return item


def _copy(ready, target, bmap, pool, policy, verify_ranges, label, on_progress, on_start) -> WriteResult:
    buffer, n = _next(ready)
    if buffer is None:
        raise VerifyError(f"{label}: the stream starts inside a hole (no GPT at the start?)")
    view = memoryview(buffer)
    image_size = image_size_from_head(bytes(view[: min(n, HEAD_HOLD)]), label)
    if bmap is not None and bmap.image_size != image_size:
        raise VerifyError(f"{label}: the bmap says {bmap.image_size} bytes but the image's GPT ends at {image_size}")
    if image_size > target.size:
        raise DiskError(f"{target.path}: {target.size} bytes is smaller than the image ({image_size} bytes); "
                        "nothing written")
    if on_start is not None:
        on_start(image_size)
    result = WriteResult(image_size)
    held = held_regions(image_size)
    held_data = {start: bytearray(end - start) for start, end in held}
    ranges = list(bmap.ranges) if bmap is not None else None

    # Holes first: one request each (BLKZEROOUT is cheap on SSD/NVMe/loop), outside the held areas.
    if bmap is not None:
        for start, end in subtract(bmap.unmapped(), held):
            if policy == "skip":
                result.skipped += end - start
            else:
                pool.jobs.put(_Job(None, 0, [], (start, end)))
                result.zeroed += end - start

    zero_chunk = bytes(CHUNK)
    index = 0
    digest = None
    position = 0
    last_report = 0.0
    while n:
        if buffer is None:  # a hole the decompressor skipped: nothing mapped or held in it
            end = position + n
            if (ranges is not None and index < len(ranges) and ranges[index].start < end) or \
                    subtract([(position, end)], held) != [(position, end)]:
                raise InstallError(f"{label}: internal error: skipped bytes {position}-{end} are mapped")
            position = end
            buffer, n = _next(ready)
            view = memoryview(buffer) if buffer is not None else view
            continue
        chunk_end = position + n
        if chunk_end > image_size:
            raise VerifyError(f"{label}: the stream is longer than the image size {image_size} (corrupt image?)")
        for start, end in held:  # keep the GPT areas for commit()
            lo, hi = max(start, position), min(end, chunk_end)
            if lo < hi:
                held_data[start][lo - start: hi - start] = view[lo - position: hi - position]
        if ranges is None:
            pieces = [(position, chunk_end)]
            if view[:n] == zero_chunk[:n]:
                pieces = []
                for start, end in subtract([(position, chunk_end)], held):
                    if policy == "skip":
                        result.skipped += end - start
                    else:
                        pool.jobs.put(_Job(None, 0, [], (start, end)))
                        result.zeroed += end - start
        else:
            pieces = []
            while index < len(ranges) and ranges[index].start < chunk_end:
                mapped = ranges[index]
                lo, hi = max(mapped.start, position), min(mapped.end, chunk_end)
                if lo < hi:
                    pieces.append((lo, hi))
                    if verify_ranges and mapped.checksum:
                        if lo == mapped.start:
                            digest = hashlib.new(bmap.checksum_type)
                        digest.update(view[lo - position: hi - position])
                if mapped.end > chunk_end:
                    break
                if verify_ranges and mapped.checksum and digest is not None:
                    if digest.hexdigest() != mapped.checksum.lower():
                        raise VerifyError(f"{label}: bmap checksum mismatch for bytes {mapped.start}-{mapped.end} "
                                          "(corrupt image or wrong bmap)")
                    digest = None
                index += 1
        pieces = subtract(pieces, held)
        if pieces:
            pool.jobs.put(_Job(buffer, position, pieces))
            result.written += sum(end - start for start, end in pieces)
        else:
            pool.free.put(buffer)
        position = chunk_end
        if on_progress is not None:
            now = time.monotonic()
            if now - last_report >= 0.2:
                last_report = now
                on_progress(position, image_size, result.written)
        pool.check()
        buffer, n = _next(ready)
        if buffer is not None:
            view = memoryview(buffer)
    if buffer is not None:
        pool.free.put(buffer)
    if position != image_size:
        raise VerifyError(f"{label}: the stream ended after {position} of {image_size} bytes (truncated image)")
    if ranges is not None and index < len(ranges):
        raise VerifyError(f"{label}: the stream ended before bmap range {ranges[index].start}-{ranges[index].end}")
    result.held = {start: bytes(data) for start, data in held_data.items()}
    result.written += sum(len(data) for data in result.held.values())
    if on_progress is not None:
        on_progress(position, image_size, result.written)
    return result


def commit(target: Target, result: WriteResult) -> None:
    """Flush the data, then write the held GPT areas: backup first, primary last (as GRUB's
    gptprio writes them), each followed by a flush. Raises DiskError."""
    target.flush()
    for start in sorted(result.held, reverse=True):
        target.write(start, result.held[start])
        target.flush()
