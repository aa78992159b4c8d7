"""The `locksmithctl` console script: `provisioner node reboot-lock` under the name CoreOS users type.

    locksmithctl status | lock [ID] | unlock [ID] | set-max N   [--endpoint URL,...] [--group G]
"""

from __future__ import annotations

import sys


def main() -> int:
    from provisioner.cli.main import main as provisioner_main

    return provisioner_main(["node", "reboot-lock", *sys.argv[1:]])
