"""`provisioner install ...`: forwards every argument to the installer's own argparse parser
(provisioner.install.options), so the typer command, the zipapp and `python -m
provisioner.install` share ONE parser, with flatcar-install's letters (-y = dry run!)."""

from __future__ import annotations

import typer

from provisioner.install.cli import run_cli


def install(ctx: typer.Context) -> None:
    """Write a CoreOS-style image to a disk (flatcar-install options; -h for all of them)."""
    run_cli(list(ctx.args), prog="provisioner install")


def register(app: typer.Typer) -> None:
    app.command(
        "install",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                          "help_option_names": []},
        add_help_option=False,
        help="Write a CoreOS-style disk image to a disk: verified, sparse, fast (flatcar-install options; "
        "-h lists them).",
    )(install)
