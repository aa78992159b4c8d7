"""Images built with no network from the host's busybox-static: `busybox` and a stand-in for the
guides' `osones/nginx` (busybox httpd answering on port 80).

Deterministic: the same busybox binary gives the same bytes, so the same digests. Tar entries are
sorted, owned by 0:0 with mtime 0 (the Unix epoch is also the image's `created`, as ko and Nix do),
gzip carries no name or time, JSON is written with sorted keys. The result is an OCI image layout
(directory); `provisioner registry build` imports it like any archive, or packs it with --output.

Why busybox httpd for the nginx stand-in rather than Debian's nginx: the guide's unit only needs an
image of that name that answers HTTP on port 80; busybox httpd does, in the same ~1 MB layer as the
busybox image (stored once), from a binary that needs no libc, so building it needs neither apt nor a
Debian mirror, and it is byte-for-byte reproducible.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import struct
import tarfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from provisioner.core.commands import require_tool, run
from provisioner.errors import RegistryError
from provisioner.registry.names import ImageName

BUSYBOX = Path("/bin/busybox")
EPOCH = 0
CREATED = "1970-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# Directories of a minimal root: runc mounts /proc, /sys, /dev; docker bind-mounts /etc/hosts & co.
BASE_DIRS = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o755, "root": 0o700,
             "sbin": 0o755, "sys": 0o755, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
             "var": 0o755, "var/www": 0o755}
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
INDEX_HTML = ("<!DOCTYPE html>\n<html><head><title>nginx stand-in</title></head>\n"
              "<body><h1>It works</h1><p>busybox httpd, built offline by provisioner registry build nginx.</p>"
              "</body></html>\n")


class OfflineImage(Enum):
    BUSYBOX = "busybox"
    NGINX = "nginx"

    @property
    def default_name(self) -> str:
        return {"busybox": "library/busybox:latest", "nginx": "osones/nginx:latest"}[self.value]


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return f"sha256:{hashlib.sha256(self.data).hexdigest()}"

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


def is_static_elf(head: bytes) -> bool:
    """True for a 64-bit little-endian ELF with no PT_INTERP program header (pure; needs the first 64 KiB)."""
    if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return False
    phoff, = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    for index in range(phnum):
        offset = phoff + index * phentsize
        if offset + 4 > len(head):
            return False
        if struct.unpack_from("<I", head, offset)[0] == 3:   # PT_INTERP: needs a dynamic loader
            return False
    return True


def _canonical_json(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _entry(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
    return info


def layer_tar(dirs: dict[str, int], files: dict[str, tuple[int, bytes]], links: dict[str, str]) -> bytes:
    """An uncompressed layer tar, entries sorted by path, every header fixed (pure)."""
    buffer = io.BytesIO()
    entries: list[tuple[str, tarfile.TarInfo, bytes | None]] = []
    entries += [(name, _entry(name, tarfile.DIRTYPE, mode), None) for name, mode in dirs.items()]
    entries += [(name, _entry(name, tarfile.REGTYPE, mode, len(data)), data) for name, (mode, data) in files.items()]
    entries += [(name, _entry(name, tarfile.SYMTYPE, 0o777, link=target), None) for name, target in links.items()]
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for _, info, data in sorted(entries, key=lambda item: item[0]):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def busybox_layer(busybox: bytes, applets: list[str]) -> bytes:
    """The busybox root: the binary, one symlink per applet (`busybox --list-full`), base dirs, users."""
    dirs = dict(BASE_DIRS)
    links = {}
    for applet in applets:
        path = applet.strip().lstrip("/")
        if not path or path == "bin/busybox":
            continue
        parent = os.path.dirname(path)
        while parent and parent not in dirs:
            dirs[parent] = 0o755
            parent = os.path.dirname(parent)
        links[path] = "/bin/busybox"
    files = {"bin/busybox": (0o755, busybox), "etc/passwd": (0o644, PASSWD.encode()),
             "etc/group": (0o644, GROUP.encode())}
    return layer_tar(dirs, files, links)


def gzip_layer(tar: bytes) -> bytes:
    return gzip.compress(tar, compresslevel=9, mtime=0)


def image_config(architecture: str, diff_ids: list[str], config: dict, history: list[str]) -> dict:
    return {
        "architecture": architecture, "os": "linux", "created": CREATED, "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED, "created_by": line} for line in history],
    }


def oci_architecture(machine: str | None = None) -> str:
    machine = machine or platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def write_oci_layout(directory: Path, image: ImageName, config: dict, layer_tars: list[bytes]) -> str:
    """An OCI image layout holding one image named `image`; returns the manifest digest. Raises OSError."""
    layers = [Blob(OCI_LAYER_GZIP, gzip_layer(tar)) for tar in layer_tars]
    config_blob = Blob(OCI_CONFIG, _canonical_json(config))
    manifest = Blob(OCI_MANIFEST, _canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_blob.descriptor(),
        "layers": [layer.descriptor() for layer in layers]}))
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in (*layers, config_blob, manifest):
        (blobs / blob.digest.removeprefix("sha256:")).write_bytes(blob.data)
    annotations = {"io.containerd.image.name": f"docker.io/{image}", "org.opencontainers.image.ref.name": image.tag}
    (directory / "oci-layout").write_bytes(_canonical_json({"imageLayoutVersion": "1.0.0"}))
    (directory / "index.json").write_bytes(_canonical_json({
        "schemaVersion": 2, "manifests": [{**manifest.descriptor(), "annotations": annotations}]}))
    return manifest.digest


def host_busybox(path: Path = BUSYBOX) -> tuple[bytes, list[str], str]:
    """(binary, applet paths, version line) of the host's busybox-static; raises RegistryError."""
    require_tool("busybox")
    try:
        binary = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"{path}: {exc.strerror}: install the Debian package busybox-static") from None
    if not is_static_elf(binary[:65536]):
        raise RegistryError(f"{path} is not a static binary (the 'busybox' package?): a container has no libc "
                            f"for it; install busybox-static")
    applets = run([str(path), "--list-full"]).stdout.split()
    version = (run([str(path)], check=False).stdout.splitlines() or ["BusyBox"])[0].strip()
    return binary, applets, version


def build_offline_image(target: OfflineImage, name: ImageName, directory: Path, busybox: Path = BUSYBOX) -> str:
    """Write the image as an OCI layout into `directory`; returns its manifest digest.

    Raises RegistryError (no static busybox) or OSError."""
    binary, applets, version = host_busybox(busybox)
    layers = [busybox_layer(binary, applets)]
    history = [f"provisioner registry build busybox: {version}"]
    config: dict = {"Env": [PATH_ENV], "Cmd": ["sh"]}
    if target is OfflineImage.NGINX:
        layers.append(layer_tar({"var": 0o755, "var/www": 0o755},
                                {"var/www/index.html": (0o644, INDEX_HTML.encode())}, {}))
        history.append("provisioner registry build nginx: busybox httpd serving /var/www on port 80")
        config = {"Env": [PATH_ENV], "Cmd": ["httpd", "-f", "-v", "-p", "80", "-h", "/var/www"],
                  "ExposedPorts": {"80/tcp": {}}}
    diff_ids = [f"sha256:{hashlib.sha256(tar).hexdigest()}" for tar in layers]
    return write_oci_layout(directory, name, image_config(oci_architecture(), diff_ids, config, history), layers)


def pack_layout(directory: Path, archive: Path) -> None:
    """Pack an OCI layout directory into an OCI archive (a tar, fixed headers, sorted). Raises OSError."""
    paths = sorted(directory.rglob("*"))
    files = {str(p.relative_to(directory)): (0o644, p.read_bytes()) for p in paths if p.is_file()}
    dirs = {str(p.relative_to(directory)): 0o755 for p in paths if p.is_dir()}
    tmp = archive.with_name(f".{archive.name}.tmp")
    tmp.write_bytes(layer_tar(dirs, files, {}))
    os.replace(tmp, archive)
