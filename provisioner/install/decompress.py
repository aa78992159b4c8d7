"""Decompress a stream of compressed chunks into a pipe the writer reads, detecting the format by
its magic bytes (never by the file name).

A feeder thread takes the compressed chunks, hands each to the "taps" (sha512, gpgv) and writes
it to the decompressor, so download, verification, decompression and the disk writes overlap.
The decompressor is the fastest tool present (lbzip2 before bzip2, as flatcar/init#46 chose:
10 s against 32 s; pigz before gzip; zstd; xz -T0), else the standard library's bz2/lzma/zlib
in the feeder thread (they release the GIL while they work).

zstd is special: when the optional `zstandard` module is importable, frames are decompressed
in-process straight into the writer's buffers (`stream_reader.readinto`), which skips pushing
the image's gigabytes of zeros through a pipe: measured 5.8 s against 12.5 s for `zstd -dc |`
on the 4 GiB benchmark image. Without the module (the zipapp on a rescue system) the `zstd`
tool is used. A framed .zst (zstdframes.py: small frames with declared sizes) is taken frame by
frame, and frames that land entirely in a bmap hole are not decompressed at all: `read_piece`
then reports ("skip", n) instead of producing n zero bytes. With the `zstd` tool, only the other
frames are written to its stdin (concatenated frames are one valid stream), and the frame sizes
say which of its output bytes belong where. The frames are independent, so TOOL_PROCESSES tools
take turns (data frame j goes to tool j % TOOL_PROCESSES and is read back from it in the same
order): `zstd -d` uses one core, and the zipapp on a rescue host has no other way to use two.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterable
from typing import Callable

from provisioner.errors import InstallError, ProvisionerError
from provisioner.install import zstdframes

log = logging.getLogger("provisioner.install.decompress")

F_SETPIPE_SZ = 1031  # linux/fcntl.h
PIPE_SIZE = 1 << 20
# zstd tools sharing the frames of a framed image: both cores of the smallest machines, while the
# installer's own threads (hashing, writing) need the others on larger ones.
TOOL_PROCESSES = max(1, min(2, os.cpu_count() or 1))
TOOL_FRAMES_QUEUED = 2  # per tool, waiting for its stdin
# The zstd tool reads its input in whole buffers, so a frame's last block is expanded only once more input
# follows it (zstd 1.5.4: 128 KiB). A frame that compresses well would wait there for many more frames,
# which the other tool, stopped on its full stdout while the reader waits for the first, holds back: a
# skippable frame (RFC 8878 §3.1.2) after each one releases it. Twice the measured need.
RELEASE = (zstdframes.SKIPPABLE_MAGIC.to_bytes(4, "little") + (256 << 10).to_bytes(4, "little")
           + bytes(256 << 10))

MAGIC = (
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zst"),
    (b"\x1f\x8b", "gz"),
)

# Tools in order of preference, per format.
TOOLS = {
    "bz2": (["lbzip2", "-d", "-c"], ["bzip2", "-d", "-c"]),
    "zst": (["zstd", "-d", "-c", "-q", "--no-progress"],),
    "xz": (["xz", "-d", "-c", "-T0"],),
    "gz": (["pigz", "-d", "-c"], ["gzip", "-d", "-c"]),
}
NAMES = {"bz2": "bzip2", "zst": "zstd", "xz": "xz", "gz": "gzip", "raw": "raw (uncompressed)"}


def detect_format(head: bytes) -> str:
    """'bz2', 'xz', 'zst', 'gz' or 'raw' from the first bytes of the stream."""
    for magic, fmt in MAGIC:
        if head.startswith(magic):
            return fmt
    return "raw"


def choose_tool(fmt: str, use_tools: bool = True) -> list[str] | None:
    """The argv of the best decompressor on PATH, or None to decompress in-process."""
    if not use_tools:
        return None
    for argv in TOOLS.get(fmt, ()):
        path = shutil.which(argv[0])
        if path:
            return [path] + argv[1:]
    return None


def _in_process_decompressor(fmt: str):
    if fmt == "bz2":
        import bz2
        return bz2.BZ2Decompressor()
    if fmt == "xz":
        import lzma
        return lzma.LZMADecompressor()
    if fmt == "gz":
        import zlib
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    if fmt == "zst":
        try:
            import zstandard  # optional: the zipapp may run where it is absent
        except ImportError:
            raise InstallError("a .zst image needs the `zstd` tool (Debian package zstd) or the "
                               "Python module zstandard; neither is present") from None
        return zstandard.ZstdDecompressor().decompressobj()
    raise AssertionError(fmt)


def zstandard_module():
    try:
        import zstandard  # optional: absent on rescue systems running the zipapp
        return zstandard
    except ImportError:
        return None


_EOF = object()


class _QueueReader(io.RawIOBase):
    """A file-like view of the chunks the feeder thread puts in a queue (for zstandard)."""

    def __init__(self, chunks: queue.Queue):
        self._chunks = chunks
        self._pending = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending and not self._eof:
            item = self._chunks.get()
            if item is _EOF:
                self._eof = True
            elif isinstance(item, BaseException):
                raise item
            else:
                self._pending = memoryview(item)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # pipe-max-size lower than 1 MiB: the default works, only slower


class _Tool:
    """A decompressor process: its stdout is read by the stream, its stderr drained by a thread. With
    `queued`, a thread of its own writes the frames put in `frames` to its stdin (None: close it), so
    no tool waits for another tool's stdin."""

    def __init__(self, argv: list[str], queued: bool):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0)
        self.fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        self.sink = self.proc.stdin.fileno()  # type: ignore[union-attr]
        _grow_pipe(self.fd)
        self.stderr_text = b""
        self.frames: queue.Queue | None = queue.Queue(maxsize=TOOL_FRAMES_QUEUED) if queued else None
        self._threads = [threading.Thread(target=self._drain_stderr, daemon=True)]
        if queued:
            self._threads.append(threading.Thread(target=self._feed, daemon=True))
        for thread in self._threads:
            thread.start()

    def _drain_stderr(self) -> None:
        self.stderr_text = self.proc.stderr.read()[-2000:]  # type: ignore[union-attr]

    def _feed(self) -> None:
        assert self.frames is not None
        broken = False
        while (frame := self.frames.get()) is not None:
            if not broken:
                try:
                    _write_all(self.sink, frame)
                    _write_all(self.sink, RELEASE)
                except OSError:
                    broken = True  # the tool died: its exit status says so; keep taking frames off the queue
        with contextlib.suppress(OSError):
            os.close(self.sink)

    def wait(self) -> int:
        """The exit status, once the tool and the threads around it are done."""
        code = self.proc.wait()
        for thread in self._threads:
            thread.join(timeout=5)
        self.proc.stdout.close()  # type: ignore[union-attr]
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        if self.frames is not None:
            _drain(self.frames)
            with contextlib.suppress(queue.Full):
                self.frames.put_nowait(None)  # wake its feeder
        with contextlib.suppress(OSError):
            self.proc.stdout.close()  # type: ignore[union-attr]
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def _drain(items: queue.Queue) -> None:
    while True:
        try:
            items.get_nowait()
        except queue.Empty:
            return


class DecompressStream:
    """compressed chunks -> taps + decompressor -> `readinto()` of raw image bytes.

    `first_chunk` is the already-read head of the stream (used for the magic); `chunks` yields
    the rest. Call `finish()` at EOF: raises the feeder's error (download, verification tap)
    or InstallError when the decompressor failed (corrupt or truncated stream).
    """

    def __init__(self, first_chunk: bytes, chunks: Iterable[bytes], taps: list[Callable[[bytes], None]],
                 label: str, use_tools: bool = True, skippable: Callable[[int, int], bool] | None = None):
        self.format = detect_format(first_chunk)
        self.label = label
        self._taps = taps
        self._error: BaseException | None = None
        self._aborted = False
        self.compressed_bytes = 0
        self._tools: list[_Tool] = []
        self._decoder = None
        self._reader = None
        self._queue: queue.Queue | None = None
        zstandard = zstandard_module() if self.format == "zst" else None
        argv = choose_tool(self.format, use_tools) if self.format != "raw" and zstandard is None else None
        self.tool = argv[0] if argv else ("python" if self.format != "raw" else "none")
        self._splitter: zstdframes.FrameSplitter | None = None
        self._skippable = skippable
        self._pending = memoryview(b"")
        self._peeked = None
        self._out = 0  # image offset of the next byte read_piece produces
        self.frames_skipped = 0
        self._tool_framed = False
        self._fed_out: int | None = 0  # image offset of the next frame split off (None after an unsized one)
        self._tool_left = 0  # bytes of the current frame still to read from the tool (tool_framed)
        self._tool_fd = -1  # ... from this tool's stdout
        self._frames_routed = self._frames_read = 0  # data frames given to the tools, and read back
        if zstandard is not None and skippable is not None and zstdframes.is_framed(first_chunk):
            self.tool = "python-zstandard (framed: holes skipped)"
            self._queue = queue.Queue(maxsize=8)
            self._splitter = zstdframes.FrameSplitter()
            self._dctx = zstandard.ZstdDecompressor()
            self._zstd_error = zstandard.ZstdError
            self.fd = self._sink = -1
        elif zstandard is not None:
            self.tool = "python-zstandard"
            self._queue = queue.Queue(maxsize=8)
            source = _QueueReader(self._queue)
            self._reader = zstandard.ZstdDecompressor().stream_reader(
                source, read_size=1 << 20, read_across_frames=True)
            self._zstd_error = zstandard.ZstdError
            self.fd = self._sink = -1
        elif argv and skippable is not None and self.format == "zst" and zstdframes.is_framed(first_chunk):
            self.tool = f"{argv[0]} (framed: holes skipped)"
            # ("data" | "skip", size) per frame, in order. Unbounded: the zstd tool reads its input in whole
            # buffers, so a frame's output may come only once more input follows it; a bounded queue full of
            # hole records would stop the feeder before that input and hang both. The records are tiny and
            # the pipe to the tool still bounds the data in flight.
            self._queue = queue.Queue()
            self._splitter = zstdframes.FrameSplitter()
            self._tool_framed = True
            self._tools = [_Tool(argv, queued=True) for _ in range(TOOL_PROCESSES)]
            self.fd = self._sink = -1
            if TOOL_PROCESSES > 1:
                self.tool = f"{argv[0]} x{TOOL_PROCESSES} (framed: holes skipped)"
        elif argv:
            self._start_tool(argv)
        else:
            if self.format != "raw":
                self._decoder = _in_process_decompressor(self.format)
            self.fd, self._sink = os.pipe()
            _grow_pipe(self.fd)
        log.info("%s: %s stream, decompressing with %s", label, NAMES[self.format], self.tool)
        self._thread = threading.Thread(target=self._feed, args=(first_chunk, chunks), daemon=True)
        self._thread.start()

    def _start_tool(self, argv: list[str]) -> None:
        self._tools = [_Tool(argv, queued=False)]
        self.fd, self._sink = self._tools[0].fd, self._tools[0].sink

    def _feed(self, first_chunk: bytes, chunks: Iterable[bytes]) -> None:
        try:
            self._push(first_chunk)
            for chunk in chunks:
                self._push(chunk)
            if self._decoder is not None:
                flush = getattr(self._decoder, "flush", None)
                if flush is not None:
                    tail = flush()
                    if tail:
                        _write_all(self._sink, tail)
                if not getattr(self._decoder, "eof", True):
                    raise InstallError(f"{self.label}: the {NAMES[self.format]} stream is truncated")
        except BrokenPipeError:
            pass  # the reader stopped (an error there, or the decompressor died): reported elsewhere
        except BaseException as exc:  # noqa: BLE001 - handed to the reader thread via finish()
            self._error = exc
        finally:
            if self._splitter is not None and self._error is None and self._splitter.leftover:
                self._error = InstallError(f"{self.label}: the zstd stream ends inside a frame (truncated image)")
            if self._queue is not None:
                self._put(_EOF if self._error is None else self._error)
            for tool in self._tools:
                if tool.frames is not None:
                    self._put(None, tool.frames)
            if self._sink >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._sink)

    def _put(self, item, into: queue.Queue | None = None) -> None:
        """Queue for the reader (or `into` a tool's frame queue); gives up when the reader was aborted."""
        target = self._queue if into is None else into
        while not self._aborted:
            try:
                target.put(item, timeout=0.5)  # type: ignore[union-attr]
                return
            except queue.Full:
                continue

    def _push(self, chunk: bytes) -> None:
        self.compressed_bytes += len(chunk)
        for tap in self._taps:
            tap(chunk)
        if self._splitter is not None:
            try:
                frames = self._splitter.feed(chunk)
            except zstdframes.FrameFormatError as exc:
                raise InstallError(f"{self.label}: corrupt zstd stream: {exc}") from None
            for frame, size in frames:
                self._route(frame, size)
            return
        if self._queue is not None:
            self._put(chunk)
            return
        if self._decoder is None:
            _write_all(self._sink, chunk)
            return
        try:
            data = self._decoder.decompress(chunk)
        except (OSError, EOFError, ValueError, Exception) as exc:  # bz2/lzma/zlib/zstd errors differ
            if isinstance(exc, ProvisionerError):
                raise
            raise InstallError(f"{self.label}: cannot expand the {NAMES[self.format]} stream: {exc}") from None
        if data:
            _write_all(self._sink, data)

    def _route(self, frame: bytes, size: int | None) -> None:
        """Queue one frame for the reader as ("data", frame, size), or only ("skip", b"", size) when it
        lies entirely in a bmap hole. With the zstd tools the frame itself goes to the next tool's stdin
        (through its queue), after its record: the reader must be able to drain that tool's output
        while this waits."""
        start = self._fed_out
        self._fed_out = start + size if start is not None and size is not None else None
        if size and start is not None and self._skippable(start, start + size):  # type: ignore[misc]
            self._put(("skip", b"", size))
        elif not self._tool_framed:
            self._put(("data", frame, size))
        elif size is None:
            raise InstallError(f"{self.label}: a zstd frame without a content size at byte {start} of a framed "
                               "stream: corrupt image")
        else:
            self._put(("data", b"", size))
            tool = self._tools[self._frames_routed % len(self._tools)]
            self._frames_routed += 1
            self._put(frame, tool.frames)

    def read_piece(self, view: memoryview) -> tuple[str, int]:
        """("data", n): n image bytes are in view[:n] (n == 0 at the end); ("skip", n): the next
        n image bytes lie in a hole and were not decompressed."""
        if self._splitter is None:
            return "data", self.readinto(view)
        filled = 0
        while filled < len(view):
            if self._pending or self._tool_left:
                n = self._take_expanded(view[filled:])
                filled += n
                self._out += n
                continue
            item = self._peeked if self._peeked is not None else self._queue.get()  # type: ignore[union-attr]
            self._peeked = None
            if item is _EOF:
                self._peeked = _EOF
                break
            if isinstance(item, BaseException):
                raise item
            kind, frame, size = item
            if kind == "skip":
                if filled:
                    self._peeked = item  # hand out the data first, skip next time
                    break
                self._out += size
                self.frames_skipped += 1
                return "skip", size
            if self._tool_framed:
                self._tool_left = size
                self._tool_fd = self._tools[self._frames_read % len(self._tools)].fd
                self._frames_read += 1
            else:
                self._pending = memoryview(self._expand(frame, size))
        return "data", filled

    def _take_expanded(self, view: memoryview) -> int:
        """Copy the current frame's next bytes into `view` (from the tool's stdout, or from the frame
        expanded in-process); returns how many."""
        if self._tool_left:
            n = os.readv(self._tool_fd, [view[: min(self._tool_left, len(view))]])
            if n == 0:
                raise InstallError(f"{self.label}: the zstd output ended inside a frame at byte {self._out}: "
                                   "corrupt or truncated image")
            self._tool_left -= n
            return n
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _expand(self, frame: bytes, size: int | None) -> bytes:
        """One frame decompressed in-process (zstandard), checked against its declared size."""
        if size is not None and size > zstdframes.MAX_FRAME_OUTPUT:
            raise InstallError(f"{self.label}: a {size}-byte zstd frame at byte {self._out} in a framed stream "
                               "(frames above 64 MiB are only supported as a single-frame file)")
        try:
            data = self._dctx.decompress(frame, max_output_size=size or zstdframes.MAX_FRAME_OUTPUT)
        except self._zstd_error as exc:
            raise InstallError(f"{self.label}: cannot expand a zstd frame at byte {self._out}: {exc}: "
                               "corrupt image") from None
        if size is not None and len(data) != size:
            raise InstallError(f"{self.label}: zstd frame at byte {self._out} expands to {len(data)} "
                               f"bytes, its header says {size}: corrupt image")
        return data

    def readinto(self, view: memoryview) -> int:
        """Fill `view` as far as the stream allows; returns bytes read (< len(view) only at EOF)."""
        total = 0
        if self._reader is not None:
            while total < len(view):
                try:
                    n = self._reader.readinto(view[total:])
                except self._zstd_error as exc:
                    raise InstallError(f"{self.label}: cannot expand the zstd stream: {exc}: corrupt image") from None
                if n == 0:
                    break
                total += n
            return total
        while total < len(view):
            n = os.readv(self.fd, [view[total:]])
            if n == 0:
                break
            total += n
        return total

    def finish(self) -> None:
        """Wait for the feeder and the decompressor; raise what went wrong."""
        self._thread.join()
        codes = [(tool, tool.wait()) for tool in self._tools]
        if not self._tools and self._reader is None and self._splitter is None:
            os.close(self.fd)
        if self._error is not None:
            raise self._error
        for tool, code in codes:
            if code != 0:
                detail = tool.stderr_text.decode("utf-8", "replace").strip().splitlines()
                raise InstallError(f"{self.label}: cannot expand the {NAMES[self.format]} stream "
                                   f"({tool.argv[0]} exit {code}: {detail[-1] if detail else 'no message'}): "
                                   "corrupt or truncated image")

    def abort(self) -> None:
        """Stop everything (after an error elsewhere); never raises."""
        self._aborted = True
        for tool in self._tools:
            tool.kill()
        if self._queue is not None:
            _drain(self._queue)  # unblock a feeder waiting on a full queue
        if not self._tools and self._reader is None and self._splitter is None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self._thread.join(timeout=10)
