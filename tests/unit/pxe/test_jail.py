"""The root jail shared by TFTP and /assets: escapes are refused, files inside are served."""

from __future__ import annotations

import os

import pytest

from provisioner.pxe.jail import JailError, resolve_in_jail


@pytest.fixture
def root(tmp_path):
    base = tmp_path / "root"
    (base / "sub").mkdir(parents=True)
    (base / "sub" / "file").write_text("x")
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", base / "escape")
    os.symlink("sub/file", base / "inside")
    return base.resolve()


@pytest.mark.parametrize("name", ["../secret", "sub/../../secret", "escape", "/../secret", "a\0b", "..\\secret"])
def test_jail_refuses_escapes(root, name):
    with pytest.raises(JailError) as info:
        resolve_in_jail(root, name)
    assert info.value.denied


def test_jail_serves_files_and_inner_symlinks_and_maps_absolute_names_inside(root):
    assert resolve_in_jail(root, "sub/file").read_text() == "x"
    assert resolve_in_jail(root, "/sub/file").read_text() == "x"
    assert resolve_in_jail(root, "inside").read_text() == "x"
    with pytest.raises(JailError) as info:
        resolve_in_jail(root, "sub")
    assert not info.value.denied
