"""Gather a rescue host's facts and print them as one JSON object (runs ON the rescue host).

This file is sent as-is to `python3 -` over SSH, so it must stay standard-library only, Python 3.9
compatible, and import nothing from provisioner. Local code (provisioner.remote.inspect) parses its output.
Machine output is read as data: `lsblk --json --bytes`, /proc and /sys, never prose.
"""

import json
import os
import platform
import shutil
import subprocess
import sys

TOOLS = ("lsblk", "partx", "sgdisk", "sfdisk", "wipefs", "blkid", "mount", "mdadm", "dmsetup", "zstd",
         "lbzip2", "bzip2", "gpg", "udevadm")
COLUMNS = ("NAME,PATH,TYPE,SIZE,FSTYPE,LABEL,PARTLABEL,MOUNTPOINT,RO,MAJ:MIN", "NAME,TYPE,SIZE,FSTYPE,LABEL,MOUNTPOINT,RO")


def read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def lsblk():
    # Older util-linux (rescue images lag behind) lacks PATH/PARTLABEL: retry with fewer columns.
    error = "lsblk not found"
    for columns in COLUMNS:
        try:
            proc = subprocess.run(["lsblk", "--json", "--bytes", "-o", columns], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, universal_newlines=True, check=False)
        except OSError as exc:
            return None, str(exc)
        if proc.returncode == 0:
            return json.loads(proc.stdout), ""
        error = proc.stderr.strip()
    return None, error


def holders():
    result = {}
    for disk in sorted(os.listdir("/sys/block")):
        base = "/sys/block/" + disk
        names = [disk] + [e for e in sorted(os.listdir(base)) if e.startswith(disk)]
        for name in names:
            path = base + "/holders" if name == disk else base + "/" + name + "/holders"
            try:
                entries = sorted(os.listdir(path))
            except OSError:
                continue
            if entries:
                result[name] = entries
    return result


def meminfo():
    values = {}
    for line in read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if key in ("MemTotal", "MemAvailable") and parts:
            values[key] = int(parts[0]) * 1024
    return values


def main():
    tree, lsblk_error = lsblk()
    facts = {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": list(sys.version_info[:3]),
        "python_path": sys.executable,
        "euid": os.geteuid(),
        "lsblk": tree,
        "lsblk_error": lsblk_error,
        "mounts": [line.split()[:3] for line in read("/proc/self/mounts").splitlines() if line.strip()],
        "swaps": [line.split()[0] for line in read("/proc/swaps").splitlines()[1:] if line.strip()],
        "mdstat": read("/proc/mdstat"),
        "holders": holders(),
        "memory": meminfo(),
        "tools": {tool: shutil.which(tool) for tool in TOOLS},
    }
    json.dump(facts, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":  # `python3 -` runs it as __main__
    main()
