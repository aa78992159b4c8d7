"""The project's one systemd control interface: `systemctl` through provisioner.core.commands.run.

    systemd = Systemctl()                                  # the machine's systemd (PID 1)
    systemd.link(Path("/run/fleet/units/hello.service"), runtime=True)
    systemd.daemon_reload()
    systemd.start("hello.service", no_block=True)
    systemd.show(["hello.service"], ("LoadState", "ActiveState", "SubState"))
        -> {"hello.service": {"LoadState": "loaded", "ActiveState": "active", "SubState": "running"}}

    Systemctl(user=True, env={"XDG_RUNTIME_DIR": ...})    # a `systemd --user` manager (tests, several
                                                           # "machines" on one host without systemd as PID 1)
    Systemctl(issued=[], dry_run=True)                     # `--root` mode: changes are appended to the list
                                                           # as argvs and not run (issued=[] alone: run and log)

Why systemctl rather than D-Bus bindings (reference/runtime.md §5): no native dependency, the same CLI
on every systemd, and it works against a user manager in CI. The cost is one fork per call.

Only what the node runtime needs: daemon-reload, the unit commands coreos-cloudinit issues (start, stop,
restart, reload, try-restart, reload-or-restart, reload-or-try-restart), link/enable/disable/mask/unmask
(with `--runtime`: under /run, gone at the next boot), reset-failed, `show` properties as data, and
is-active. Writing unit files is the caller's job (coreos-cloudinit and fleet place files themselves).
"""

from __future__ import annotations

import enum
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioner.core.commands import run
from provisioner.errors import CommandError, ProvisionerError


class SystemdError(ProvisionerError):
    """A systemctl call failed, or a query was asked of a recording (--root) instance."""


class UnitCommand(enum.Enum):
    """The job commands of a cloud-config unit's `command:` (coreos-cloudinit system/systemd.go)."""

    START = "start"
    STOP = "stop"
    RESTART = "restart"
    RELOAD = "reload"
    TRY_RESTART = "try-restart"
    RELOAD_OR_RESTART = "reload-or-restart"
    RELOAD_OR_TRY_RESTART = "reload-or-try-restart"


# What `state()` asks for: systemd's three-level state, as fleet reports it.
STATE_PROPERTIES = ("LoadState", "ActiveState", "SubState")


@dataclass(frozen=True)
class UnitState:
    name: str
    load: str      # loaded, not-found, masked, bad-setting, error
    active: str    # active, inactive, failed, activating, deactivating, reloading
    sub: str       # running, exited, dead, failed, ...


@dataclass
class Systemctl:
    """systemctl for the system manager (default) or a user manager (`user=True`).

    `env` replaces the environment of every systemctl call (a user manager is found through
    XDG_RUNTIME_DIR). With `issued` set to a list, the argv of every changing call is appended to it;
    with `dry_run`, changing calls are not run and queries raise SystemdError.
    """

    user: bool = False
    env: Mapping[str, str] | None = None
    issued: list[list[str]] | None = None
    dry_run: bool = False
    timeout: float = 90.0

    # ------------------------------------------------------------------ changes

    def daemon_reload(self) -> None:
        """Reload unit files. Raises SystemdError."""
        self._change(["daemon-reload"])

    def command(self, command: UnitCommand, name: str, *, no_block: bool = False) -> None:
        """Queue (`no_block`) or run a job with mode `replace`, as coreos-cloudinit's D-Bus calls did.

        Raises SystemdError (unknown unit, failed start without no_block, ...)."""
        self._change([command.value, *(["--no-block"] if no_block else []), "--", name])

    def start(self, name: str, *, no_block: bool = False) -> None:
        """Raises SystemdError."""
        self.command(UnitCommand.START, name, no_block=no_block)

    def stop(self, name: str, *, no_block: bool = False) -> None:
        """Raises SystemdError."""
        self.command(UnitCommand.STOP, name, no_block=no_block)

    def link(self, path: Path, *, runtime: bool = False) -> None:
        """Make the unit file at `path` (outside the unit path) loadable under its own name.

        `runtime`: the link goes to /run/systemd/system (user: $XDG_RUNTIME_DIR/systemd/user).
        Replaces an older link of the same name (`--force`). Raises SystemdError."""
        self._change(["link", *self._flags(runtime, force=True), "--", str(path)])

    def enable(self, names: Sequence[str], *, runtime: bool = False, force: bool = True) -> None:
        """Create the [Install] links (coreos-cloudinit: EnableUnitFiles(runtime, force=true)). Raises SystemdError."""
        self._change(["enable", *self._flags(runtime, force), "--", *names])

    def disable(self, names: Sequence[str], *, runtime: bool = False) -> None:
        """Raises SystemdError."""
        self._change(["disable", *self._flags(runtime, force=False), "--", *names])

    def mask(self, names: Sequence[str], *, runtime: bool = False) -> None:
        """Link the names to /dev/null. Raises SystemdError (e.g. a unit file already at that path)."""
        self._change(["mask", *self._flags(runtime, force=False), "--", *names])

    def unmask(self, names: Sequence[str], *, runtime: bool = False) -> None:
        """Remove /dev/null links of the names (nothing else). Raises SystemdError."""
        self._change(["unmask", *self._flags(runtime, force=False), "--", *names])

    def reset_failed(self, name: str) -> None:
        """Raises SystemdError."""
        self._change(["reset-failed", "--", name])

    # ------------------------------------------------------------------ queries

    def show(self, names: Sequence[str], properties: Iterable[str]) -> dict[str, dict[str, str]]:
        """{name: {property: value}} for each unit, "" for a property systemd does not know (it answers for
        unknown units too: LoadState=not-found). Raises SystemdError."""
        wanted = list(properties)
        if not names:
            return {}
        # Id is always there, so every unit has a block even when systemd omits unknown properties.
        asked = ",".join(dict.fromkeys(["Id", *wanted]))
        blocks = parse_show(self._query(["show", "--property", asked, "--", *names]).stdout, len(names))
        return {name: {key: block.get(key, "") for key in wanted} for name, block in zip(names, blocks, strict=True)}

    def state(self, name: str) -> UnitState:
        """Load/active/sub state of one unit. Raises SystemdError."""
        values = self.show([name], STATE_PROPERTIES)[name]
        return UnitState(name, values.get("LoadState", ""), values.get("ActiveState", ""), values.get("SubState", ""))

    def unit_files(self, state: str, unit_type: str) -> str:
        """`systemctl list-unit-files` of one state and type, one `NAME STATE PRESET` line each. Raises
        SystemdError."""
        return self._query(["list-unit-files", f"--state={state}", f"--type={unit_type}", "--no-legend",
                            "--plain"]).stdout

    def is_active(self, name: str) -> bool:
        """Whether the unit is active (`systemctl is-active`; any other state is False). Raises SystemdError
        only when systemctl itself cannot run."""
        return self._query(["is-active", "--quiet", "--", name], check=False).returncode == 0

    # ------------------------------------------------------------------ plumbing

    def _flags(self, runtime: bool, force: bool) -> list[str]:
        return [*(["--runtime"] if runtime else []), *(["--force"] if force else [])]

    def argv(self, args: Sequence[str]) -> list[str]:
        """The full systemctl argv for `args` (what is run, or recorded)."""
        return ["systemctl", *(["--user"] if self.user else []), *args]

    def _change(self, args: list[str]) -> None:
        argv = self.argv(args)
        if self.issued is not None:
            self.issued.append(argv)
        if not self.dry_run:
            self._run(argv, check=True)

    def _query(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        if self.dry_run:
            raise SystemdError(f"systemctl {' '.join(args)}: no systemd to ask in --root mode")
        return self._run(self.argv(args), check=check)

    def _run(self, argv: list[str], check: bool) -> subprocess.CompletedProcess:
        try:
            return run(argv, check=check, env=self.env, timeout=self.timeout)
        except CommandError as exc:
            raise SystemdError(str(exc)) from None


def parse_show(text: str, count: int) -> list[dict[str, str]]:
    """Split `systemctl show` output for `count` units (blank-line separated KEY=VALUE blocks) (pure).

    Raises SystemdError when the number of blocks is not `count`."""
    blocks: list[dict[str, str]] = [{}]
    for line in text.splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
            continue
        key, _, value = line.partition("=")
        blocks[-1][key] = value
    if not blocks[-1]:
        blocks.pop()
    if len(blocks) != count:
        raise SystemdError(f"systemctl show: expected {count} unit block(s), got {len(blocks)}")
    return blocks
