"""The `provisioner` command: global options, sub-command registration, error -> exit code.

Exit codes: 0 ok, 1 error, 2 usage, 3 partial/degraded. Errors print as one line
(`provisioner: error: ...`); `--debug` adds the traceback.
"""

from __future__ import annotations

import sys
import traceback

import typer

from provisioner import __version__
from provisioner.core.logs import setup_logging
from provisioner.errors import EXIT_ERROR, ProvisionerError

app = typer.Typer(
    name="provisioner",
    help="Take bare-metal servers from power-on to a running CoreOS-style cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"provisioner {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Debug logs, and a traceback on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress (info level) to stderr."),
    log_format: str = typer.Option("text", "--log-format", help="text or json (one object per line)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    if log_format not in ("text", "json"):
        raise typer.BadParameter("must be 'text' or 'json'", param_hint="--log-format")
    setup_logging(debug=debug, verbose=verbose, json_format=log_format == "json")


# Top-level command -> the module in provisioner/cli/ that defines it (its `register(app)` adds it).
# Only the module of the command being run is imported, so `provisioner validate` does not pay for
# aiohttp or paramiko at start-up; `--help` with no command imports them all to list them.
COMMANDS: dict[str, str] = {
    "inventory": "inventory_cmd",
    "render": "render_cmd",
    "validate": "validate_cmd",
    "serve": "serve_cmd",
    "dnsmasq-config": "serve_cmd",
    "machines": "serve_cmd",
    "install": "install_cmd",
    "rescue": "rescue_cmd",
    "disk": "disk_cmd",
    "image": "image_cmd",
    "demo": "demo_cmd",
    "fleetd": "fleet_cmd",
    "fleet": "fleet_cmd",
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
    import importlib

    command = _requested_command(args)
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module in modules:
        importlib.import_module(f"provisioner.cli.{module}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        _register(args)
        # Typer's standalone mode prints usage errors itself (exit 2) and ends with SystemExit.
        app(args=args, prog_name="provisioner")
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return EXIT_ERROR
    except ProvisionerError as exc:
        if debug:
            traceback.print_exc()
        print(f"provisioner: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("provisioner: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
