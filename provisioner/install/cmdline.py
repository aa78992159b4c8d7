"""Unattended install from the kernel command line (the PXE live image's install mode).

The iPXE script (render) adds, for a machine that should be installed:

    provisioner.install.device=/dev/sda provisioner.install.base_url=http://SERVER/release/stable
    provisioner.install.cloud_config=http://SERVER/cloud-config?mac=${net0/mac}

or everything at once, quoted as the kernel allows:

    provisioner.install.args="-d /dev/sda -b http://SERVER/release/stable -c http://SERVER/cc"

The live image's unit runs `python3 installer.pyz --from-cmdline --reboot`; the parameters are
the operator's consent (so `--yes` is implied), progress goes out as JSON lines, and after a
successful install the machine reboots into the disk.
"""

from __future__ import annotations

import shlex

from provisioner.errors import UsageError

PREFIX = "provisioner.install."

# key on the kernel command line -> installer option
KEYS = {
    "device": "--device",
    "base_url": "--base-url",
    "version": "--version",
    "channel": "--channel",
    "image_name": "--image-name",
    "cloud_config": "--cloud-config",
    "ignition": "--ignition",
    "key": "--key",
    "oem": "--oem",
    "format": "--format",
}
FLAGS = {"copy_network": "--copy-network", "force": "--force", "no_bmap": "--no-bmap"}


def argv_from_cmdline(cmdline: str) -> list[str]:
    """Installer argv from /proc/cmdline text (pure). Raises UsageError when nothing asks for an
    install or a value cannot be parsed."""
    try:
        words = shlex.split(cmdline)
    except ValueError as exc:
        raise UsageError(f"kernel command line: {exc}") from None
    argv: list[str] = []
    for word in words:
        if not word.startswith(PREFIX):
            continue
        key, _, value = word[len(PREFIX):].partition("=")
        if key == "args":
            try:
                argv += shlex.split(value)
            except ValueError as exc:
                raise UsageError(f"kernel command line: {PREFIX}args: {exc}") from None
        elif key in KEYS:
            argv += [KEYS[key], value]
        elif key in FLAGS and value.lower() not in ("0", "no", "false"):
            argv.append(FLAGS[key])
        else:
            raise UsageError(f"kernel command line: unknown parameter {PREFIX}{key}")
    if not argv:
        raise UsageError(f"kernel command line: no {PREFIX}* parameters: nothing to install")
    return argv + ["--yes", "--progress", "json"]
