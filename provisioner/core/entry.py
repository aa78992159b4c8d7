"""The one way an executable of this project ends: error tree -> one line on stderr -> exit code.

Every entry point (`provisioner`, the installer zipapp, the node's boot units) calls
`run_main(prog, body)`. `body` does the work and returns an exit code (or None for 0); a
ProvisionerError becomes `<prog>: error: <message>` and its exit code (errors.py), Ctrl-C exits
130, and an unexpected exception is reported as an internal error in one line too, because a boot
unit's journal or a rescue console is where an operator reads it. With PROVISIONER_DEBUG=1 in the
environment (or debug=True) the traceback is printed as well.

Standard library only, Python >= 3.9: the installer zipapp bundles this module.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

from provisioner.errors import EXIT_ERROR, ProvisionerError

EXIT_INTERRUPTED = 130   # 128 + SIGINT, what a shell reports for Ctrl-C


def debug_requested() -> bool:
    """True when PROVISIONER_DEBUG asks for tracebacks."""
    return os.environ.get("PROVISIONER_DEBUG", "") not in ("", "0")


def run_main(prog: str, body: Callable[[], int | None], *, debug: bool = False) -> int:
    """Run `body` and turn its outcome into an exit code; never raises (but SystemExit passes through)."""
    debug = debug or debug_requested()
    try:
        code = body()
    except ProvisionerError as exc:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as exc:   # a bug: still one line (the traceback with debug), never a silent exit
        if debug:
            traceback.print_exc()
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} (PROVISIONER_DEBUG=1 shows the traceback)",
              file=sys.stderr, flush=True)
        return EXIT_ERROR
    return 0 if code is None else code
