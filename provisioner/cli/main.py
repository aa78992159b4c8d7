"""The `provisioner` command: global options, sub-command registration, error -> exit code.

Exit codes: 0 ok, 1 error, 2 usage, 3 partial/degraded. Errors print as one line
(`provisioner: error: ...`, provisioner/core/entry.py); `--debug` adds the traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from enum import StrEnum

import typer

try:  # typer >= 0.22 carries its own copy of click
    from typer._click.exceptions import UsageError as ClickUsageError
except ImportError:  # older typer (the OS image's Debian package) is built on click itself
    from click.exceptions import UsageError as ClickUsageError  # type: ignore[no-redef,import-not-found,unused-ignore]

from provisioner import __version__
from provisioner.cli.output import emit
from provisioner.core.entry import run_main
from provisioner.core.logs import setup_logging
from provisioner.errors import EXIT_ERROR, EXIT_USAGE, UsageError

app = typer.Typer(
    name="provisioner",
    help="Take bare-metal servers from power-on to a running CoreOS-style cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def _version(value: bool) -> None:
    if value:
        emit(f"provisioner {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Debug logs, and a traceback on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress (info level) to stderr."),
    log_format: LogFormat = typer.Option(LogFormat.TEXT, "--log-format", help="json: one object per line."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    setup_logging(debug=debug, verbose=verbose, json_format=log_format == LogFormat.JSON)


@dataclass(frozen=True)
class Command:
    module: str    # the module in provisioner/cli/ whose `register(app)` adds the command
    summary: str   # the first line of its help, for the listing (tests check it matches the module's)


# Only the module of the command being run is imported, so `provisioner validate` does not pay for
# aiohttp or paramiko at start-up, and `provisioner --help` lists the commands from this table
# without importing any of them.
COMMANDS: dict[str, Command] = {
    "inventory": Command("inventory_cmd", "Inspect a data dir: check it, or see which group/profile a machine gets."),
    "render": Command("render_cmd", "Render a machine's iPXE script or configs from the data dir."),
    "validate": Command("validate_cmd", "Validate cloud-configs with coreos-cloudinit v1.13.0's rules and messages. "
                                        "Exit 1 on any error."),
    "serve": Command("serve_cmd", "Run the PXE boot server: DHCP/proxyDHCP + TFTP + HTTP (+ etcd discovery) "
                                  "until SIGTERM."),
    "dnsmasq-config": Command("serve_cmd", "Print a dnsmasq config that chains PXE clients to this server's "
                                           "/boot.ipxe."),
    "machines": Command("serve_cmd", "List the machines the boot server has seen, with their last boot stage."),
    "install": Command("install_cmd", "Write a CoreOS-style disk image to a disk: verified, sparse, fast "
                                   "(flatcar-install options; -h lists them)."),
    "rescue": Command("rescue_cmd", "Install to HOST's disk while it runs a rescue system, over SSH."),
    "disk": Command("disk_cmd", "Show, grow, shrink and repartition an installed CoreOS-layout disk."),
    "image": Command("image_cmd", "Build the OS image (GPT disk image, PXE kernel + initrd, release directory)."),
    "demo": Command("demo_cmd", "Render and validate every machine, then bring up three blank VMs as a cluster, or "
                             "one VM (root)."),
    "registry": Command("registry_cmd", "The container registry nodes use as their Docker Hub mirror."),
    "node": Command("node_cmd", "On a node: apply the cloud-config, show what was applied, check etcd."),
    "fleetd": Command("fleet_cmd", "Run this machine's fleet agent and engine (configured by /etc/fleet/fleet.conf "
                                   "and FLEET_* variables, as fleet's fleetd was)."),
    "fleet": Command("fleet_cmd", "fleetctl: the cluster's units and machines (`provisioner fleet help`)."),
}
_GLOBAL_OPTIONS_WITH_VALUE = {"--log-format"}


def _requested_command(args: list[str]) -> str | None:
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _GLOBAL_OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _register(args: list[str]) -> None:
    """Add the requested command from its module, or, for a listing, every command by its summary."""
    command = _requested_command(args)
    if command in COMMANDS:
        importlib.import_module(f"provisioner.cli.{COMMANDS[command].module}").register(app)
        return
    for name, entry in COMMANDS.items():
        # The OS image ships only the node's command modules (recipe python_packages): list what is there.
        if importlib.util.find_spec(f"provisioner.cli.{entry.module}") is not None:
            app.command(name, help=entry.summary, short_help=entry.summary, add_help_option=False)(_listed_only)


def _listed_only() -> None:
    """Stands in for a command in the listing; a command that is run is always its real one."""
    raise AssertionError("a listed-only command never runs")


def usage_error_line(exc: ClickUsageError) -> str:
    """click's multi-line usage error as one line naming the command, e.g. `disk add: Invalid value for '--fs': ...`."""
    message = exc.format_message().replace("Value error, ", "").replace("\n", " ").strip()
    command = exc.ctx.command_path.split(" ", 1)[1] if exc.ctx and " " in exc.ctx.command_path else ""
    hint = f" (provisioner {command} -h)" if command else " (provisioner -h)"
    return f"{command}: {message}{hint}" if command else f"{message}{hint}"


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code (core/entry.py maps errors)."""
    args = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        _register(args)
        try:
            # Not standalone: click's usage errors reach us and become the one-line error every command uses.
            outcome = app(args=args, prog_name="provisioner", standalone_mode=False)
        except ClickUsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:   # `provisioner disk` alone
                print(exc.ctx.get_help(), file=sys.stderr)
                return EXIT_USAGE
            raise UsageError(usage_error_line(exc)) from None
        except typer.Abort:
            print("provisioner: aborted", file=sys.stderr)
            return EXIT_ERROR
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                return exc.code or 0
            print(exc.code, file=sys.stderr)
            return EXIT_ERROR
        # click returns typer.Exit's code here; a command's own return value is not an exit code.
        return outcome if isinstance(outcome, int) and not isinstance(outcome, bool) else 0

    return run_main("provisioner", body, debug="--debug" in args)


if __name__ == "__main__":
    sys.exit(main())
