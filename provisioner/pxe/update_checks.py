"""Nodes' update checks as the boot server sees them: what `provisioner machines` shows as UPDATE.

The update agent (node/update/agent.py) fetches its channel's manifest from the release tree the
server publishes under /assets/ (`<...>/<channel>/current/update.json`), and, as update_engine's Omaha
request carries the instance's version, its query says what the node runs:
`?booted=0.2.0&slot=USR-B&state=IDLE&failed=0.3.0`. The server records that request as the machine's
`update-check` stage, with the version `current` pointed to when it answered (`offered`).

An observation, like the DHCP and asset events: it changes nothing the server decides (no boot
script, no install mark), so it needs no boot secret — which an installed node no longer has
(`POST /installed` revokes it). The values are cut to a few short tokens. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from provisioner.node.update.manifest import MANIFEST_NAME

STAGE = "update-check"
QUERY_KEYS = ("booted", "slot", "state", "failed")
_TOKEN = re.compile(r"[^A-Za-z0-9._,+-]")
MAX_VALUE = 80


def check_detail(served: Path, query: Mapping[str, str]) -> dict[str, str] | None:
    """The event detail for a served file that is a channel's manifest, else None."""
    if served.name != MANIFEST_NAME:
        return None
    detail = {"offered": served.parent.name}
    for key in QUERY_KEYS:
        value = _TOKEN.sub("", query.get(key, ""))[:MAX_VALUE]
        if value:
            detail[key] = value
    return detail


def update_summary(history: list[dict]) -> str | None:
    """The last update check in a machine's history as a few words, or None when it never checked."""
    for entry in reversed(history):
        if entry.get("stage") == STAGE:
            words = f"{entry.get('booted', '?')} ({entry.get('slot', '?')}), offered {entry.get('offered', '?')}"
            if entry.get("state") and entry["state"] != "IDLE":
                words += f", {entry['state']}"
            if entry.get("failed"):
                words += f", failed {entry['failed']}"
            return words
    return None
