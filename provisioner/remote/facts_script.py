"""Gather a rescue host's facts and print them as one JSON object (runs ON the rescue host).

This file is sent as-is to `python3 -` over SSH (`provisioner rescue --inspect`), so it must stay
standard-library only, Python 3.9 compatible, and import nothing from provisioner. Local code
(provisioner.remote.inspect) parses its output. Machine output is read as data: `lsblk --json --bytes`,
/proc and /sys, never prose.

`facts(REMOTE_DIR)` (the rescue mode's working directory) also stops an install that a dropped session
left running (REMOTE_DIR/installer.pid) and returns the recorded install states: a rescue install calls
it inside its one remote process (host_script.py), which loads this file as a module.
"""

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

TOOLS = ("lsblk", "partx", "sgdisk", "sfdisk", "wipefs", "blkid", "mount", "mdadm", "dmsetup", "zstd",
         "lbzip2", "bzip2", "gpg", "udevadm")
COLUMNS = ("NAME,PATH,TYPE,SIZE,FSTYPE,LABEL,PARTLABEL,MOUNTPOINT,RO,MAJ:MIN",
           "NAME,TYPE,SIZE,FSTYPE,LABEL,MOUNTPOINT,RO")


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
            proc = subprocess.run(["lsblk", "--json", "--bytes", "-o", columns], capture_output=True,
                                  text=True, check=False)
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


def stop_orphan(remote_dir):
    """Stop the install recorded in REMOTE_DIR/installer.pid if it still runs; its pid, or None.

    The process must name REMOTE_DIR on its command line (the host process is started with it), so a
    pid the kernel gave to something else since is left alone.
    """
    pidfile = os.path.join(remote_dir, "installer.pid")
    try:
        pid = int(read(pidfile).strip() or 0)
    except ValueError:
        pid = 0
    stopped = None
    cmdline = read("/proc/%d/cmdline" % pid).split("\0") if pid > 0 else []
    if pid != os.getpid() and remote_dir in cmdline:
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 10
        while os.path.exists("/proc/%d" % pid) and time.time() < deadline:
            if read("/proc/%d/stat" % pid).split(") ")[-1][:1] == "Z":
                break
            time.sleep(0.05)
        if os.path.exists("/proc/%d" % pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        stopped = pid
    if os.path.exists(pidfile):
        os.unlink(pidfile)
    return stopped


def states(remote_dir):
    result = {}
    try:
        names = sorted(os.listdir(remote_dir))
    except OSError:
        return result
    for name in names:
        if name.startswith("state-") and name.endswith(".json"):
            try:
                state = json.loads(read(os.path.join(remote_dir, name)))
            except ValueError:
                continue
            if isinstance(state, dict) and state.get("disk"):
                result[state["disk"]] = state
    return result


def facts(remote_dir=None):
    """The host's facts as a dict (with `remote_dir`: after stopping an orphaned install)."""
    orphan = stop_orphan(remote_dir) if remote_dir else None
    tree, lsblk_error = lsblk()
    return {
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
        "orphan_stopped": orphan,
        "states": states(remote_dir) if remote_dir else {},
    }


def main():
    json.dump(facts(), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":  # `python3 -` runs it as __main__
    main()
