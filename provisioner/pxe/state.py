"""The server's durable state, as the HTTP handlers and the admin API see it: three small interfaces.

Two implementations: files under the state dir (installed.py, boot_secrets.py, machines.py; the
default) and etcd (state_etcd.py, `--state-etcd`), so several servers agree on what a machine is.
Everything that changes what a machine boots goes through these methods, nothing writes the files
or keys directly. A write the backend cannot make durable raises OSError (StateUnavailable for a
shared store that does not answer), and the caller refuses the request saying why.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from typing import Any, Protocol


class SecretCheck(StrEnum):
    """What a request's boot secret proved (boot_secrets.py)."""

    OK = "ok"
    MISSING = "no boot secret"                         # the request carried none
    NONE_ISSUED = "no live boot secret for this MAC"   # never issued, used by the install, revoked, dropped
    WRONG = "boot secret does not match"               # another machine's, an older boot's, made up
    EXPIRED = "boot secret expired"


class StateUnavailable(OSError):
    """The shared state store does not answer: the write was not made (`strerror` says why)."""

    def __init__(self, reason: str):
        super().__init__(errno.EAGAIN, reason)


class MarkedInstalled(Exception):
    """BootSecrets.issue found the machine marked installed (by another server, a moment ago): no secret is
    issued, the installed marks now say so, and the request is answered as for an installed machine."""


class InstalledMarks(Protocol):
    """Which machines are installed: their queries get `os=installed` (installed.py)."""

    def refresh(self, now: float) -> None:
        """Pick up changes another process made, at most once per check interval."""

    def is_installed(self, mac: str | None) -> bool: ...

    def mark(self, mac: str) -> bool:
        """True when the mark is new; raises OSError when it cannot be stored."""

    def forget(self, mac: str) -> bool:
        """True when there was a mark; raises OSError when it cannot be stored."""


class BootSecrets(Protocol):
    """Per-boot secrets: issued with an install boot's script, proof for that boot's own writes."""

    def issue(self, mac: str, ip: str | None, now: float) -> str:
        """A secret for this boot of `mac` (the plain text; only its hash is stored); raises OSError, or
        MarkedInstalled when a shared store knows better than the cache the boot was decided from."""

    def check(self, mac: str, presented: str | None, now: float) -> SecretCheck: ...

    def check_held(self, mac: str, presented: str | None, now: float) -> SecretCheck | None:
        """check() from what this process holds, quick enough for the event loop; None when only the store
        can tell (then check() on the state runner asks it)."""

    def revoke(self, mac: str) -> None:
        """Every live secret of `mac` stops working (its install is done, or the operator acted); raises OSError."""


class MachineLog(Protocol):
    """What the server saw of each machine (machines.py): boot events, refused writes, the operator's forget."""

    @property
    def machines(self) -> Mapping[str, Any]:
        """MAC -> its record (machines.MachineRecord), for listing."""

    def record(self, mac: str, stage: str, detail: dict | None = None, ip: str | None = None,
               now: float | None = None) -> Any: ...

    def record_refusal(self, mac: str, detail: Mapping[str, Any], now: float | None = None) -> bool:
        """Add a refused write to a known machine's history only; False for a MAC never seen."""

    def forget(self, mac: str) -> bool: ...


# How the HTTP handlers call the state's methods: inline on the event loop (the files: quick, and their
# read-modify-write relies on running one at a time), or on threads (etcd: a request takes a network round
# trip and a commit, and concurrent requests let etcd commit many writes at once).
StateRunner = Callable[..., Awaitable[Any]]


async def run_inline(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)
