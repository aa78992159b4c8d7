"""Machine state: every boot step the server saw, per MAC, kept in `<state dir>/machines.json`.

Stages, in boot order: dhcp-offer, dhcp-ack, dhcp-boot-server (port 4011), tftp, tftp-done,
boot-script (/boot.ipxe), ipxe-script (/ipxe), kernel, initrd, asset, cloud-config, ignition,
generic, metadata; then the live installer's reports (reports.py): install (with a percent),
install-error or install-done; installed / reinstall (installed.py). TFTP and asset requests carry
no MAC, so the server maps the client IP to a MAC it learned from DHCP, from `/ipxe?mac=` requests,
or from the kernel's neighbour table.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from provisioner.core.files import write_atomic
from provisioner.errors import ConfigError

STAGE_ORDER = ("dhcp-offer", "dhcp-ack", "dhcp-boot-server", "tftp", "tftp-done", "boot-script",
               "ipxe-script", "kernel", "initrd", "asset", "cloud-config", "ignition", "generic", "metadata",
               "install", "install-error", "install-done", "installed", "reinstall")
HISTORY = 64   # events kept per machine (a PXE install + first disk boot records ~35)


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
    """In-memory records plus a debounced JSON file; `record()` is called from the event loop only."""

    def __init__(self, path: Path | None):
        self.path = path
        self.machines: dict[str, MachineRecord] = load_machines(path) if path else {}
        self.ip_to_mac: dict[str, str] = {m.ip: m.mac for m in self.machines.values() if m.ip}
        self.stage_counts: dict[str, int] = {}
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

    def record(self, mac: str, stage: str, detail: dict | None = None, ip: str | None = None,
               now: float | None = None) -> MachineRecord:
        now = time.time() if now is None else now
        detail = {k: v for k, v in (detail or {}).items() if v is not None}
        rec = self.machines.get(mac)
        if rec is None:
            rec = self.machines[mac] = MachineRecord(mac=mac, first_seen=now, last_seen=now, last_stage=stage)
        rec.last_seen, rec.last_stage = now, stage
        rec.stages[stage] = now
        if ip and ip != "0.0.0.0":
            rec.ip = ip
            self.ip_to_mac[ip] = mac
        if detail.get("ip"):
            rec.ip = detail["ip"]
            self.ip_to_mac[detail["ip"]] = mac
        if detail.get("arch") is not None:
            rec.arch = str(detail["arch"])
        rec.history.append({"at": round(now, 3), "stage": stage, **detail})
        del rec.history[:-HISTORY]
        self.stage_counts[stage] = self.stage_counts.get(stage, 0) + 1
        self.dirty = True
        return rec

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


def machine_rows(machines: dict[str, MachineRecord]) -> list[dict]:
    """What `provisioner machines` prints: one row per MAC, most recent first (pure)."""
    rows = []
    for rec in sorted(machines.values(), key=lambda m: m.last_seen, reverse=True):
        rows.append({"mac": rec.mac, "ip": rec.ip, "arch": rec.arch, "last_stage": rec.last_stage,
                     "last_seen": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rec.last_seen)),
                     "last_seen_unix": rec.last_seen,
                     "stages": [s for s in STAGE_ORDER if s in rec.stages],
                     "install": install_summary(rec.history)})
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
