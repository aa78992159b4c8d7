"""What the boot server's services tell it: one BootEvent per step of a machine's boot, and counts.

DHCP knows the client's MAC; TFTP and asset requests know only its address (the server maps that
to a MAC, machines.py); HTTP requests that name the machine (`?mac=`) know both. The server records
every event in the machine state, whichever service, or HTTP worker process, saw it. Counts go to
the server's one `Counters` dict (exported on /metrics), each service's keys prefixed with its name:
`dhcp_replies`, `tftp_bytes`, `ra_sent`, `http_requests{...}`. A refused write (REFUSED, machines.py)
is an event too: it goes into the named machine's history and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventSource(StrEnum):
    DHCP = "dhcp"
    TFTP = "tftp"
    HTTP = "http"
    ADMIN = "admin"    # the operator, through the admin API (admin.py)


@dataclass(frozen=True, kw_only=True)
class BootEvent:
    stage: str                       # machines.STAGE_ORDER: "dhcp-offer", "tftp-done", "kernel", ...
    source: EventSource
    mac: str | None = None
    ip: str | None = None            # the client's address
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON object (an HTTP worker process sends it to the main process)."""
        return {"stage": self.stage, "source": self.source.value, "mac": self.mac, "ip": self.ip,
                "detail": dict(self.detail)}

    @classmethod
    def from_json(cls, raw: Any) -> BootEvent:
        """The event of a to_json() object; raises ValueError for anything else."""
        try:
            event = cls(stage=raw["stage"], source=EventSource(raw["source"]), mac=raw["mac"], ip=raw["ip"],
                        detail=dict(raw["detail"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a boot event: {exc}") from None
        if not isinstance(event.stage, str) or not all(isinstance(v, (str, type(None))) for v in (event.mac, event.ip)):
            raise ValueError("not a boot event: stage, mac and ip must be strings")
        return event


EventSink = Callable[[BootEvent], None]
Counters = dict[str, int]


def count(counters: Counters, key: str, value: int = 1) -> None:
    """Add to one counter (/metrics: `provisioner_<name>_total{labels}`)."""
    counters[key] = counters.get(key, 0) + value


def count_request(counters: Counters, path: str, status: int) -> None:
    count(counters, f'http_requests{{path="{path}",code="{status}"}}')
