"""Framed zstd: header and block walking against files written by zstandard and the zstd tool."""

from __future__ import annotations

import subprocess

import pytest

from provisioner.install import writer, zstdframes

MiB = 1 << 20


@pytest.fixture
def raw(tmp_path):
    path = tmp_path / "raw.bin"
    data = bytearray(10 * MiB + 1234)
    data[:4096] = bytes(range(256)) * 16
    data[6 * MiB: 6 * MiB + 5] = b"hello"
    path.write_bytes(bytes(data))
    return path


def test_framed_file_splits_into_sized_frames_that_decompress_back(raw, tmp_path):
    import zstandard

    out = tmp_path / "framed.zst"
    zstdframes.compress_framed(str(raw), str(out), frame_size=4 * MiB)
    data = out.read_bytes()
    assert zstdframes.is_framed(data[:64])
    splitter = zstdframes.FrameSplitter()
    frames = []
    for start in range(0, len(data), 1000):  # odd chunking: frames straddle chunks
        frames += splitter.feed(data[start: start + 1000])
    assert splitter.leftover == 0
    assert [size for _, size in frames] == [4 * MiB, 4 * MiB, 2 * MiB + 1234]
    rebuilt = b"".join(zstandard.ZstdDecompressor().decompress(f) for f, _ in frames)
    assert rebuilt == raw.read_bytes()
    # the zstd tool reads the framed file as one ordinary .zst
    assert subprocess.run(["zstd", "-dc", str(out)], capture_output=True, check=True).stdout == raw.read_bytes()


def test_big_or_unsized_single_frames_are_streamed_not_framed(raw, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        handle.truncate(100 * MiB)
    out = tmp_path / "one.zst"
    subprocess.run(["zstd", "-q", str(big), "-o", str(out)], check=True)
    assert not zstdframes.is_framed(out.read_bytes()[:64])  # 100 MiB in one frame
    piped = subprocess.run(["zstd", "-q", "-c"], input=raw.read_bytes(), capture_output=True, check=True).stdout
    assert not zstdframes.is_framed(piped[:64])  # no content size when compressed from a pipe
    small = tmp_path / "small.zst"
    subprocess.run(["zstd", "-q", str(raw), "-o", str(small)], check=True)
    assert zstdframes.is_framed(small.read_bytes()[:64])  # 10 MiB, sized: one frame is fine


def test_truncated_frame_stays_in_the_splitter(raw, tmp_path):
    out = tmp_path / "framed.zst"
    zstdframes.compress_framed(str(raw), str(out))
    data = out.read_bytes()
    splitter = zstdframes.FrameSplitter()
    frames = splitter.feed(data[:-3])
    assert len(frames) == 2 and splitter.leftover > 0


def test_skippable_frames_are_ignored_and_garbage_is_refused():
    skippable = (0x184D2A53).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    splitter = zstdframes.FrameSplitter()
    assert splitter.feed(skippable) == [] and splitter.leftover == 0
    with pytest.raises(zstdframes.FrameFormatError, match="bad magic"):
        zstdframes.FrameSplitter().feed(b"not zstd at all")


def test_hole_checker_follows_the_bmap_and_keeps_gpt_areas():
    from provisioner.install.bmap import Bmap, MappedRange

    size = 64 * MiB
    parsed = Bmap(size, 4096, None, (MappedRange(0, 8192, None), MappedRange(20 * MiB, 21 * MiB, None)))
    inside = writer.hole_checker(parsed)
    assert inside(4 * MiB, 8 * MiB)
    assert not inside(16 * MiB, 20 * MiB + 1)  # touches a mapped range
    assert not inside(0, 4 * MiB)  # the primary GPT area is held back, never skipped
    assert not inside(60 * MiB, 64 * MiB)  # neither is the backup GPT area
    assert inside(22 * MiB, 26 * MiB)


def _expand_with_tools(image: bytes, frame: int, holes: list[tuple[int, int]], tmp_path, monkeypatch,
                       tools: int) -> list[tuple[str, bytes | int]]:
    """Frame `image`, then expand it through `tools` zstd processes with the frames inside `holes`
    ([start, end) byte ranges) skipped; returns what read_piece gave. Fails when the reader hangs."""
    import threading

    from provisioner.install import decompress

    raw, framed = tmp_path / "raw.bin", tmp_path / "framed.zst"
    raw.write_bytes(image)
    zstdframes.compress_framed(str(raw), str(framed), frame_size=frame)
    blob = framed.read_bytes()
    monkeypatch.setattr(decompress, "zstandard_module", lambda: None)
    monkeypatch.setattr(decompress, "TOOL_PROCESSES", tools)

    def in_hole(start: int, end: int) -> bool:
        return any(begin <= start and end <= stop for begin, stop in holes)

    chunks = [blob[at:at + MiB] for at in range(0, len(blob), MiB)]
    stream = decompress.DecompressStream(chunks[0], iter(chunks[1:]), [], "framed.zst", skippable=in_hole)
    assert stream.tool.endswith(f"zstd{f' x{tools}' if tools > 1 else ''} (framed: holes skipped)"), stream.tool
    pieces: list[tuple[str, bytes | int]] = []

    def read_all() -> None:
        view = memoryview(bytearray(MiB))
        while True:
            kind, n = stream.read_piece(view)
            if kind == "data" and n == 0:
                return
            pieces.append((kind, bytes(view[:n]) if kind == "data" else n))

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(timeout=30)
    hung = reader.is_alive()
    if hung:
        stream.abort()
    assert not hung, "the reader waited for a zstd tool's output while the feeder waited for the reader"
    stream.finish()
    return pieces


def test_the_zstd_tool_fed_one_data_frame_then_many_holes_does_not_hang(tmp_path, monkeypatch):
    """Without the zstandard module (the zipapp on a rescue system) the frames outside holes go to the zstd
    tool, which reads its input in whole buffers: a data frame's output may come only once more input
    follows it. Hundreds of hole frames after a data frame (an empty USR-B) must not stall the feeder."""
    import os

    frame, data_frames = 64 * 1024, 5
    image = os.urandom(data_frames * frame) + bytes(300 * frame) + os.urandom(frame)
    pieces = _expand_with_tools(image, frame, [(data_frames * frame, len(image) - frame)], tmp_path, monkeypatch,
                                tools=1)
    data = b"".join(piece for kind, piece in pieces if kind == "data")
    assert data == image[:data_frames * frame] + image[-frame:]
    assert sum(n for kind, n in pieces if kind == "skip") == 300 * frame


def test_two_zstd_tools_take_turns_without_waiting_on_each_other(tmp_path, monkeypatch):
    """Two tools share the data frames (both cores), taking turns. A frame that compresses well may wait
    in its tool until more input follows, while the other tool's next frame, a large one, fills that
    tool's stdout and stdin: each tool needs a feeder of its own, or the first one never gets the input
    that releases the frame the reader waits for. Runs of hole frames in between, as in an image."""
    import os

    frame = 2 * MiB
    text = (b"usr lib systemd kernel module config " * (frame // 37 + 1))[:frame]
    data = [text if number % 2 == 0 else os.urandom(frame) for number in range(10)]
    layout = data[:3] + [bytes(frame)] * 40 + data[3:9] + [bytes(frame)] * 200 + data[9:]
    image = b"".join(layout)
    holes = [(3 * frame, 43 * frame), (49 * frame, 249 * frame)]
    pieces = _expand_with_tools(image, frame, holes, tmp_path, monkeypatch, tools=2)
    expanded = b"".join(piece for kind, piece in pieces if kind == "data")
    assert expanded == image[:3 * frame] + image[43 * frame:49 * frame] + image[249 * frame:]
    assert sum(n for kind, n in pieces if kind == "skip") == 240 * frame
