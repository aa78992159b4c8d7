"""The one process a rescue install runs ON the rescue host: inspect, wait for the decision, install, verify.

Started as `python3 -c BOOT REMOTE_DIR DISK` (rescue.BOOT loads facts_script.py, verify_script.py and
this file from stdin as modules and calls `main(facts_script, verify_script)`), so the whole install
costs one SSH exec and one python3 start, and the local side's decisions (disk choice, busy checks, the
operator's confirmation) sit between the facts and the install without a second round trip. Standard
library only, Python 3.9 compatible; the installer and the GPT reader are imported from the uploaded
zipapp once it is written.

Our stdout lines start with MARK; every other line is the installer's JSON progress (its stdout).
1. `MARK facts {...}`: facts_script.facts(REMOTE_DIR) plus "disk": DISK with its symlinks followed
   (/dev/disk/by-id/...), null when there is no such path;
2. then one JSON request per stdin line:
   - {"op": "payload", "files": [[NAME, SIZE], ...]} and the files' bytes: kept in memory, nothing written;
   - {"op": "stop", "commands": [ARGV, ...]} (--stop-raid): run in order up to the first failure, one
     `MARK ran {"argv", "exit", "stderr"}` each, then a new `MARK facts {...}`;
   - {"op": "install", "disk": DISK, "state": NAME, "installing": TEXT, "argv": [...], "expect": {...},
     "reboot": ARGV}:
     write the payload (mode 0600: a cloud-config may carry secrets), the `installing` state and this
     process's pid (facts_script.stop_orphan stops an install a dropped session left), run the installer
     in this process, then `MARK verify` and the check's JSON report (verify_script.verify), and run
     ARGV detached when the check passed (--reboot);
   - {"op": "abort"} or the end of stdin (the operator said no, or the link dropped): exit, nothing written.
Exit status: the installer's when it failed, UNPACK_FAILED when the payload cannot be written, else 0.
"""

import json
import os
import subprocess
import sys

MARK = "provisioner-rescue:"
UNPACK_FAILED = 90


def say(kind, data=None):
    line = MARK + " " + kind + ("" if data is None else " " + json.dumps(data))
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def inspect(facts_script, remote_dir, disk):
    data = facts_script.facts(remote_dir)
    data["disk"] = os.path.realpath(disk) if os.path.exists(disk) else None
    say("facts", data)


def stop(facts_script, commands, remote_dir, disk):
    for argv in commands:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        say("ran", {"argv": argv, "exit": proc.returncode, "stderr": proc.stderr})
        if proc.returncode != 0:
            break
    inspect(facts_script, remote_dir, disk)


def write_file(path, data):
    fd = os.open(path + ".part", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(path + ".part", path)


def install(verify_script, request, payload, remote_dir):
    """Write the inputs, install, verify; returns the exit status."""
    try:
        os.makedirs(remote_dir, mode=0o700, exist_ok=True)
        for name, data in payload.items():
            write_file(os.path.join(remote_dir, name), data)
        write_file(os.path.join(remote_dir, request["state"]), request["installing"].encode())
        write_file(os.path.join(remote_dir, "installer.pid"), b"%d\n" % os.getpid())
    except OSError as exc:
        sys.stderr.write("cannot write %s: %s\n" % (exc.filename or remote_dir, exc.strerror or exc))
        return UNPACK_FAILED
    sys.path.insert(0, os.path.join(remote_dir, "installer.pyz"))
    from provisioner.install.cli import main as install_main

    status = install_main(request["argv"], prog="installer.pyz")
    if status != 0:
        return status
    say("verify")
    report = verify_script.verify(request["disk"], request["expect"])
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    if request.get("reboot") and not report["problems"]:
        # After a second and in its own session, so the SSH session can close cleanly before the host goes down.
        subprocess.Popen(["sh", "-c", 'sleep 1; exec "$@"', "sh"] + request["reboot"], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return 0


def main(facts_script, verify_script):
    remote_dir, disk = sys.argv[1], sys.argv[2]
    stdin = sys.stdin.buffer
    inspect(facts_script, remote_dir, disk)
    payload = {}
    while True:
        line = stdin.readline()
        if not line:
            return 0
        request = json.loads(line)
        if request["op"] == "payload":
            for name, size in request["files"]:
                if os.path.basename(name) != name:
                    sys.stderr.write("refusing file name %r\n" % name)
                    return UNPACK_FAILED
                payload[name] = stdin.read(size)
        elif request["op"] == "stop":
            stop(facts_script, request["commands"], remote_dir, disk)
        elif request["op"] == "install":
            return install(verify_script, request, payload, remote_dir)
        else:
            return 0
