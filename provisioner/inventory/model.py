"""The inventory's records, parsed once at the boundary (loader.py) into frozen dataclasses.

Compatible with matchbox's data directory: profiles (`boot`, `cloud_id`, `ignition_id`,
`generic_id`) and groups (`profile`, `selector`, `metadata`). One key of our own on either:
`require_boot_secret: true` gives the configs a machine gets through that group or profile only to
a request carrying its boot's secret (provisioner/pxe/boot_secrets.py, docs/security.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Selector keys with a meaning of their own; any other key is a free-form label (os=installed).
RESERVED_SELECTORS = ("mac", "uuid", "hostname", "serial", "arch")


@dataclass(frozen=True)
class Boot:
    kernel: str
    initrd: tuple[str, ...] = ()
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    id: str
    name: str
    source: str  # file the profile came from, for messages
    boot: Boot | None = None
    cloud_id: str | None = None
    ignition_id: str | None = None
    generic_id: str | None = None
    require_boot_secret: bool = False


@dataclass(frozen=True)
class Group:
    id: str
    name: str
    profile: str
    source: str
    selector: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs, MAC/UUID normalised
    metadata: Mapping = field(default_factory=lambda: MappingProxyType({}))
    require_boot_secret: bool = False

    @property
    def selector_text(self) -> str:
        """`k=v,k2=v2` — matchbox's deterministic tie-breaker, and how we print a selector."""
        return ",".join(f"{k}={v}" for k, v in self.selector)

    @property
    def specificity_key(self) -> tuple:
        # matchbox: most selectors first; ties by the sorted selector string; then (ours) by id.
        return (-len(self.selector), self.selector_text, self.id)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.selector)
