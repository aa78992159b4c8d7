"""First boot on a disk (provisioner-disk.service, every boot, idempotent).

1. Grow ROOT (partition 9, resize type) to the next partition or the disk end, moving the backup
   GPT to the disk end on the way, and grow its filesystem online: provisioner.disk.resize.grow,
   the same planner + journal `provisioner disk grow` uses (Flatcar: extend-filesystems + cgpt resize).
2. Randomise the disk GUID when it is still the image's magic 00000000-...-000000000001, so two
   disks written from one image are told apart (Flatcar: disk-uuid.service; partition GUIDs and
   filesystem UUIDs stay, since GRUB maps the fixed USR PARTUUIDs to kernels).

Pure: `first_boot_actions`; I/O: `main` (findmnt, sysfs, sfdisk, sgdisk).
"""

from __future__ import annotations

import logging
import os
import sys

from provisioner.core.commands import run
from provisioner.disk import resize
from provisioner.disk.layout import MAGIC_DISK_GUID
from provisioner.errors import ProvisionerError

log = logging.getLogger("provisioner.node.growroot")


def first_boot_actions(root_source: str, disk_guid: str | None) -> list[str]:
    """What to do for a root mounted from root_source with this disk GUID (pure).

    'grow' for a root on a block partition; 'randomize-disk-guid' while the GUID is the magic one."""
    if not root_source.startswith("/dev/"):
        return []
    actions = ["grow"]
    if disk_guid is not None and disk_guid.lower() == MAGIC_DISK_GUID.lower():
        actions.append("randomize-disk-guid")
    return actions


def disk_of_partition(partition: str) -> str:
    """'/dev/vda9' -> '/dev/vda' through sysfs (works for nvme0n1p9 and loop0p9 too)."""
    name = os.path.basename(os.path.realpath(partition))
    parent = os.path.basename(os.path.dirname(os.path.realpath(f"/sys/class/block/{name}")))
    return f"/dev/{parent}"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="provisioner-disk: %(message)s")
    try:
        source = run(["findmnt", "-n", "-o", "SOURCE", "/"]).stdout.strip()
        if not source.startswith("/dev/"):
            print(f"provisioner-disk: root is {source or 'not a block device'} (live system): nothing to do",
                  flush=True)
            return 0
        disk = disk_of_partition(source)
        guid = run(["sfdisk", "--disk-id", disk]).stdout.strip()
        for action in first_boot_actions(source, guid):
            if action == "grow":
                outcome = resize.grow(disk)
                if outcome.applied:
                    print(f"provisioner-disk: {disk}: ROOT grown ({', '.join(s.name for s in outcome.plan.steps)})",
                          flush=True)
                else:
                    print(f"provisioner-disk: {disk}: {outcome.plan.nothing_to_do or 'nothing to grow'}", flush=True)
            elif action == "randomize-disk-guid":
                run(["sgdisk", "--disk-guid=R", disk])
                new = run(["sfdisk", "--disk-id", disk]).stdout.strip()
                print(f"provisioner-disk: {disk}: disk GUID randomised ({new})", flush=True)
    except ProvisionerError as exc:
        print(f"provisioner-disk: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
