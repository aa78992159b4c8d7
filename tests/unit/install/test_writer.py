"""The writer's geometry: held GPT areas, range arithmetic, the image size from its header."""

from __future__ import annotations

import subprocess

import pytest

from provisioner.errors import VerifyError
from provisioner.install import writer


def test_subtract_and_held_regions():
    assert writer.subtract([(0, 100)], [(10, 20), (50, 60)]) == [(0, 10), (20, 50), (60, 100)]
    assert writer.subtract([(0, 10)], [(0, 10)]) == []
    size = 88 << 20
    head, tail = writer.held_regions(size)
    assert head == (0, 20480)
    assert tail[1] == size and tail[0] % 4096 == 0 and size - tail[0] >= 33 * 512


def test_image_size_comes_from_the_primary_header(tmp_path):
    path = tmp_path / "img"
    with open(path, "wb") as handle:
        handle.truncate(8 << 20)
    subprocess.run(["sgdisk", "-n", "1:2048:+1M", str(path)], check=True, capture_output=True)
    head = path.read_bytes()[:20480]
    assert writer.image_size_from_head(head, "img") == 8 << 20
    with pytest.raises(VerifyError, match="not a disk image"):
        writer.image_size_from_head(bytes(20480), "img")
