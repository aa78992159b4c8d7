"""The update manifest: `<base>/<channel>/<version>/update.json` (+ `update.json.sig`), reached through
the channel's `current` symlink. It names the payload files of that version with their size and
SHA-256; the detached OpenPGP signature by the release key makes those numbers trustworthy, and each
payload file carries its own `.sig` too.

    {"format": 1, "version": "0.2.0", "channel": "stable", "build_id": "…",
     "files": {"usr":    {"name": "<image>_usr.squashfs", "size": 1, "sha256": "…"},
               "kernel": {"name": "<image>_pxe.vmlinuz",  "size": 1, "sha256": "…"},
               "initrd": {"name": "<image>_initrd.gz",    "size": 1, "sha256": "…"}}}

Payload URLs are `<base>/<channel>/<version>/<name>`: by version, not through `current`, so a release
published while a node downloads cannot mix two versions. Parsed once here (pure); the release side
(provisioner/image/update_release.py) writes it with `manifest_json`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from provisioner.core.jsondoc import parse_json_object
from provisioner.errors import ConfigError
from provisioner.node.update.version import VersionError, parse_version

MANIFEST_NAME = "update.json"
FORMAT = 1
PARTS = ("usr", "kernel", "initrd")
MAX_MANIFEST = 16384
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class ManifestError(ConfigError):
    """An update manifest that is not what the release side writes."""


@dataclass(frozen=True)
class PayloadFile:
    name: str
    size: int
    sha256: str

    def to_json(self) -> dict:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Manifest:
    version: str
    channel: str
    build_id: str
    files: dict[str, PayloadFile]   # PARTS -> file

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": self.version, "channel": self.channel, "build_id": self.build_id,
                "files": {part: self.files[part].to_json() for part in PARTS}}

    def file_url(self, base: str, part: str) -> str:
        """<base>/<channel>/<version>/<name>; `base` is update.conf's SERVER."""
        return f"{base.rstrip('/')}/{self.channel}/{self.version}/{self.files[part].name}"


def manifest_json(manifest: Manifest) -> bytes:
    return (json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n").encode()


def parse_manifest(data: bytes, source: str = MANIFEST_NAME) -> Manifest:
    """Raises ManifestError naming `source` and the field."""
    try:
        doc = parse_json_object(data, MAX_MANIFEST)
    except ValueError as exc:
        raise ManifestError(f"{source}: {exc}") from None
    if doc.get("format") != FORMAT:
        raise ManifestError(f"{source}: format: {doc.get('format')!r} is not {FORMAT}")
    fields = {}
    for key in ("version", "channel", "build_id"):
        value = doc.get(key)
        if not isinstance(value, str) or not value:
            raise ManifestError(f"{source}: {key}: must be a non-empty string")
        fields[key] = value
    try:
        parse_version(fields["version"])
    except VersionError as exc:
        raise ManifestError(f"{source}: {exc}") from None
    files_doc = doc.get("files")
    if not isinstance(files_doc, dict):
        raise ManifestError(f"{source}: files: must be an object with {', '.join(PARTS)}")
    files = {}
    for part in PARTS:
        entry = files_doc.get(part)
        where = f"{source}: files.{part}"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: missing")
        name, size, sha256 = entry.get("name"), entry.get("size"), entry.get("sha256")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ManifestError(f"{where}.name: {name!r} is not a plain file name")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ManifestError(f"{where}.size: {size!r} is not a positive byte count")
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise ManifestError(f"{where}.sha256: not 64 lower-case hex digits")
        files[part] = PayloadFile(name, size, sha256)
    return Manifest(fields["version"], fields["channel"], fields["build_id"], files)
