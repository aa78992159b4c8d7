"""paramiko, imported without `invoke`: every module here takes paramiko from this one.

paramiko.config imports invoke (a task runner) when paramiko is imported, only to run the `Match exec`
lines of an ssh config; that is ~40 ms of paramiko's ~90 ms import, paid by every `provisioner rescue`
start. It is kept out while paramiko loads; `enable_match_exec()` brings it in for a config that has
such a line (target.load_ssh_config).
"""

from __future__ import annotations

import sys
from typing import Any

_KEEP_OUT = "invoke" not in sys.modules
if _KEEP_OUT:
    sys.modules["invoke"] = None  # type: ignore[assignment]  # makes `import invoke` raise ImportError
try:
    import paramiko
    import paramiko.config
finally:
    if _KEEP_OUT and sys.modules.get("invoke", 0) is None:
        del sys.modules["invoke"]

__all__ = ["paramiko", "enable_match_exec"]


def enable_match_exec() -> None:
    """Give paramiko's ssh-config parser invoke, which it needs to run `Match exec` lines. Without the
    package installed nothing changes, and paramiko reports the missing module at that line."""
    config: Any = paramiko.config  # its `invoke` global is not in the type stubs
    if config.invoke is None:
        try:
            import invoke
        except ImportError:
            return
        config.invoke = invoke
