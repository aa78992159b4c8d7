"""Release versions for the update test, made cheaply from the built image: the USR squashfs with only
its version file rewritten (N+1), or a signed USR that is no file system at all (a broken N+2), each
with the built kernel and initrd, published and signed as `image build` does it
(provisioner/image/update_release.py) with the build's own release key."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from provisioner.image.build import BuildResult
from provisioner.image.release import Signer, publish_link, version_txt
from provisioner.image.update_release import link_or_copy, write_update_payload
from provisioner.node.update.manifest import MANIFEST_NAME, parse_manifest

REPO = Path(__file__).resolve().parents[3]


def signer() -> Signer:
    return Signer(REPO / "build/image/gnupg")


def copy_release(built: BuildResult, channel_dir: Path) -> str:
    """The built version's update files (hard links) under channel_dir/<version>; returns the version."""
    target = channel_dir / built.version
    target.mkdir(parents=True)
    manifest = parse_manifest((built.release_dir / MANIFEST_NAME).read_bytes())
    for name in [f.name for f in manifest.files.values()] + [MANIFEST_NAME]:
        for suffix in ("", ".sig"):
            link_or_copy(built.release_dir / (name + suffix), target / (name + suffix))
    shutil.copyfile(built.base_dir / "release-key.asc", channel_dir / "release-key.asc")
    return built.version


def _usr_with_version(built: BuildResult, version: str, work: Path) -> Path:
    """The built USR with only version.txt changed. Cached under build/test-update per build of the image
    (the repack costs ~a minute on 2 cores; `make test` runs with the same image every time)."""
    key = (built.usr_image.parent / "build-key").read_text().strip()[:16]
    cache = REPO / "build/test-update"
    usr = cache / f"usr-{version}-{key}.squashfs"
    if usr.exists():
        return usr
    tree = work / f"usr-{version}"
    subprocess.run(["unsquashfs", "-q", "-n", "-d", str(tree), str(built.usr_image)], check=True)
    (tree / "share/provisioner/version.txt").write_text(version_txt(version, f"test-{version}"))
    partial = work / f"usr-{version}.squashfs"
    # zstd level 3 rather than the image's default: the test pays for this build, the guest for the size
    subprocess.run(["mksquashfs", str(tree), str(partial), "-quiet", "-no-progress", "-noappend", "-comp", "zstd",
                    "-Xcompression-level", "3"], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(tree)
    if cache.exists():
        shutil.rmtree(cache)   # another image's repacks
    cache.mkdir(parents=True)
    shutil.move(partial, usr)
    return usr


def derive_release(built: BuildResult, channel_dir: Path, version: str, work: Path, *, broken: bool = False) -> None:
    """channel_dir/<version>: the built release with the version changed (or, `broken`, a USR that does
    not mount: 4 MiB of a fixed pattern), signed with the build's key."""
    source = parse_manifest((built.release_dir / MANIFEST_NAME).read_bytes())
    if broken:
        usr = work / f"usr-{version}.bad"
        usr.write_bytes(b"\xde\xad\xbe\xef" * (1 << 20))
    else:
        usr = _usr_with_version(built, version, work)
    target = channel_dir / version
    target.mkdir(parents=True)
    names = {part: f.name for part, f in source.files.items()}
    sources = {"usr": usr, "kernel": built.release_dir / names["kernel"], "initrd": built.release_dir / names["initrd"]}
    key = signer()
    try:
        write_update_payload(target, version, "stable", f"test-{version}", names, sources, key)
    finally:
        key.close()


def point_current(channel_dir: Path, version: str) -> None:
    publish_link(channel_dir, version)


def bumped(version: str, step: int) -> str:
    """0.1.0 -> 0.1.<0+step> (the built version's last number raised)."""
    head, _, last = version.partition("-")[0].rpartition(".")
    return f"{head}.{int(last) + step}" if head else str(int(last) + step)
