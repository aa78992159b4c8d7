"""Image archives as `provisioner registry import` takes them, read and checked before anything is
written: every blob's sha256 and size against its descriptor, every layer's uncompressed sha256
against the image config's `rootfs.diff_ids` (dockerd refuses an image whose layers do not match:
"layers from manifest don't match image configuration"). A broken archive is refused here, as one
line naming the member, before the registry sees a byte.

Formats: `docker save` archives (manifest.json with Config/RepoTags/Layers, old and OCI-shaped
layouts alike), OCI archives (a tar of an OCI image layout: oci-layout, index.json, blobs/) and OCI
layout directories. Archives may be gzip-compressed; layers may be plain, gzip or zstd tars.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import re
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any

import zstandard

from provisioner.errors import RegistryError

CHUNK = 1 << 20
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
# containerd/docker put the full name here; OCI's own annotation often holds only a tag.
NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
REF_ANNOTATION = "org.opencontainers.image.ref.name"


# Compressed archives (`docker save | gzip`): skopeo 1.9 reads only plain tars, so they are
# decompressed to a temporary file first.
COMPRESSORS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ": lzma.open}


class ArchiveFormat(Enum):
    DOCKER_ARCHIVE = "docker-archive"
    OCI_ARCHIVE = "oci-archive"
    OCI_LAYOUT = "oci"


@dataclass(frozen=True)
class ArchivedImage:
    index: int                  # position in manifest.json (docker) or index.json (OCI)
    names: tuple[str, ...]      # the names the archive gives it (RepoTags; OCI name annotations)
    ref: str | None             # OCI ref.name annotation: how skopeo picks this image in the layout
    digest: str                 # config digest (docker archive) or manifest digest (OCI)
    size: int                   # stored bytes of config and layers
    is_index: bool = False      # an OCI image index / manifest list (copied with all its images)


@dataclass(frozen=True)
class Archive:
    path: Path
    format: ArchiveFormat
    images: tuple[ArchivedImage, ...]
    compressed: bool = False

    def skopeo_source(self, image: ArchivedImage) -> str:
        """skopeo's source reference for one image of the archive (transport:path[:ref|:@index])."""
        if self.format is ArchiveFormat.DOCKER_ARCHIVE:
            return f"docker-archive:{self.path}:@{image.index}"
        transport = self.format.value
        return f"{transport}:{self.path}:{image.ref}" if image.ref else f"{transport}:{self.path}"


class _Members:
    """Named members of a tar file or of a directory, read as streams."""

    def __init__(self, path: Path):
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._infos: dict[str, tarfile.TarInfo] = {}
        if path.is_dir():
            return
        try:
            self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by close())
            for info in self._tar.getmembers():
                if info.isfile():
                    self._infos[info.name.removeprefix("./")] = info
        except (tarfile.TarError, EOFError, OSError, zstandard.ZstdError) as exc:
            reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "could not be opened" in reason:   # tarfile tried every compression and lists them all
                reason = "neither a tar nor a gzip, bzip2 or xz compressed tar"
            raise RegistryError(f"{path}: not a readable tar archive ({reason}); nothing was imported") from None

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def exists(self, name: str) -> bool:
        if self._tar is None:
            return (self.path / name).is_file()
        return name in self._infos

    def open(self, name: str, where: str) -> IO[bytes]:
        if self._tar is None:
            try:
                return open(self.path / name, "rb")  # noqa: SIM115 (the caller closes it)
            except OSError as exc:
                raise RegistryError(f"{where}: {name}: {exc.strerror}; nothing was imported") from None
        info = self._infos.get(name)
        handle = self._tar.extractfile(info) if info is not None else None
        if handle is None:
            raise RegistryError(f"{where}: {name} is not in the archive; nothing was imported")
        return handle

    def read(self, name: str, where: str) -> bytes:
        with self.open(name, where) as handle:
            return _read_all(handle, where, name)


def _read_all(handle: IO[bytes], where: str, name: str) -> bytes:
    try:
        return handle.read()
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise RegistryError(f"{where}: {name}: cannot be read ({exc}); nothing was imported") from None


class _HashingReader:
    """Reads a stream through sha256, counting bytes (the digest of the stored blob)."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def _chunks(stream: Any) -> Iterator[bytes]:
    while True:
        data = stream.read(CHUNK)
        if not data:
            return
        yield data


def hash_layer(handle: IO[bytes]) -> tuple[str, str, int]:
    """(sha256 of the stored bytes, sha256 of the uncompressed tar, stored size) of one layer.

    Compression is told by the magic bytes (gzip, zstd, else a plain tar). Raises OSError, EOFError,
    zlib/zstd errors for a damaged stream."""
    stored = _HashingReader(handle)
    head = stored.read(4)
    uncompressed = hashlib.sha256()
    rest = _Prefixed(head, stored)
    if head[:2] == b"\x1f\x8b":
        decompressed: Any = gzip.GzipFile(fileobj=rest, mode="rb")      # type: ignore[call-overload]
    elif head == b"\x28\xb5\x2f\xfd":
        decompressed = zstandard.ZstdDecompressor().stream_reader(rest, read_across_frames=True)  # type: ignore[arg-type]
    else:
        decompressed = rest
    for data in _chunks(decompressed):
        uncompressed.update(data)
    stored.drain()
    return f"sha256:{stored.sha.hexdigest()}", f"sha256:{uncompressed.hexdigest()}", stored.size


class _Prefixed:
    """A stream that first returns `head` (bytes already read), then the rest of `raw`."""

    def __init__(self, head: bytes, raw: _HashingReader):
        self.head = head
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0:
                data, self.head = self.head + self.raw.read(), b""
                return data
            data, self.head = self.head[:n], self.head[n:]
            return data if len(data) == n else data + self.raw.read(n - len(data))
        return self.raw.read(n)


def _json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{where}: not valid JSON ({exc}); nothing was imported") from None


def _field(doc: Any, key: str, kind: type, where: str) -> Any:
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, kind):
        raise RegistryError(f"{where}.{key}: missing or not a {kind.__name__}; nothing was imported")
    return value


def _layer_digests(members: _Members, name: str, where: str) -> tuple[str, str, int]:
    try:
        with members.open(name, where) as handle:
            return hash_layer(handle)
    except RegistryError:
        raise
    except (OSError, EOFError, tarfile.TarError, zstandard.ZstdError) as exc:
        raise RegistryError(f"{where}: layer {name} is damaged ({exc}); nothing was imported") from None


def _check_diff_ids(config: Any, uncompressed: list[str], where: str, layer_names: list[str]) -> None:
    diff_ids = _field(_field(config, "rootfs", dict, where), "diff_ids", list, f"{where}.rootfs")
    if len(diff_ids) != len(uncompressed):
        raise RegistryError(f"{where}: rootfs.diff_ids lists {len(diff_ids)} layers, the manifest "
                            f"{len(uncompressed)}; nothing was imported")
    for position, (expected, actual) in enumerate(zip(diff_ids, uncompressed, strict=True)):
        if expected != actual:
            raise RegistryError(f"{where}: layer {layer_names[position]} holds {actual}, the image config's "
                                f"rootfs.diff_ids[{position}] says {expected}; nothing was imported")


def _read_docker_archive(members: _Members, where: str) -> list[ArchivedImage]:
    manifest = _json(members.read("manifest.json", where), f"{where}: manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise RegistryError(f"{where}: manifest.json: not a list of images; nothing was imported")
    images = []
    for position, entry in enumerate(manifest):
        at = f"{where}: manifest.json[{position}]"
        config_name = _field(entry, "Config", str, at)
        layers = _field(entry, "Layers", list, at)
        tags = entry.get("RepoTags") or []
        if not all(isinstance(x, str) for x in [*layers, *tags]):
            raise RegistryError(f"{at}: Layers and RepoTags must be lists of strings; nothing was imported")
        config_bytes = members.read(config_name, at)
        config_digest = f"sha256:{hashlib.sha256(config_bytes).hexdigest()}"
        named = re.fullmatch(r"(?:.*/)?(?:sha256/)?([0-9a-f]{64})(?:\.json)?", config_name)
        if named and named.group(1) != config_digest.removeprefix("sha256:"):
            raise RegistryError(f"{at}: config {config_name} holds {config_digest}; nothing was imported")
        config = _json(config_bytes, f"{at}: {config_name}")
        uncompressed, size = [], len(config_bytes)
        for layer in layers:
            _, diff_id, stored_size = _layer_digests(members, layer, at)
            uncompressed.append(diff_id)
            size += stored_size
        _check_diff_ids(config, uncompressed, f"{at}: {config_name}", layers)
        images.append(ArchivedImage(position, tuple(tags), None, config_digest, size))
    return images


def _blob_name(descriptor: Any, where: str) -> tuple[str, str, int]:
    digest = _field(descriptor, "digest", str, where)
    size = _field(descriptor, "size", int, where)
    match = _DIGEST.fullmatch(digest)
    if match is None:
        raise RegistryError(f"{where}.digest: {digest!r} is not a sha256 digest; nothing was imported")
    return f"blobs/sha256/{match.group(1)}", digest, size


def _checked_blob(members: _Members, descriptor: Any, where: str) -> bytes:
    name, digest, size = _blob_name(descriptor, where)
    data = members.read(name, where)
    actual = f"sha256:{hashlib.sha256(data).hexdigest()}"
    if actual != digest or len(data) != size:
        raise RegistryError(f"{where}: blob {name} holds {actual} ({len(data)} bytes), the descriptor says "
                            f"{digest} ({size} bytes); nothing was imported")
    return data


def _verify_oci_manifest(members: _Members, descriptor: Any, where: str) -> int:
    """Check one manifest (or index, recursively) and everything it references; returns stored bytes."""
    document = _json(_checked_blob(members, descriptor, where), where)
    media_type = document.get("mediaType") if isinstance(document, dict) else None
    media_type = media_type or descriptor.get("mediaType")
    if media_type in INDEX_TYPES or (isinstance(document, dict) and "manifests" in document):
        children = _field(document, "manifests", list, where)
        return sum(_verify_oci_manifest(members, child, f"{where}.manifests[{i}]")
                   for i, child in enumerate(children))
    config_descriptor = _field(document, "config", dict, where)
    config = _json(_checked_blob(members, config_descriptor, f"{where}.config"), f"{where}.config")
    size = _field(config_descriptor, "size", int, f"{where}.config")
    uncompressed, names = [], []
    for position, layer in enumerate(_field(document, "layers", list, where)):
        at = f"{where}.layers[{position}]"
        name, digest, declared = _blob_name(layer, at)
        stored, diff_id, stored_size = _layer_digests(members, name, at)
        if stored != digest or stored_size != declared:
            raise RegistryError(f"{at}: blob {name} holds {stored} ({stored_size} bytes), the manifest says "
                                f"{digest} ({declared} bytes); nothing was imported")
        uncompressed.append(diff_id)
        names.append(name)
        size += stored_size
    _check_diff_ids(config, uncompressed, f"{where}.config", names)
    return size


def _read_oci(members: _Members, where: str) -> list[ArchivedImage]:
    layout = _json(members.read("oci-layout", where), f"{where}: oci-layout")
    _field(layout, "imageLayoutVersion", str, f"{where}: oci-layout")
    index = _json(members.read("index.json", where), f"{where}: index.json")
    images = []
    for position, descriptor in enumerate(_field(index, "manifests", list, f"{where}: index.json")):
        at = f"{where}: index.json.manifests[{position}]"
        size = _verify_oci_manifest(members, descriptor, at)
        annotations = descriptor.get("annotations") or {}
        names = tuple(dict.fromkeys(
            value for key in NAME_ANNOTATIONS if isinstance(value := annotations.get(key), str)
            and ("/" in value or ":" in value)))
        ref = annotations.get(REF_ANNOTATION) if isinstance(annotations.get(REF_ANNOTATION), str) else None
        images.append(ArchivedImage(position, names, ref, descriptor["digest"], size,
                                    is_index=descriptor.get("mediaType") in INDEX_TYPES))
    unnamed = [image for image in images if image.ref is None]
    if len(images) > 1 and unnamed:
        raise RegistryError(f"{where}: index.json.manifests[{unnamed[0].index}] has no "
                            f"{REF_ANNOTATION} annotation, so it cannot be told apart; nothing was imported")
    return images


def compression_of(path: Path) -> bytes | None:
    """The magic of a compressed archive file (a key of COMPRESSORS), None for a plain tar or a directory."""
    if path.is_dir():
        return None
    with open(path, "rb") as handle:
        head = handle.read(6)
    return next((magic for magic in COMPRESSORS if head.startswith(magic)), None)


def decompress_to(archive: Archive, target: Path) -> Archive:
    """The same archive, decompressed into `target` (for skopeo). Raises OSError, EOFError."""
    magic = compression_of(archive.path)
    if magic is None:
        return archive
    opener: Any = COMPRESSORS[magic]
    with opener(archive.path, "rb") as source, open(target, "wb") as dest:
        shutil.copyfileobj(source, dest, CHUNK)
    return Archive(target, archive.format, archive.images)


def read_archive(path: Path) -> Archive:
    """Read and verify an archive (or OCI layout directory); raises RegistryError naming the member."""
    path = Path(path).resolve()
    where = str(path)
    if not path.exists():
        raise RegistryError(f"{where}: no such file; nothing was imported")
    if ":" in where:
        raise RegistryError(f"{where}: skopeo cannot take a path with ':' in it; rename or move the archive")
    members = _Members(path)
    try:
        if members.exists("manifest.json"):
            fmt, images = ArchiveFormat.DOCKER_ARCHIVE, _read_docker_archive(members, where)
        elif members.exists("index.json") and members.exists("oci-layout"):
            fmt = ArchiveFormat.OCI_LAYOUT if path.is_dir() else ArchiveFormat.OCI_ARCHIVE
            images = _read_oci(members, where)
        else:
            raise RegistryError(f"{where}: neither a docker-archive (manifest.json) nor an OCI archive "
                                f"(oci-layout and index.json); nothing was imported")
    finally:
        members.close()
    if fmt is ArchiveFormat.DOCKER_ARCHIVE and path.is_dir():
        raise RegistryError(f"{where}: a docker-archive must be a tar file; nothing was imported")
    return Archive(path, fmt, tuple(images), compressed=compression_of(path) is not None)
