"""Command-line entry of the installer without typer: used by the zipapp, `python3 -m
provisioner.install` and (through `run_cli`) by `provisioner install`, so there is ONE parser.

Exit codes as everywhere (errors.py): 0 ok, 1 error, 2 usage, 3 partial.
"""

from __future__ import annotations

import logging
import sys

from provisioner.core.entry import run_main
from provisioner.errors import UsageError
from provisioner.install.installer import Summary, run_install
from provisioner.install.options import parse_install_args
from provisioner.install.progress import Progress


def confirm_on_terminal(text: str) -> bool:
    """Show what will be written and ask on the terminal; refuse when there is no terminal to ask."""
    sys.stderr.write(text + "\n")
    if not sys.stdin.isatty():
        raise UsageError("install: no terminal to confirm on: pass --yes to write without asking")
    sys.stderr.write("This ERASES the target disk. Type 'yes' to continue: ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() == "yes"


def run_cli(argv: list[str], prog: str = "provisioner install") -> Summary | None:
    """Parse argv and install. Raises ProvisionerError (the caller maps it to an exit code)."""
    opts = parse_install_args(argv, prog)
    if opts.verbose:
        root = logging.getLogger()
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
    progress = Progress(opts.progress)
    summary = run_install(opts, progress, confirm_on_terminal)
    if summary is not None and progress.mode != "json":
        print(summary.line(), file=sys.stderr)
    return summary


def main(argv: list[str] | None = None, prog: str = "provisioner-install") -> int:
    """The zipapp's and `python3 -m provisioner.install`'s entry point; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)

    def body() -> None:
        run_cli(args, prog)

    return run_main(prog, body)
