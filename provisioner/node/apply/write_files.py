"""`write_files:` -> files written atomically with their permissions and owner (coreos-cloudinit system/file.go).

Contents arrive decoded (cloudconfig.model). Each file: parent directories made 0755, a temporary file
in the same directory, chmod, chown, rename; a file already as wanted is left alone. A failing entry does
not stop the others; the module then fails naming every entry that did not make it.
"""

from __future__ import annotations

from provisioner.cloudconfig.model import CloudConfig
from provisioner.node.apply.target import ApplyError, Target


def apply(config: CloudConfig, target: Target) -> None:
    """Raises ApplyError naming the entries (line and path) that could not be written."""
    failures = []
    for entry in config.write_files:
        try:
            owner = target.owner_ids(entry.owner, f"write_files {entry.path}")
            target.write_file(entry.path, entry.content, entry.permissions, owner)
        except ApplyError as exc:
            failures.append(f"line {entry.line}: {exc}")
    if failures:
        raise ApplyError("; ".join(failures))
