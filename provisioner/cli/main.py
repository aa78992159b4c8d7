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


# Command groups, in the order `provisioner --help` lists them.
COMMAND_MODULES: list[str] = [
    "disk_cmd",
    "inventory_cmd",
    "render_cmd",
    "validate_cmd",
    "demo_cmd",
    "rescue_cmd",
    "install_cmd",
    "serve_cmd",
]


def _register() -> None:
    # One block per command group; the modules in provisioner/cli/ hold the commands.
    # Each module exposes `register(app)`, which adds its commands or its sub-app.
    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(f"provisioner.cli.{module}").register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
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
