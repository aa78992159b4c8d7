"""The `provisioner` command line: one module per top-level command, registered lazily by main.py.

The pattern every module follows:
- `register(root)` adds its commands: a group is a module-level `typer.Typer` whose commands are
  declared with `@app.command(...)`; a single command is `root.command(name)(function)`.
- A command parses its options (closed sets are Enums, so typer lists the choices), calls one
  library function, and prints the result with provisioner.cli.output (`emit`, `emit_json`,
  `emit_table`): data on stdout, `--json` where a script would want it.
- Destructive commands ask through `output.confirm`; `--yes` skips the question (it has no short
  form: `-y` is flatcar-install's dry run in `provisioner install`).
- Failures are exceptions of provisioner.errors (a check that found problems raises
  `output.CheckFailed` after printing its report); core/entry.py turns them into one line and an
  exit code. No command prints errors or calls typer.Exit with a failure code itself.
"""

import os

# Plain click help instead of rich's boxes: typer's rich formatting costs ~0.3 s of imports on every
# start, and plain text is what a node's journal, a serial console and `| less` show best.
# TYPER_USE_RICH is typer's own switch; it has to be set before typer is imported.
os.environ.setdefault("TYPER_USE_RICH", "0")
