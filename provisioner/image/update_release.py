"""The update payload of a release: what `provisioner node update` installs into the passive USR slot.

    <base>/<version>/<name>_usr.squashfs (+ .sig)     the USR filesystem image, written as is onto the slot
    <base>/<version>/<name>_pxe.vmlinuz  (+ .sig)     the kernel the slot boots (the same file PXE boots)
    <base>/<version>/<name>_initrd.gz    (+ .sig)     the disk initramfs the slot boots
    <base>/<version>/update.json (+ .sig)             the signed manifest: version, channel, sizes, SHA-256s

Nodes read `<base>/current/update.json`: the channel pointer is the existing `current` symlink, and the
manifest names the version, so payload URLs go by version (node/update/manifest.py). A whole-partition
image rather than update_engine's delta format: the USR squashfs is ~150 MB and written in seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from provisioner.image.release import Signer
from provisioner.node.update.manifest import MANIFEST_NAME, Manifest, PayloadFile, manifest_json


def payload_names(name: str, pxe_kernel: str) -> dict[str, str]:
    return {"usr": f"{name}_usr.squashfs", "kernel": pxe_kernel, "initrd": f"{name}_initrd.gz"}


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows it (the USR image is the build's own cached file)."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_update_payload(directory: Path, version: str, channel: str, build_id: str, names: dict[str, str],
                         sources: dict[str, Path], signer: Signer) -> Manifest:
    """Place the payload files in `directory` (a release staging dir), sign each one not signed yet,
    then write and sign update.json; returns the manifest. Raises CommandError (gpg) or OSError."""
    files = {}
    for part, name in names.items():
        path = directory / name
        if part in sources:
            link_or_copy(sources[part], path)
        if not (directory / (name + ".sig")).exists():
            signer.sign(path)
        files[part] = PayloadFile(name, path.stat().st_size, sha256_file(path))
    manifest = Manifest(version=version, channel=channel, build_id=build_id, files=files)
    (directory / MANIFEST_NAME).write_bytes(manifest_json(manifest))
    (directory / (MANIFEST_NAME + ".sig")).unlink(missing_ok=True)
    signer.sign(directory / MANIFEST_NAME)
    return manifest
