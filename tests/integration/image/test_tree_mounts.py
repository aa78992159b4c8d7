"""A /proc left mounted inside the cached tree by a chroot step never reaches the image."""

from __future__ import annotations

import subprocess
from pathlib import Path

from provisioner.image.rootfs import release_mounts
from provisioner.image.tree import copy_tree


def _mounts_under(path: Path) -> list[str]:
    listing = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout.split()
    return [m for m in listing if m.startswith(f"{path.resolve()}/")]


def test_copy_skips_a_mounted_proc_and_release_detaches_it(tmp_path):
    tree = tmp_path / "rootfs"
    (tree / "proc").mkdir(parents=True)
    (tree / "etc").mkdir()
    (tree / "etc" / "hostname").write_text("x\n")
    subprocess.run(["mount", "-t", "proc", "-o", "ro", "proc", str(tree / "proc")], check=True)
    try:
        copy_tree(tree, tmp_path / "copy")
        assert (tmp_path / "copy" / "etc" / "hostname").read_text() == "x\n"
        assert (tmp_path / "copy" / "proc").is_dir()
        assert list((tmp_path / "copy" / "proc").iterdir()) == []
        release_mounts(tree)
        assert _mounts_under(tree) == []
    finally:
        subprocess.run(["umount", "--lazy", str(tree / "proc")], capture_output=True)
