"""Typer apps, one module per command group. Each command parses options, calls one library
function and prints its result; only provisioner.cli.main maps errors to exit codes."""
