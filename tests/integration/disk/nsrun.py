"""Run a list of mount/CLI actions inside a private mount namespace (`unshare -m`).

Why: other tests on this machine (netns, QEMU, systemd --user) create mount namespaces, and a
new namespace copies every mount that exists at that moment. A loop partition we mount in the
host namespace can get pinned by such a copy, and then can never be detached. Mounting inside a
namespace of our own keeps our mounts invisible to everybody else; they vanish with the process.

Input (stdin, JSON): a list of actions; output (stdout, JSON): one result per action.
  ["mount", device, target, options]     ["umount", target]
  ["statvfs", target] -> size in bytes    ["write", path, text]
  ["hash", root] -> {relpath: sha256}     ["write_files", root, seed, small] -> manifest (conftest)
  ["rm", path]                            ["fallocate", path, bytes]
  ["cli", env, *args] -> {returncode, stdout, stderr, seconds}  (the provisioner CLI, seeing our mounts)
  ["cli_killed", env, delay, *args] -> exit code, or None when its process group was SIGKILLed first
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> None:
    from pathlib import Path

    from tests.integration.disk.conftest import hash_tree, kill_group_after, start_cli, write_files

    results = []
    for action in json.load(sys.stdin):
        verb, args = action[0], action[1:]
        if verb == "mount":
            device, target, options = args
            subprocess.run(["mount", "-o", options, device, target], check=True, capture_output=True)
            results.append(None)
        elif verb == "umount":
            subprocess.run(["umount", args[0]], check=True, capture_output=True)
            results.append(None)
        elif verb == "statvfs":
            stat = os.statvfs(args[0])
            results.append(stat.f_blocks * stat.f_frsize)
        elif verb == "write":
            Path(args[0]).write_text(args[1])
            results.append(None)
        elif verb == "rm":
            os.remove(args[0])
            results.append(None)
        elif verb == "fallocate":
            subprocess.run(["fallocate", "-l", str(args[1]), args[0]], check=True)
            results.append(None)
        elif verb == "hash":
            results.append(hash_tree(Path(args[0])))
        elif verb == "write_files":
            results.append(write_files(Path(args[0]), *args[1:]))
        elif verb == "cli":
            env = dict(os.environ, **args[0])
            start = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "provisioner.cli.main", *args[1:]],
                capture_output=True, text=True, env=env, timeout=300,
            )
            results.append({"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
                            "seconds": time.monotonic() - start})
        elif verb == "cli_killed":
            env, delay, *cli_args = args
            results.append(kill_group_after(start_cli(*cli_args, env=dict(os.environ, **env)), delay))
        else:
            raise SystemExit(f"nsrun: unknown action {verb!r}")
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
