"""Machine state: every boot step the server saw, per MAC, kept in `<state dir>/machines.json`.

Stages, in boot order: dhcp-offer, dhcp-ack, dhcp-boot-server (port 4011), tftp, tftp-done,
boot-script (/boot.ipxe), ipxe-script (/ipxe), kernel, initrd, asset, cloud-config, ignition,
generic, metadata; then the live installer's reports (reports.py): install (with a percent),
install-error or install-done; installed (the install's `POST /installed`, or the operator) and
reinstall (the operator, admin.py); update-check (an installed node's update agent, update_checks.py).
TFTP and asset requests carry no MAC, so the server maps the client IP to a MAC it learned from
DHCP, from `/ipxe?mac=` requests, or from the kernel's neighbour table.

A write the server refused (no or a wrong boot secret, boot_secrets.py) goes into the history of the
machine it named as a `refused` entry (path, reason, the sender's address) and changes nothing else:
not the machine's last stage, not its address. A refused write about a MAC the server never saw is
only counted: a forger must not be able to create records.

Bounds (limits.py): HISTORY events per machine, at most `max_machines` machines (the one seen
longest ago is dropped first); both count what they drop for /metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from provisioner.core.files import write_atomic
from provisioner.errors import ConfigError
from provisioner.pxe.limits import MAX_MACHINES, RecentMap
from provisioner.pxe.update_checks import update_summary

STAGE_ORDER = ("dhcp-offer", "dhcp-ack", "dhcp-boot-server", "tftp", "tftp-done", "boot-script",
               "ipxe-script", "kernel", "initrd", "asset", "cloud-config", "ignition", "generic", "metadata",
               "install", "install-error", "install-done", "installed", "reinstall", "update-check")
HISTORY = 64   # events kept per machine (a PXE install + first disk boot records ~35)
REFUSED = "refused"   # a history entry for a write the server refused (not a boot stage)


@dataclass
class MachineRecord:
    mac: str
    first_seen: float
    last_seen: float
    last_stage: str
    ip: str | None = None
    arch: str | None = None
    stages: dict[str, float] = field(default_factory=dict)       # stage -> last time seen
    history: list[dict] = field(default_factory=list)            # newest last


def parse_neighbours(text: str) -> dict[str, str]:
    """IP -> MAC from the text of /proc/net/arp (pure); incomplete entries (00:00:..) are skipped."""
    table: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[3] != "00:00:00:00:00:00":
            table[fields[0]] = fields[3].lower()
    return table


class MachineStates:
    """In-memory records plus a debounced JSON file; `record()` is called from the event loop only.

    The MachineLog interface (state.py) on `<state dir>/machines.json`."""

    def __init__(self, path: Path | None, max_machines: int = MAX_MACHINES):
        self.path = path
        self.machines: RecentMap[str, MachineRecord] = RecentMap(max_machines)
        for record in sorted((load_machines(path) if path else {}).values(), key=lambda m: m.last_seen):
            self.machines[record.mac] = record
        self.ip_to_mac: dict[str, str] = {m.ip: m.mac for m in self.machines.values() if m.ip}
        self.stage_counts: dict[str, int] = {}
        self.history_dropped = 0
        self.refusals_unknown = 0   # refused writes naming a MAC we never saw
        self.dirty = False

    def mac_for_ip(self, ip: str) -> str | None:
        mac = self.ip_to_mac.get(ip)
        if mac is None:
            try:
                mac = parse_neighbours(Path("/proc/net/arp").read_text()).get(ip)
            except OSError:
                mac = None
            if mac:
                self.ip_to_mac[ip] = mac
        return mac

    def _learn_ip(self, ip: str, mac: str) -> None:
        self.ip_to_mac[ip] = mac
        if len(self.ip_to_mac) > 2 * self.machines.limit:   # addresses of dropped machines linger otherwise
            known = {m.ip for m in self.machines.values()}
            self.ip_to_mac = {a: m for a, m in self.ip_to_mac.items() if a in known}

    def _append(self, rec: MachineRecord, entry: dict) -> None:
        rec.history.append(entry)
        if len(rec.history) > HISTORY:
            self.history_dropped += len(rec.history) - HISTORY
            del rec.history[:-HISTORY]
        self.dirty = True

    def record(self, mac: str, stage: str, detail: dict | None = None, ip: str | None = None,
               now: float | None = None) -> MachineRecord:
        now = time.time() if now is None else now
        detail = {k: v for k, v in detail.items() if v is not None} if detail else {}
        rec = self.machines.get(mac)
        if rec is None:
            rec = MachineRecord(mac=mac, first_seen=now, last_seen=now, last_stage=stage)
            self.machines[mac] = rec
        else:
            self.machines.move_to_end(mac)   # the most recently seen: dropped last
        rec.last_seen, rec.last_stage = now, stage
        rec.stages[stage] = now
        if ip and ip != "0.0.0.0":
            rec.ip = ip
            if self.ip_to_mac.get(ip) != mac:
                self._learn_ip(ip, mac)
        if detail.get("ip"):
            rec.ip = detail["ip"]
            self._learn_ip(detail["ip"], mac)
        if detail.get("arch") is not None:
            rec.arch = str(detail["arch"])
        self._append(rec, {"at": round(now, 3), "stage": stage, **detail})
        self.stage_counts[stage] = self.stage_counts.get(stage, 0) + 1
        return rec

    def record_refusal(self, mac: str, detail: Mapping[str, Any], now: float | None = None) -> bool:
        """Add a refused write to `mac`'s history, nothing else; False (counted) for a MAC never seen."""
        rec = self.machines.get(mac)
        if rec is None:
            self.refusals_unknown += 1
            return False
        now = time.time() if now is None else now
        self._append(rec, {"at": round(now, 3), "stage": REFUSED,
                           **{k: v for k, v in detail.items() if v is not None}})
        self.stage_counts[REFUSED] = self.stage_counts.get(REFUSED, 0) + 1
        return True

    def forget(self, mac: str) -> bool:
        """Drop everything recorded about `mac`; False when there was nothing."""
        rec = self.machines.pop(mac, None)
        if rec is None:
            return False
        self.ip_to_mac = {a: m for a, m in self.ip_to_mac.items() if m != mac}
        self.dirty = True
        return True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        data = {"machines": [asdict(m) for m in sorted(self.machines.values(), key=lambda m: m.mac)]}
        write_atomic(self.path, json.dumps(data, indent=1) + "\n", mode=0o600)
        self.dirty = False


def load_machines(path: Path) -> dict[str, MachineRecord]:
    """Read machines.json; a missing file is an empty state. Raises ConfigError when unreadable."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read machine state: {exc}") from None
    try:
        return {m["mac"]: MachineRecord(**m) for m in raw.get("machines", [])}
    except (TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"{path}: malformed machine record: {exc}") from None


def machine_rows(machines: Mapping[str, MachineRecord], installed: Collection[str] = ()) -> list[dict]:
    """What `provisioner machines` prints: one row per MAC, most recent first (pure). `servers`: the boot
    servers that saw its events (with the state in etcd; empty with the files)."""
    rows = []
    for rec in sorted(machines.values(), key=lambda m: m.last_seen, reverse=True):
        rows.append({"mac": rec.mac, "ip": rec.ip, "arch": rec.arch, "last_stage": rec.last_stage,
                     "installed": rec.mac in installed,
                     "last_seen": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rec.last_seen)),
                     "last_seen_unix": rec.last_seen,
                     "stages": [s for s in STAGE_ORDER if s in rec.stages],
                     "install": install_summary(rec.history),
                     "update": update_summary(rec.history),
                     "servers": sorted({str(e["server"]) for e in rec.history if e.get("server")})})
    return rows


def install_summary(history: list[dict]) -> str | None:
    """The last install report in a machine's history as a few words ("45%", "done", "error: ..."),
    or None when the machine never reported (pure)."""
    for entry in reversed(history):
        stage = entry.get("stage")
        if stage == "install-done":
            return "done"
        if stage == "install-error":
            return f"error: {entry.get('message') or entry.get('step') or '?'}"
        if stage == "install":
            percent = entry.get("percent")
            return f"{percent}%" if percent is not None else str(entry.get("event"))
    return None
