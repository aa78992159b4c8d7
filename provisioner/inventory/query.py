"""What a machine tells us about itself: MAC, UUID, hostname, serial, arch and free-form labels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from provisioner.errors import ConfigError
from provisioner.inventory.identifiers import normalize_mac, normalize_uuid
from provisioner.inventory.model import RESERVED_SELECTORS, Group


@dataclass(frozen=True)
class MachineQuery:
    mac: str | None = None
    uuid: str | None = None
    hostname: str | None = None
    serial: str | None = None
    arch: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    raw_query: str = ""  # the request's query string, for templates ({{ request.raw_query }})

    def __post_init__(self) -> None:
        try:
            if self.mac:
                object.__setattr__(self, "mac", normalize_mac(self.mac))
            if self.uuid:
                object.__setattr__(self, "uuid", normalize_uuid(self.uuid))
        except ValueError as exc:
            raise ConfigError(f"query: {exc}") from None

    @classmethod
    def from_params(cls, params: Mapping[str, str], raw_query: str = "") -> MachineQuery:
        """From HTTP query arguments: reserved keys by name, any other key is a label.

        Empty values are ignored (iPXE sends `hostname=` when it has none). Raises ConfigError
        for a malformed MAC or UUID.
        """
        reserved = {k: params[k] for k in RESERVED_SELECTORS if params.get(k)}
        labels = {k: v for k, v in params.items() if k not in RESERVED_SELECTORS and v != ""}
        return cls(**reserved, labels=labels, raw_query=raw_query)

    def as_labels(self) -> dict[str, str]:
        """Everything a group selector can match on, as one mapping."""
        labels = dict(self.labels)
        for key in RESERVED_SELECTORS:
            value = getattr(self, key)
            if value:
                labels[key] = value
        return labels

    @classmethod
    def for_group(cls, group: Group) -> MachineQuery:
        """A machine that `group`'s selector matches, as a real request would carry it."""
        selector = dict(group.selector)
        return cls.from_params(selector, raw_query="&".join(f"{k}={v}" for k, v in group.selector))
