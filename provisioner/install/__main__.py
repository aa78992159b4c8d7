"""`python3 -m provisioner.install ...` and the zipapp's entry point."""

from __future__ import annotations

import sys

from provisioner.install.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="provisioner-install"))
