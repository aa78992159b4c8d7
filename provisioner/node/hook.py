"""The kernel command-line hook of the live (PXE) image (provisioner-hook.service).

    provisioner.install="-d /dev/sda -b http://10.0.0.1:8080/stable"   run the installer unattended
    provisioner.run="/usr/bin/some-command arg"                          run any command
    provisioner.after=reboot|poweroff|none                               then (default: none)

`provisioner.install=` runs `python3 -m provisioner.install ARGS --yes --progress json`, adding
`-k /usr/share/provisioner/release-key.asc` (the key of the build that made this image) unless
ARGS name a key. Values with spaces are quoted on the kernel command line ("..."), which the
kernel passes through to /proc/cmdline; shlex reads them back.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from provisioner.core.commands import run
from provisioner.errors import ProvisionerError

RELEASE_KEY = "/usr/share/provisioner/release-key.asc"
AFTER = {"reboot": ["systemctl", "reboot"], "poweroff": ["systemctl", "poweroff"], "none": None}


def parse_cmdline(cmdline: str) -> dict[str, str]:
    """'a=1 provisioner.run="x y"' -> {'a': '1', 'provisioner.run': 'x y'} (last one wins)."""
    try:
        words = shlex.split(cmdline)
    except ValueError:
        words = cmdline.split()
    params = {}
    for word in words:
        key, _, value = word.partition("=")
        params[key] = value
    return params


def hook_commands(cmdline: str, release_key: str | None = RELEASE_KEY) -> tuple[list[list[str]], list[str] | None]:
    """(commands to run in order, command to run afterwards or None) for a kernel command line (pure).

    Raises ValueError for an unknown provisioner.after value."""
    params = parse_cmdline(cmdline)
    commands = []
    if "provisioner.install" in params:
        args = shlex.split(params["provisioner.install"])
        if release_key and "-k" not in args:
            args += ["-k", release_key]
        if "--yes" not in args:
            args.append("--yes")
        if "--progress" not in args:
            args += ["--progress", "json"]
        commands.append([sys.executable or "python3", "-m", "provisioner.install", *args])
    if params.get("provisioner.run"):
        commands.append(shlex.split(params["provisioner.run"]))
    after = params.get("provisioner.after", "none")
    if after not in AFTER:
        raise ValueError(f"provisioner.after={after!r} is not one of {', '.join(AFTER)}")
    return commands, AFTER[after]


def main() -> int:
    try:
        commands, after = hook_commands(Path("/proc/cmdline").read_text())
    except ValueError as exc:
        print(f"provisioner-hook: error: {exc}", flush=True)
        return 2
    for argv in commands:
        print(f"provisioner-hook: running {shlex.join(argv)}", flush=True)
        # Output goes straight to the console (StandardOutput=journal+console), so an operator
        # watching the serial line sees the installer's progress.
        try:
            code = run(argv, check=False, capture=False).returncode
        except ProvisionerError as exc:
            print(f"provisioner-hook: error: {exc}", flush=True)
            return 1
        print(f"provisioner-hook: exit {code}: {shlex.join(argv)}", flush=True)
        if code != 0:
            return code
    if after:
        run(after, check=False, capture=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
