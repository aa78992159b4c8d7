"""What the operator's pages show, computed from the server's own state (pure: no I/O, no clock).

A row per machine: every MAC the machine log holds (machines.py) and every MAC an inventory group
selects, with the group and profile the server would pick for it now (its MAC, plus `os=installed`
when it is marked installed, as http.py asks), and the step of its current boot in words.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from provisioner.inventory import Inventory, MachineQuery
from provisioner.pxe.installed import LABEL, VALUE
from provisioner.pxe.machines import MachineRecord

# (key, label) in boot order; the key is what the stage filter and the row's data-stage carry.
STAGES = (("unseen", "not seen yet"), ("dhcp", "DHCP"), ("tftp", "TFTP"), ("ipxe", "iPXE"), ("kernel", "kernel"),
          ("installing", "installing"), ("install-failed", "install failed"), ("installed", "installed"),
          ("disk", "booted from disk"), ("reinstall", "reinstall pending"), ("other", "other"))
STAGE_LABELS = dict(STAGES)

# machines.STAGE_ORDER (and http-boot) -> the step of the boot it belongs to
_STEP = {"dhcp-offer": "dhcp", "dhcp-ack": "dhcp", "dhcp-boot-server": "dhcp", "tftp": "tftp", "tftp-done": "tftp",
         "boot-script": "ipxe", "ipxe-script": "ipxe", "http-boot": "ipxe", "kernel": "kernel", "initrd": "kernel",
         "asset": "kernel", "cloud-config": "kernel", "ignition": "kernel", "generic": "kernel", "metadata": "kernel",
         "install": "installing", "install-error": "install-failed", "install-done": "installed",
         "installed": "installed", "reinstall": "reinstall", "update-check": "disk"}   # only a booted disk checks
# What an installed machine fetches once its script has sent it to its disk (the `installed` profile).
_FROM_DISK = ("ipxe-script", "cloud-config", "ignition", "generic", "metadata")
_INSTALL_STAGES = ("install", "install-error", "install-done")


@dataclass(frozen=True)
class Row:
    mac: str
    dom_id: str                    # the <tr id>: the live updates replace the row with this id
    hostname: str | None
    group: str | None
    profile: str | None
    stage: str                     # a STAGES key
    percent: int | None            # install progress, while installing
    ip: str | None
    firmware: str | None
    last_seen: str | None          # UTC, for people
    installed: bool

    @property
    def stage_label(self) -> str:
        return STAGE_LABELS[self.stage]


def dom_id(mac: str) -> str:
    """An HTML id for a machine's row: 52:54:00:00:00:01 -> m-52-54-00-00-00-01 (pure)."""
    return "m-" + mac.replace(":", "-").replace(".", "-")   # a MAC, or ip:<IPv4 address> (machines.py)


def boot_step(last_stage: str | None, installed: bool) -> str:
    """The STAGES key for a machine's last recorded stage (a refused fetch counts as its step)."""
    if last_stage is None:
        return "unseen"
    stage = last_stage.removesuffix("-refused")
    if installed and stage in _FROM_DISK:
        return "disk"
    return _STEP.get(stage, "other")


def install_percent(history: Iterable[Mapping]) -> int | None:
    """The percent of the newest install report, when it has one."""
    for entry in reversed(list(history)):
        if entry.get("stage") in _INSTALL_STAGES:
            percent = entry.get("percent")
            return percent if isinstance(percent, int) else None
    return None


def firmware(arch: str | None) -> str | None:
    """BIOS or UEFI from the DHCP client architecture name ("bios", "efi-x64", "efi-x64-http")."""
    if not arch:
        return None
    if arch == "bios":
        return "BIOS"
    if arch.startswith("efi"):
        return "UEFI HTTP" if arch.endswith("-http") else "UEFI"
    return arch


def utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def machine_query(mac: str, installed: bool) -> MachineQuery | None:
    """What the server renders the machine's script for: its MAC, and os=installed once installed."""
    if mac.startswith("ip:"):   # a client the server knows only by address (machines.py)
        return None
    return MachineQuery(mac=mac, labels={LABEL: VALUE} if installed else {})


def inventory_macs(inventory: Inventory | None) -> set[str]:
    """Every MAC a group selects."""
    if inventory is None:
        return set()
    return {value for group in inventory.groups for key, value in group.selector if key == "mac"}


def row(mac: str, record: MachineRecord | None, installed: bool, inventory: Inventory | None) -> Row:
    group = profile = hostname = None
    query = machine_query(mac, installed)
    if inventory is not None and query is not None:
        match = inventory.match(query)
        if match is not None:
            group, profile = match.group.id, match.group.profile
            name = match.group.metadata.get("hostname") or dict(match.group.selector).get("hostname")
            hostname = str(name) if name else None
    stage = boot_step(record.last_stage if record else None, installed)
    return Row(mac=mac, dom_id=dom_id(mac), hostname=hostname, group=group, profile=profile, stage=stage,
               percent=install_percent(record.history) if record and stage == "installing" else None,
               ip=record.ip if record else None, firmware=firmware(record.arch) if record else None,
               last_seen=utc(record.last_seen) if record else None, installed=installed)


def rows(records: Mapping[str, MachineRecord], is_installed: Callable[[str], bool],
         inventory: Inventory | None) -> list[Row]:
    """A row for every machine seen or in the inventory, by MAC (rows stay where they are as they change)."""
    macs = sorted(set(records) | inventory_macs(inventory))
    return [row(mac, records.get(mac), is_installed(mac), inventory) for mac in macs]


def keep(found: Row, stage: str | None, group: str | None) -> bool:
    """Does a row pass the page's filters (empty: any)?"""
    return (not stage or found.stage == stage) and (not group or found.group == group)


@dataclass(frozen=True)
class Candidate:
    """A group the server considered for the machine, in the order it tries them."""

    group: str
    profile: str
    source: str
    selectors: tuple[tuple[str, str, str | None], ...]   # (key, wanted, the machine's value)
    matches: bool
    chosen: bool


def candidates(inventory: Inventory, query: MachineQuery) -> list[Candidate]:
    """Why the machine gets its group: every candidate, its selectors against the machine's labels;
    the first that matches is chosen (Inventory.match)."""
    labels = query.as_labels()
    found, chosen = [], False
    for group in inventory.candidates(query):
        matches = group.matches(labels)
        found.append(Candidate(group=group.id, profile=group.profile, source=group.source,
                               selectors=tuple((k, v, labels.get(k)) for k, v in group.selector),
                               matches=matches, chosen=matches and not chosen))
        chosen = chosen or matches
    return found


@dataclass(frozen=True)
class TimelineEntry:
    at: str
    stage: str
    step: str            # a STAGES key, or "refused"
    detail: str


def timeline(history: Iterable[Mapping]) -> list[TimelineEntry]:
    """A machine's history, newest first, one line of detail per event."""
    entries = []
    for event in reversed(list(history)):
        stage = str(event.get("stage"))
        detail = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("at", "stage"))
        step = "refused" if stage == "refused" else boot_step(stage, False)
        entries.append(TimelineEntry(at=utc(float(event.get("at", 0))), stage=stage, step=step, detail=detail))
    return entries


def install_reports(history: Iterable[Mapping]) -> list[TimelineEntry]:
    return [entry for entry in timeline(history) if entry.stage in _INSTALL_STAGES]
