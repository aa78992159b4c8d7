"""Docker Hub image names as a registry mirror sees them.

dockerd asks a mirror for Docker Hub names with the host stripped and `library/` kept
(distribution's reference.TrimNamed / familiar names): `docker pull busybox` asks the mirror for
`library/busybox:latest`, `docker pull osones/nginx` for `osones/nginx:latest`. So every image is
stored under its normalised Hub path. Names of other registries (quay.io/..., HOST:PORT/...) are
refused: dockerd consults mirrors for Docker Hub names only (moby/moby#18818).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from provisioner.errors import UsageError

HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
DEFAULT_TAG = "latest"
# distribution/reference/regexp.go: path components and tags.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")


@dataclass(frozen=True)
class ImageName:
    repository: str     # e.g. library/busybox
    tag: str            # e.g. latest

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def familiar(self) -> str:
        """The name as a user types it after `docker pull` (library/ dropped)."""
        return f"{self.repository.removeprefix('library/')}:{self.tag}"


def _has_domain(first: str) -> bool:
    # reference.splitDockerDomain: a first component with '.' or ':' (or 'localhost') is a host.
    return "." in first or ":" in first or first == "localhost"


def parse_image_name(text: str, where: str = "image name") -> ImageName:
    """'busybox', 'osones/nginx:1.0', 'docker.io/library/alpine:3.2' -> ImageName; raises UsageError."""
    value = text.strip()
    if "@" in value:
        raise UsageError(f"{where}: {text!r}: give a tag, not a digest")
    first, _, rest = value.partition("/")
    if rest and _has_domain(first):
        if first not in HUB_HOSTS:
            raise UsageError(f"{where}: {text!r} names the registry {first}; nodes use this registry as their "
                             f"Docker Hub mirror, so only Docker Hub names resolve from it (give --name)")
        value = rest
    path, tag = value, DEFAULT_TAG
    last_slash = value.rfind("/")
    colon = value.rfind(":")
    if colon > last_slash:
        path, tag = value[:colon], value[colon + 1:]
    if "/" not in path:
        path = f"library/{path}"
    components = path.split("/")
    if not all(_COMPONENT.fullmatch(c) for c in components) or len(path) > 255:
        raise UsageError(f"{where}: {text!r}: {path!r} is not a repository name (lower-case letters, digits, "
                         f"'.', '_', '-', separated by '/')")
    if not _TAG.fullmatch(tag):
        raise UsageError(f"{where}: {text!r}: {tag!r} is not a tag")
    return ImageName(path, tag)
