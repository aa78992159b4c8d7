"""A small client of the registry's HTTP API (Docker Registry HTTP API V2), for listing and checks.

Manifests are asked for with every media type dockerd accepts, so the registry answers with what it
stores (OCI content is refused when the Accept header lacks it).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from provisioner.errors import NetworkError
from provisioner.registry.archive import INDEX_TYPES

ACCEPT = ", ".join((
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
))
TIMEOUT = 30.0


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes

    @property
    def document(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class ImageSummary:
    repository: str
    tag: str
    digest: str
    media_type: str
    size: int           # stored bytes of config and layers (of every image, for an index)

    def as_json(self) -> dict:
        return {"repository": self.repository, "tag": self.tag, "digest": self.digest,
                "media_type": self.media_type, "size": self.size}


class RegistryClient:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def _get(self, path: str, accept: str | None = None) -> tuple[bytes, Any]:
        request = urllib.request.Request(f"{self.url}{path}", headers={"Accept": accept} if accept else {})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return response.read(), response.headers
        except urllib.error.HTTPError as exc:
            raise NetworkError(f"registry {self.url}: GET {path}: HTTP {exc.code} {_error_text(exc)}") from None
        except (OSError, urllib.error.URLError) as exc:
            raise NetworkError(f"registry {self.url}: GET {path}: {getattr(exc, 'reason', exc)}") from None

    def repositories(self) -> list[str]:
        """Every repository, following the catalog's pagination."""
        names: list[str] = []
        path = "/v2/_catalog?n=1000"
        while path:
            body, headers = self._get(path)
            names += json.loads(body).get("repositories") or []
            link = headers.get("Link", "")
            path = link[link.find("<") + 1:link.find(">")] if link.startswith("<") else ""
            if path.startswith(self.url):
                path = path[len(self.url):]
        return sorted(names)

    def tags(self, repository: str) -> list[str]:
        body, _ = self._get(f"/v2/{repository}/tags/list")
        return sorted(json.loads(body).get("tags") or [])

    def manifest(self, repository: str, reference: str) -> Manifest:
        body, headers = self._get(f"/v2/{repository}/manifests/{urllib.parse.quote(reference)}", ACCEPT)
        return Manifest(headers.get("Docker-Content-Digest", ""), headers.get("Content-Type", ""), body)

    def blob(self, repository: str, digest: str) -> bytes:
        return self._get(f"/v2/{repository}/blobs/{digest}")[0]

    def image_size(self, repository: str, manifest: Manifest) -> int:
        document = manifest.document
        if manifest.media_type in INDEX_TYPES:
            return sum(self.image_size(repository, self.manifest(repository, child["digest"]))
                       for child in document.get("manifests", []))
        return document["config"]["size"] + sum(layer["size"] for layer in document.get("layers", []))

    def images(self) -> list[ImageSummary]:
        """Every tag of every repository with its manifest digest and size."""
        summaries = []
        for repository in self.repositories():
            for tag in self.tags(repository):
                manifest = self.manifest(repository, tag)
                summaries.append(ImageSummary(repository, tag, manifest.digest, manifest.media_type,
                                              self.image_size(repository, manifest)))
        return summaries


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        errors = json.loads(exc.read()).get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, OSError, AttributeError):
        return str(exc.reason)
