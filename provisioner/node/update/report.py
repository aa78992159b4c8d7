"""Tell the provisioning server what this node runs: `POST <origin of SERVER>/report?mac=<mac>` with
`{"event": "update", ...}` (the server's report endpoint, provisioner/pxe/reports.py), so that
`provisioner machines` shows each node's booted and available versions.

A report never fails the agent: an unreachable server, or one that is no provisioning server (a plain
HTTP mirror answers 404), is logged and forgotten. The body is what `status` says, trimmed to the
fields the server keeps (pure: `report_body`).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request

log = logging.getLogger("provisioner.node.update")

TIMEOUT = 10.0
MAX_FAILED_LISTED = 8


def report_url(server: str, mac: str) -> str | None:
    """<scheme>://<host>/report?mac=<mac> for an http(s) SERVER (pure); None otherwise."""
    parts = urllib.parse.urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc or not mac:
        return None
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/report", urllib.parse.urlencode({"mac": mac}), ""))


def report_body(status: dict) -> bytes:
    """The update report for one `UpdateAgent.status()` document (pure)."""
    passive = status.get("passive") or {}
    doc = {"event": "update", "state": status["state"], "channel": status["channel"],
           "booted_slot": status["booted"]["slot"], "booted_version": status["booted"]["version"],
           "passive_version": passive.get("version"), "available": status.get("available"),
           "need_reboot": status.get("need_reboot"),
           "failed_versions": status.get("failed_versions", [])[-MAX_FAILED_LISTED:],
           "message": (status.get("message") or "")[:200]}
    return json.dumps(doc).encode()


def send_report(url: str, body: bytes) -> str | None:
    """POST the report; None when the server took it, else why not (never raises)."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:   # noqa: S310 (http(s) only)
            response.read(4096)
        return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))
