"""The registry's storage directory, for the one thing the HTTP API cannot do: put tags back.

An import pushes blobs, then a manifest per tag. If a push fails half-way, the tags this import
created or moved are returned to what they were: a new tag's directory (and a new repository's) is
removed, a moved tag gets its old link back. Blobs already pushed stay, unreferenced; `docker-registry
garbage-collect` removes them. Paths follow the filesystem driver's layout (distribution
registry/storage/paths.go): repositories/<name>/_manifests/tags/<tag>/current/link.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from provisioner.registry.names import ImageName

V2_ROOT = Path("docker/registry/v2")


@dataclass(frozen=True)
class TagState:
    image: ImageName
    repository_existed: bool
    link: str | None            # the tag's current/link before the import (None: no such tag)


class RegistryStorage:
    def __init__(self, root: Path):
        self.root = Path(root)

    def repository_dir(self, repository: str) -> Path:
        return self.root / V2_ROOT / "repositories" / repository

    def tag_dir(self, image: ImageName) -> Path:
        return self.repository_dir(image.repository) / "_manifests" / "tags" / image.tag

    def snapshot(self, images: list[ImageName]) -> list[TagState]:
        """What each tag (and its repository) is now, before an import touches it."""
        states = []
        for image in images:
            link = self.tag_dir(image) / "current" / "link"
            states.append(TagState(image, self.repository_dir(image.repository).is_dir(),
                                   link.read_text() if link.is_file() else None))
        return states

    def restore(self, states: list[TagState]) -> None:
        """Put every tag of `states` back as it was; raises OSError."""
        for state in states:
            tag_dir = self.tag_dir(state.image)
            if not state.repository_existed:
                shutil.rmtree(self.repository_dir(state.image.repository), ignore_errors=True)
            elif state.link is None:
                shutil.rmtree(tag_dir, ignore_errors=True)
            else:
                link = tag_dir / "current" / "link"
                link.parent.mkdir(parents=True, exist_ok=True)
                link.write_text(state.link)
