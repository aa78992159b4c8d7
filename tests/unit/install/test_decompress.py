"""Compression formats, told by their magic bytes."""

from __future__ import annotations

import pytest

from provisioner.install import decompress


@pytest.mark.parametrize("head, fmt", [
    (b"BZh91AY&SY", "bz2"), (b"\xfd7zXZ\x00\x00", "xz"), (b"\x28\xb5\x2f\xfd\x04", "zst"),
    (b"\x1f\x8b\x08", "gz"), (b"\x00" * 16, "raw"), (b"EFI PART", "raw"),
])
def test_format_is_detected_by_magic_bytes(head, fmt):
    assert decompress.detect_format(head) == fmt
