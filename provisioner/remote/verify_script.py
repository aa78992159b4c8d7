"""Check an installed disk ON the rescue host (run by host_script.py after the install, in its process).

It reads the table with the same GPT reader and layout table the installer uses (provisioner.disk.gpt /
.layout, imported from the uploaded zipapp: this module is loaded before the zipapp is on the host, so
those imports sit in the functions), standard library only, Python 3.9 compatible. `verify(DISK,
EXPECT)`, EXPECT = {"files": {"<partition label>:<path>": "<sha256>"}, "state": PATH, "installed":
TEXT}; each file is read from its partition mounted read-only through a loop offset into the disk (no
partition nodes needed; `noload` for ext4: a read-only check must not replay a journal). When nothing
is wrong, TEXT is written to PATH (the `installed` state).
"""

import hashlib
import os
import subprocess
import tempfile


def check_table(disk):
    from provisioner.disk import layout
    from provisioner.disk.gpt import read_gpt

    problems = []
    table = read_gpt(disk, require_valid=False)
    if not table.valid:
        return ["no valid GPT: " + "; ".join(table.problems)], table
    if table.primary is None or not table.primary.valid:
        problems.append("primary GPT header is damaged")
    if table.backup is None or not table.backup.valid:
        problems.append("backup GPT header is missing or damaged")
    if table.disk_guid != layout.MAGIC_DISK_GUID:
        problems.append("disk GUID is %s, not the CoreOS magic %s" % (table.disk_guid, layout.MAGIC_DISK_GUID))
    for spec in layout.COREOS_LAYOUT:
        entry = table.entry(spec.number)
        if entry is None:
            problems.append("partition %d (%s) is missing" % (spec.number, spec.label))
            continue
        if entry.name != spec.label:
            problems.append("partition %d is named %r, expected %r" % (spec.number, entry.name, spec.label))
        if entry.type_guid.upper() != spec.type_guid.upper():
            problems.append("partition %d has type %s, expected %s" % (spec.number, entry.type_guid, spec.type_guid))
        if spec.partuuid and entry.partuuid.upper() != spec.partuuid.upper():
            problems.append("partition %d has PARTUUID %s, expected %s" % (spec.number, entry.partuuid, spec.partuuid))
    return problems, table


def file_digest(disk, entry, sector_size, path):
    mountpoint = tempfile.mkdtemp(prefix="provisioner-verify-")
    where = "offset=%d,sizelimit=%d" % (entry.start_bytes(sector_size), entry.size_bytes(sector_size))
    try:
        for options in ("ro,noload," + where, "ro," + where):
            mount = subprocess.run(["mount", "-o", options, disk, mountpoint], capture_output=True,
                                   text=True)
            if mount.returncode == 0:
                break
        else:
            return None, "cannot mount %s partition %d: %s" % (disk, entry.number, mount.stderr.strip())
        try:
            full = os.path.join(mountpoint, path.lstrip("/"))
            if not os.path.isfile(full):
                return None, "%s is missing on %s" % (path, entry.name)
            with open(full, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            return digest, "mode %o" % (os.stat(full).st_mode & 0o777)
        finally:
            subprocess.run(["umount", mountpoint], capture_output=True)
    finally:
        os.rmdir(mountpoint)


def verify(disk, expect):
    """The check's report: {"disk", "partitions", "files", "problems"} (no problems: the disk is good)."""
    problems, table = check_table(disk)
    report = {"disk": disk, "partitions": [], "files": {}, "problems": problems}
    if table.valid:
        report["partitions"] = [{"number": e.number, "name": e.name, "size": e.size_bytes(table.sector_size)}
                                for e in table.entries]
    for key, want in sorted(expect.get("files", {}).items()):
        label, _, path = key.partition(":")
        entry = table.by_name(label) if table.valid else None
        if entry is None:
            problems.append("%s: no partition labelled %s" % (path, label))
            continue
        digest, detail = file_digest(disk, entry, table.sector_size, path)
        report["files"][key] = {"sha256": digest, "detail": detail}
        if digest is None:
            problems.append(detail)
        elif digest != want:
            problems.append("%s on %s differs from the file sent (sha256 %s)" % (path, label, digest[:12]))
    if not problems and expect.get("state"):
        with open(expect["state"] + ".part", "w") as handle:
            handle.write(expect["installed"])
        os.replace(expect["state"] + ".part", expect["state"])
    return report
