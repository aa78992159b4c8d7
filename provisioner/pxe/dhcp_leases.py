"""DHCP leases for full-DHCP mode: a pure allocator and a JSON file that survives restarts.

Allocation order (RFC 2131 §4.3.1 asks servers to prefer the client's previous address):
static lease from the inventory > the client's current or previous lease > the address it asks
for (option 50) if free > the lowest free address in the range > the longest-expired lease.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from provisioner.core.files import write_atomic
from provisioner.errors import ConfigError, UsageError

OFFER_HOLD_SECONDS = 60  # an offered address is held this long for the REQUEST that should follow


class LeaseState(StrEnum):
    OFFERED = "offered"      # held for the REQUEST that should follow, not persisted
    BOUND = "bound"


@dataclass(frozen=True)
class LeaseRecord:
    mac: str
    ip: str
    expires: float           # unix time
    hostname: str | None = None
    state: LeaseState = LeaseState.BOUND


@dataclass(frozen=True)
class DhcpRange:
    start: ipaddress.IPv4Address
    end: ipaddress.IPv4Address
    network: ipaddress.IPv4Network
    router: str | None
    dns: tuple[str, ...]
    lease_seconds: int

    def __contains__(self, ip: str) -> bool:
        try:
            address = ipaddress.IPv4Address(ip)
        except ValueError:
            return False
        return self.start <= address <= self.end

    def addresses(self) -> Iterator[str]:
        for value in range(int(self.start), int(self.end) + 1):
            yield str(ipaddress.IPv4Address(value))


def parse_dhcp_range(text: str, network: ipaddress.IPv4Network, router: str | None = None,
                     dns: tuple[str, ...] = (), lease_seconds: int = 3600) -> DhcpRange:
    """Parse `--dhcp-range START,END` against the interface's network; raises UsageError."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise UsageError(f"--dhcp-range: {text!r} is not START,END (e.g. 10.9.0.50,10.9.0.200)")
    try:
        start, end = ipaddress.IPv4Address(parts[0]), ipaddress.IPv4Address(parts[1])
    except ValueError as exc:
        raise UsageError(f"--dhcp-range: {exc}") from None
    if start > end:
        raise UsageError(f"--dhcp-range: start {start} is after end {end}")
    for address in (start, end):
        if address not in network:
            raise UsageError(f"--dhcp-range: {address} is not in the interface's network {network}")
    if lease_seconds < 60:
        raise UsageError(f"--lease-time: {lease_seconds} s is shorter than 60 s")
    return DhcpRange(start, end, network, router, dns, lease_seconds)


def allocate(leases: dict[str, LeaseRecord], mac: str, pool: DhcpRange, static: dict[str, str],
             now: float, requested: str | None = None) -> str | None:
    """The address to give `mac`, or None when the range is exhausted (pure)."""
    if mac in static:
        return static[mac]
    reserved_static = set(static.values())
    held = {r.ip for r in leases.values() if r.mac != mac and r.expires > now}
    taken = held | reserved_static

    current = leases.get(mac)
    if current is not None and current.ip in pool and current.ip not in taken:
        return current.ip
    if requested is not None and requested in pool and requested not in taken:
        return requested
    used = {r.ip for r in leases.values() if r.mac != mac}
    for address in pool.addresses():
        if address not in taken and address not in used:
            return address
    expired = sorted((r for r in leases.values() if r.mac != mac and r.expires <= now and r.ip in pool
                      and r.ip not in reserved_static), key=lambda r: r.expires)
    return expired[0].ip if expired else None


class LeaseStore:
    """Leases in one JSON file (`<state dir>/leases.json`), rewritten atomically on every change."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.leases: dict[str, LeaseRecord] = self._load()

    def _load(self) -> dict[str, LeaseRecord]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.path}: cannot read leases: {exc}") from None
        try:
            records = [LeaseRecord(**{**item, "state": LeaseState(item.get("state", LeaseState.BOUND))})
                       for item in raw.get("leases", [])]
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            raise ConfigError(f"{self.path}: malformed lease entry: {exc}") from None
        return {record.mac: record for record in records}

    def put(self, record: LeaseRecord, persist: bool = True) -> None:
        self.leases[record.mac] = record
        if persist:
            self.save()

    def remove(self, mac: str) -> None:
        if self.leases.pop(mac, None) is not None:
            self.save()

    def save(self) -> None:
        data = {"leases": [asdict(r) for r in sorted(self.leases.values(), key=lambda r: r.ip)]}
        write_atomic(self.path, json.dumps(data, indent=1) + "\n", mode=0o600)
