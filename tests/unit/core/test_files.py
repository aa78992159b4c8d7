from __future__ import annotations

import os
import stat

import pytest

from provisioner.core.files import write_atomic


def test_write_atomic_replaces_whole_file_with_mode(tmp_path):
    target = tmp_path / "a" / "b" / "state.json"
    write_atomic(target, "first")
    write_atomic(target, b"second", mode=0o600)
    assert target.read_bytes() == b"second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(os.listdir(target.parent)) == ["state.json"]   # no temp file left behind


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "state.json"
    write_atomic(target, "old")
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]
