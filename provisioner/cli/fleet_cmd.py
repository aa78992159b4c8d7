"""`provisioner fleetd` (the scheduler daemon of a machine) and `provisioner fleet ...` (= fleetctl ...).

Kept light: the daemon's import path is typer, the scheduler package and etcd3gw (requests); fleetctl's
SSH side (paramiko) is imported only by `provisioner fleet`.
"""

from __future__ import annotations

import os

import typer


def register(app: typer.Typer) -> None:
    @app.command("fleetd", help="Run this machine's fleet agent and engine (configured by /etc/fleet/fleet.conf "
                                "and FLEET_* variables, as fleet's fleetd was).")
    def fleetd(config: str = typer.Option(None, "--config", help="Config file (default /etc/fleet/fleet.conf "
                                                                 "when it exists).")) -> None:
        from provisioner.scheduler.daemon import run_fleetd

        run_fleetd(os.environ, config)

    @app.command("fleet", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                            "help_option_names": []},
                 help="fleetctl: the cluster's units and machines (`provisioner fleet help`).")
    def fleet(ctx: typer.Context) -> None:
        from provisioner.cli.fleetctl import run

        raise typer.Exit(run(ctx.args, os.environ))
