"""provisioner-boot-success.service: mark the booted USR slot successful only when the node is healthy.

A slot that is already successful (the known-good one) is marked at once: there is nothing to
protect. A new slot (GRUB's one try) is marked when, within a bounded wait, the node is healthy:
- none of the services enabled on it is `failed` (this unit excepted), and none is still starting;
- when it is an etcd member (etcd2.service, the alias of Debian's etcd.service, enabled or started),
  `provisioner node etcd-health` says the cluster is healthy.
Flatcar marks 45 s after update_engine starts whatever the node's health (reference/updates.md §2.7);
here the guard is the node's own services. If the wait runs out the slot stays unmarked (exit 1): its
try is spent, so the next boot falls back to the other slot, and the agent records the version failed.

Pure: `unhealthy_units`, `enabled_names`, `is_etcd_member`.
I/O: `main` (`python3 -m provisioner.node.update.boot_success`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping

from provisioner.core.entry import run_main
from provisioner.errors import ProvisionerError
from provisioner.node.etcd_health import Verdict, cluster_health, verdict
from provisioner.node.kernel_cmdline import read_kernel_cmdline
from provisioner.node.slots import booted_slot_successful, mark_success
from provisioner.node.systemd import Systemctl, SystemdError

PROG = "provisioner-boot-success"
SELF = "provisioner-boot-success.service"
ETCD_UNIT = "etcd2.service"
TIMEOUT_ENV = "PROVISIONER_BOOT_SUCCESS_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
INTERVAL = 5.0

log = logging.getLogger("provisioner.node.update.boot_success")


def unhealthy_units(states: Mapping[str, Mapping[str, str]]) -> list[str]:
    """'<unit> <state>' for each unit that failed or has not finished starting (pure)."""
    bad = []
    for name, props in sorted(states.items()):
        active = props.get("ActiveState", "")
        if name != SELF and active in ("failed", "activating"):
            bad.append(f"{name} {active}")
    return bad


def enabled_names(listing: str) -> list[str]:
    """Service names from `systemctl list-unit-files --no-legend` (pure). Templates (`getty@.service`)
    are no units: their instances are what runs, and `systemctl show` refuses the bare name."""
    names = [line.split()[0] for line in listing.splitlines() if line.split()]
    return [name for name in names if "@." not in name]


def is_etcd_member(unit: Mapping[str, str]) -> bool:
    """From etcd2.service's UnitFileState and ActiveState (pure). `systemctl is-enabled` will not do: it
    exits 0 for an alias, and etcd2.service is always the alias of Debian's etcd.service here; `show`
    reports the state of etcd.service itself. Started by the cloud-config (not enabled) counts too."""
    return (unit.get("UnitFileState") in ("enabled", "enabled-runtime")
            or unit.get("ActiveState") in ("active", "activating", "reloading", "failed"))


def health_problems(systemd: Systemctl) -> list[str]:
    """Why the node is not healthy yet ([] = healthy)."""
    try:
        names = enabled_names(systemd.unit_files("enabled", "service"))
        problems = unhealthy_units(systemd.show(names, ("ActiveState",))) if names else []
        etcd = systemd.show([ETCD_UNIT], ("UnitFileState", "ActiveState"))[ETCD_UNIT]
    except SystemdError as exc:
        # A manager too busy to answer in time (seen: "Connection timed out" while three emulated nodes
        # booted) is a node not healthy yet, asked again, not a verdict: the slot's one try would be spent.
        return [f"systemd did not answer: {exc}"]
    if is_etcd_member(etcd):
        try:
            result = verdict(cluster_health(timeout=5.0))
        except ProvisionerError as exc:
            problems.append(f"etcd: {exc}")
        else:
            if result is not Verdict.HEALTHY:
                problems.append(f"etcd: cluster is {result.value[0]}")
    return problems


def wait_until_healthy(timeout: float, systemd: Systemctl) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        problems = health_problems(systemd)
        if not problems or time.monotonic() >= deadline:
            return problems
        log.info("%s: waiting for a healthy node: %s", PROG, "; ".join(problems))
        time.sleep(INTERVAL)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def body() -> int:
        if not booted_slot_successful(read_kernel_cmdline()):
            timeout = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)
            problems = wait_until_healthy(timeout, Systemctl())
            if problems:
                print(f"{PROG}: the node is not healthy after {timeout:.0f} s ({'; '.join(problems)}): "
                      f"the slot is NOT marked successful, the next boot falls back", flush=True)
                return 1
        print(f"{PROG}: {mark_success(read_kernel_cmdline())}", flush=True)
        return 0

    return run_main(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
