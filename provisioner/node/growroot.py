"""First boot on a disk (provisioner-disk.service, every boot, idempotent).

1. Grow ROOT (partition 9, resize type) to the next partition or the disk end, moving the backup
   GPT to the disk end on the way, and grow its filesystem online: provisioner.disk.resize.grow,
   the same planner + journal `provisioner disk grow` uses (Flatcar: extend-filesystems + cgpt resize).
2. Randomise the disk GUID when it is still the image's magic 00000000-...-000000000001, so two
   disks written from one image are told apart (Flatcar: disk-uuid.service; partition GUIDs and
   filesystem UUIDs stay, since GRUB maps the fixed USR PARTUUIDs to kernels).

Pure: `first_boot_actions`; I/O: `grow_and_identify` (findmnt, sysfs, the GPT reader, sgdisk).
"""

from __future__ import annotations

import logging
import sys

from provisioner.core.commands import run
from provisioner.core.entry import run_main
from provisioner.disk import resize
from provisioner.disk.blockdev import disk_of_partition
from provisioner.disk.gpt import read_gpt
from provisioner.disk.layout import MAGIC_DISK_GUID

PROG = "provisioner-disk"


def first_boot_actions(root_source: str, disk_guid: str | None) -> list[str]:
    """What to do for a root mounted from root_source with this disk GUID (pure).

    'grow' for a root on a block partition; 'randomize-disk-guid' while the GUID is the magic one."""
    if not root_source.startswith("/dev/"):
        return []
    actions = ["grow"]
    if disk_guid is not None and disk_guid.lower() == MAGIC_DISK_GUID.lower():
        actions.append("randomize-disk-guid")
    return actions


def grow_and_identify() -> None:
    """Grow ROOT and randomise the magic disk GUID of the disk holding `/`, reporting each on stdout.

    Raises ProvisionerError (CommandError, DiskError)."""
    source = run(["findmnt", "-n", "-o", "SOURCE", "/"]).stdout.strip()
    if not source.startswith("/dev/"):
        print(f"{PROG}: root is {source or 'not a block device'} (live system): nothing to do", flush=True)
        return
    disk = disk_of_partition(source)
    guid = read_gpt(disk).disk_guid
    for action in first_boot_actions(source, guid):
        if action == "grow":
            outcome = resize.grow(disk)
            if outcome.applied:
                print(f"{PROG}: {disk}: ROOT grown ({', '.join(s.name for s in outcome.plan.steps)})", flush=True)
            else:
                print(f"{PROG}: {disk}: {outcome.plan.nothing_to_do or 'nothing to grow'}", flush=True)
        elif action == "randomize-disk-guid":
            run(["sgdisk", "--disk-guid=R", disk])
            new = read_gpt(disk).disk_guid
            print(f"{PROG}: {disk}: disk GUID randomised ({new})", flush=True)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s")
    return run_main(PROG, grow_and_identify)


if __name__ == "__main__":
    sys.exit(main())
