"""`provisioner registry import|build|list`: images into and out of the data dir's registry.

Import is all or nothing. The archive is read and verified first (archive.py): a broken one is
refused before the registry is touched. Then skopeo copies each image into a docker-registry
started on loopback over the same storage (the real registry writes its own layout). If a copy
fails half-way, the tags the import created or moved are put back (storage.py).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from provisioner.core.commands import require_tool, run
from provisioner.errors import CommandError, RegistryError, UsageError
from provisioner.registry.archive import Archive, ArchivedImage, decompress_to, read_archive
from provisioner.registry.client import ImageSummary, RegistryClient
from provisioner.registry.names import ImageName, parse_image_name
from provisioner.registry.offline_images import OfflineImage, build_offline_image, pack_layout
from provisioner.registry.process import storage_dir, temporary_registry
from provisioner.registry.storage import RegistryStorage

log = logging.getLogger("provisioner.registry")


@dataclass(frozen=True)
class ImportTarget:
    image: ArchivedImage
    name: ImageName


def import_targets(archive: Archive, name: str | None) -> list[ImportTarget]:
    """Which registry name each archived image goes to (pure): the archive's own names, or `name`
    for an archive of one image. Raises UsageError (RegistryError for an archive without names)."""
    if name is not None:
        if len(archive.images) != 1:
            raise UsageError(f"--name: {archive.path} holds {len(archive.images)} images; --name needs exactly one")
        return [ImportTarget(archive.images[0], parse_image_name(name, "--name"))]
    targets: list[ImportTarget] = []
    for image in archive.images:
        if not image.names:
            raise RegistryError(f"{archive.path}: image {image.index} ({image.digest[:19]}) has no name in the "
                                f"archive; give --name REPOSITORY[:TAG]")
        targets += [ImportTarget(image, parse_image_name(text, f"{archive.path}: image {image.index} name"))
                    for text in image.names]
    return targets


def skopeo_copy_argv(source: str, registry_url: str, name: ImageName, whole_index: bool) -> list[str]:
    """The skopeo command that copies one image into the registry (pure).

    --insecure-policy: the archive was verified blob by blob just before; archives carry no signatures
    for a policy to check. --dest-tls-verify=false: the registry speaks plain HTTP on loopback."""
    host = registry_url.split("://", 1)[-1]
    argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
    if whole_index:
        argv.append("--all")
    return [*argv, source, f"docker://{host}/{name}"]


def _copy_all(archive: Archive, targets: list[ImportTarget], url: str, storage: RegistryStorage) -> None:
    before = storage.snapshot([target.name for target in targets])
    try:
        for target in targets:
            log.info("registry: %s -> %s", archive.skopeo_source(target.image), target.name)
            run(skopeo_copy_argv(archive.skopeo_source(target.image), url, target.name, target.image.is_index))
    except CommandError as exc:
        try:
            storage.restore(before)
            state = "the registry was left as it was"
        except OSError as restore_error:
            state = f"and its tags could not be put back ({restore_error}): check {storage.root}"
        raise RegistryError(f"{archive.path}: skopeo could not copy {target.name}: "
                            f"{exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else exc}; {state}") from None


def import_archive(data_dir: Path, path: Path, name: str | None = None) -> list[ImageSummary]:
    """Import every image of an archive under its names (or `name`); returns what the registry now
    holds under those names. Raises RegistryError, UsageError, NetworkError, CommandError (no skopeo)."""
    archive = read_archive(path)
    targets = import_targets(archive, name)
    require_tool("skopeo")
    storage = storage_dir(data_dir)
    with tempfile.TemporaryDirectory(prefix="provisioner-import-") as tmp, temporary_registry(storage) as url:
        if archive.compressed:
            archive = decompress_to(archive, Path(tmp) / "archive.tar")
        _copy_all(archive, targets, url, RegistryStorage(storage))
        client = RegistryClient(url)
        results = []
        for target in targets:
            manifest = client.manifest(target.name.repository, target.name.tag)
            results.append(ImageSummary(target.name.repository, target.name.tag, manifest.digest,
                                        manifest.media_type, client.image_size(target.name.repository, manifest)))
    return results


def build_image(data_dir: Path | None, target: OfflineImage, name: str | None = None,
                output: Path | None = None) -> list[ImageSummary] | Path:
    """Build an offline image; import it into the data dir's registry, or pack it into `output`
    (an OCI archive) when given. Raises RegistryError, UsageError, NetworkError, OSError."""
    image_name = parse_image_name(name or target.default_name, "--name")
    with tempfile.TemporaryDirectory(prefix="provisioner-build-") as tmp:
        layout = Path(tmp) / "layout"
        digest = build_offline_image(target, image_name, layout)
        log.info("registry: built %s %s", image_name, digest)
        if output is not None:
            pack_layout(layout, output)
            return output
        if data_dir is None:
            raise UsageError("give --data-dir (import into its registry) or --output (write an OCI archive)")
        return import_archive(data_dir, layout)


def list_images(data_dir: Path) -> list[ImageSummary]:
    """Every tag the data dir's registry holds. Raises NetworkError."""
    storage = storage_dir(data_dir)
    if not storage.is_dir():
        return []
    with temporary_registry(storage) as url:
        return RegistryClient(url).images()
