"""Render and validate what every machine of a data dir would be served, as a summary table.

This is the first stage of `make demo` (and works on any data dir): for each group, the machine its
selector describes gets its iPXE script and configs rendered exactly as the server would, and each
cloud-config is validated with the coreos-cloudinit rules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from provisioner.errors import ProvisionerError
from provisioner.inventory import Inventory, MachineQuery
from provisioner.render import Renderer


@dataclass(frozen=True)
class MachineSummary:
    group: str
    selector: str
    profile: str
    ipxe: str  # first line after the shebang, shortened, or the error
    cloud_config: str  # "N lines, valid", "N warnings", "-" or the error
    ok: bool


def summarise(inventory: Inventory, server_url: str) -> tuple[list[MachineSummary], float]:
    """One row per group; returns the rows and the seconds it took."""
    renderer = Renderer(inventory, server_url=server_url)
    rows = []
    start = time.monotonic()
    for group in inventory.groups:
        query = MachineQuery.for_group(group)
        ok = True
        try:
            ipxe = _describe_script(renderer.ipxe(query))
        except ProvisionerError as exc:
            ipxe, ok = f"ERROR {exc}", False
        profile = inventory.profiles.get(group.profile)
        cloud = "-"
        if profile is not None and profile.cloud_id:
            try:
                text, report = renderer.cloud_config_report(query)
                warnings = sum(1 for e in report.entries if e.kind == "warning")
                cloud = f"{len(text.splitlines())} lines, valid" + (f", {warnings} warnings" if warnings else "")
            except ProvisionerError as exc:
                cloud, ok = f"ERROR {exc}", False
        rows.append(MachineSummary(group.id, group.selector_text or "(default)", group.profile, ipxe, cloud, ok))
    return rows, time.monotonic() - start


def _describe_script(script: str) -> str:
    """`kernel <file> (+N args, M initrds)` or `local disk`: the gist of an iPXE script."""
    lines = script.splitlines()
    kernel = next((line.split() for line in lines if line.startswith("kernel ")), None)
    if kernel is None:
        return "local disk" if any(line.split()[:1] == ["exit"] for line in lines) else f"{len(lines)} lines"
    initrds = sum(1 for line in lines if line.startswith("initrd "))
    return f"kernel {kernel[1].rsplit('/', 1)[-1]} (+{len(kernel) - 2} args, {initrds} initrd)"
