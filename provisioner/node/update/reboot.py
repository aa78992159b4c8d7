"""`apply --now`: reboot at once, without the reboot lock (the operator asked for it)."""

from __future__ import annotations

from provisioner.core.commands import run


def reboot_now() -> None:
    """Raises CommandError when systemd refuses."""
    run(["systemctl", "reboot"])
