"""Rescue-host facts built in memory for the pure tests (the OVH/Hetzner RAID case among them)."""

from __future__ import annotations

from provisioner.remote import inspect

GB = 1_000_000_000


def host_facts(rows, mounts=(), swaps=(), holders=None):
    return inspect.parse_facts({
        "hostname": "rescue", "kernel": "6.1", "python": [3, 9, 2], "python_path": "/usr/bin/python3",
        "euid": 0, "lsblk": {"blockdevices": rows}, "mounts": [list(m) + ["ext4"] for m in mounts],
        "swaps": list(swaps), "holders": holders or {}, "memory": {"MemTotal": 8 << 30, "MemAvailable": 7 << 30},
        "tools": {"lsblk": "/bin/lsblk", "mdadm": None},
    })


def disk_row(name, size, children=(), type_="disk", ro=False):
    return {"name": name, "path": f"/dev/{name}", "type": type_, "size": size, "ro": ro,
            "children": list(children)}


RAID_ROWS = [
    disk_row("sda", 2000 * GB, [dict(disk_row("sda1", 2000 * GB, [dict(disk_row("md0", 2000 * GB, [
        disk_row("vg0-root", 100 * GB, type_="lvm")], type_="raid1"))], type_="part"))]),
    disk_row("sdb", 2000 * GB, [dict(disk_row("sdb1", 2000 * GB, [dict(disk_row("md0", 2000 * GB, [
        disk_row("vg0-root", 100 * GB, type_="lvm")], type_="raid1"))], type_="part"))]),
    disk_row("nvme0n1", 480 * GB),
    disk_row("sdc", 8 * GB),  # too small (flatcar-install -s: larger than 10 GB)
    disk_row("loop0", 300 * 1 << 20, type_="loop"),
    disk_row("sr0", 700 * 1 << 20, type_="rom", ro=True),
]
