"""`fleetctl` (also `provisioner fleet ...`): fleet's client, with fleet's commands, columns and messages.

The words an operator sees are fleet v1.0.0's (fleetctl/*.go), so the guides' transcripts read the
same: "Unit hello.service launched on 27435eb0.../10.0.0.2", "Destroyed hello.service", "Unit
hello.service does not exist.", "Unable to stop unit x.service in state inactive". Messages go to
stderr and tables to stdout as fleetctl did; errors exit 1, usage errors 2.

fleetctl talks to etcd directly (fleet's `--driver=etcd`); fleet's own HTTP API socket does not exist
here, so the default endpoint is etcd on localhost. Where fleet misbehaved, this does not:
- `start` waits for the unit to be active, as fleet meant to (fleet gave up after 2 s, so units that
  pull an image always "failed" to start); it stops waiting when the unit failed;
- `destroy` waits until no machine reports the unit any more (fleet's wait was inverted: it waited
  only with --no-block); `--no-block` returns at once;
- an unknown flag is a usage error (exit 2), not exit 0.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioner import __version__
from provisioner.cli.fleetctl_flags import Parsed, find_command, parse, tabwrite, usage
from provisioner.cloudconfig.docker_flags import legacy_docker_flags
from provisioner.errors import ConfigError, ProvisionerError, RemoteError, UsageError
from provisioner.scheduler import etcd
from provisioner.scheduler.model import DesiredState, Machine
from provisioner.scheduler.registry import ClusterView, Registry
from provisioner.scheduler.requirements import unknown_requirement_warnings, validate_requirements
from provisioner.scheduler.unitfile import RECOGNIZED_SUFFIXES, UnitFile, UnitName, mangle_unit_name, validate_unit_name
from provisioner.scheduler.unitlogs import journal_command, status_command

if TYPE_CHECKING:
    from provisioner.cli.fleetctl_ssh import SshOptions

POLL = 0.25
ATTEMPT = 2.0  # fleetctl's waitForState: one attempt polls every 250 ms for 2 s


class WaitError(ProvisionerError):
    """A unit did not reach the state in the attempts allowed."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _stdout(message: str) -> None:
    print(message, flush=True)


def _go_list(names: Sequence[str]) -> str:
    """Go's %v of a []string: [a b c]."""
    return "[" + " ".join(names) + "]"


class Fleetctl:
    def __init__(self, parsed: Parsed, registry: Registry):
        self.options = parsed.options
        self.args = list(parsed.args)
        self.rest = list(parsed.after_dashes)
        self.registry = registry
        self._machines: dict[str, Machine] | None = None

    # -- helpers ----------------------------------------------------------------------------------

    @property
    def ssh(self) -> SshOptions:
        return ssh_options(self.options)

    def machines(self) -> dict[str, Machine]:
        """fleetctl's cachedMachineState: the machine list, read once per invocation."""
        if self._machines is None:
            self._machines = self.registry.machines()
        return self._machines

    def legend(self, machine_id: str, full: bool) -> str:
        machine = self.machines().get(machine_id) or Machine(machine_id)
        return machine.legend(full)

    def block_attempts(self) -> int:
        """-1: do not wait; 0: wait for ever; N: up to N attempts (fleetctl's getBlockAttempts)."""
        if self.options.get("no-block"):
            return -1
        return max(0, int(self.options.get("block-attempts", 0)))

    def wait(self, check: Callable[[], str | None], attempts: int, what: str) -> str:
        """Poll `check` (a message when done, else None) for `attempts` x 2 s (0: no limit). Raises WaitError."""
        deadline = None if attempts == 0 else time.monotonic() + attempts * ATTEMPT
        while True:
            time.sleep(POLL)
            message = check()
            if message is not None:
                return message
            if deadline is not None and time.monotonic() > deadline:
                raise WaitError(what)

    def unit_state_message(self, name: str, wanted: DesiredState) -> Callable[[], str | None]:
        """fleetctl's assertUnitState: 'Unit X <state>[ on <machine>]' once the unit reports `wanted`."""
        def check() -> str | None:
            view = self.registry.cluster_view()
            if name not in view.jobs:
                return None
            is_global = view.requirements(name).is_global
            state = view.jobs[name].desired if is_global else view.current_state(name)
            if state is not wanted:
                return None
            message = f"Unit {name} {view.current_state(name).value}"
            target = view.target_of(name)
            if target is not None and not is_global:
                self._machines = dict(view.machines)
                message += f" on {self.legend(target, False)}"
            return message
        return check

    def wait_states(self, names: Sequence[str], wanted: DesiredState, verb: str) -> None:
        attempts = self.block_attempts()
        if attempts < 0:
            for name in names:
                _stdout(f"Triggered unit {name} {verb}")
            return
        for name in names:
            _stdout(self.wait(self.unit_state_message(name, wanted), attempts,
                              f"timed out waiting for unit {name} to report state {wanted.value}"))

    # -- creating units ---------------------------------------------------------------------------

    def unit_file(self, argument: str) -> UnitFile:
        """fleetctl's getUnitFile: the local file, else for an instance its template (registry, then disk).

        Raises ConfigError with fleet's wording when nothing is found.
        """
        name = mangle_unit_name(argument)
        path = Path(argument)
        if path.exists():
            return _local_unit(path)
        info = UnitName.of(name)
        if info is None:
            raise ConfigError(f"error extracting information from unit name {name}")
        if not info.is_instance:
            raise ConfigError(f"unable to find Unit({name}) in Registry or on filesystem")
        template = self.registry.job(info.template)
        if template is not None:
            self.warn_if_different(argument, template[1], info.template)
            return template[1]
        template_path = path.parent / info.template
        if not template_path.exists():
            raise ConfigError(f"unable to find template Unit({info.template}) in Registry or on filesystem")
        return _local_unit(template_path)

    def warn_if_different(self, argument: str, stored: UnitFile, name: str) -> bool:
        """fleetctl's isLocalUnitDifferent: compare the local file (or template file) with the stored one."""
        path = Path(argument)
        candidates = [(path, "local unit file")]
        info = UnitName.of(path.name)
        if info is not None and info.is_instance:
            candidates.append((path.parent / info.template, "local template unit file"))
        for candidate, kind in candidates:
            if candidate.exists():
                different = UnitFile.parse(_read(candidate), str(candidate)).hash() != stored.hash()
                if different and not self.options.get("replace"):
                    _stderr(f"WARNING: Unit {name} in registry differs from {kind} {argument}. "
                            f"Add --replace to override.")
                return different
        return False

    def create_units(self, arguments: Sequence[str], command: str) -> None:
        """fleetctl's lazyCreateUnits: submit what is not in the registry yet (or replace it). Raises."""
        created = []
        for argument in arguments:
            if not argument.endswith(RECOGNIZED_SUFFIXES):
                argument += ".service"
            name = mangle_unit_name(argument)
            existing = self.registry.job(name)
            if existing is not None:
                record, stored = existing
                different = self.warn_if_different(argument, stored, name)
                if not self.options.get("replace"):
                    continue
                if not different:
                    _stdout(f"Found same Unit({name}) in Registry, nothing to do")
                    continue
                allowed = {"submit": (DesiredState.INACTIVE,),
                           "load": (DesiredState.INACTIVE, DesiredState.LOADED),
                           "start": tuple(DesiredState)}[command]
                if record.desired not in allowed:
                    _stderr(f"Warning: can not replace Unit({name}) in state '{record.desired.value}', use the "
                            f"appropriate command")
                    continue
            unit = self.unit_file(argument)
            validate_unit_name(name)
            validate_requirements(unit)
            for warning in unknown_requirement_warnings(unit, name):
                _stderr(warning)
            if existing is None:
                if not self.registry.create_unit(name, unit):
                    continue  # someone else submitted it meanwhile
            else:
                self.registry.replace_unit(name, unit)
            created.append(name)
        for name in created:
            try:
                _stdout(self.wait(self.unit_state_message(name, DesiredState.INACTIVE), 0 if command == "submit"
                                  else max(0, int(self.options.get("block-attempts", 0))),
                                  f"timed out waiting for unit {name} to report state inactive"))
            except WaitError as exc:
                _stderr(f"Error waiting on unit creation: {exc}")
                raise ProvisionerError("One or more errors creating units") from None

    def set_states(self, arguments: Sequence[str], state: DesiredState) -> list[str]:
        """fleetctl's setTargetStateOfUnits; returns the units whose desired state changed. Raises."""
        triggered = []
        for argument in arguments:
            name = mangle_unit_name(argument)
            found = self.registry.job(name)
            if found is None:
                raise ProvisionerError(f"unable to find unit {name}")
            if found[0].desired is state:
                continue
            self.registry.set_target_state(name, state)
            triggered.append(name)
        return triggered

    def find_units(self, arguments: Sequence[str]) -> tuple[ClusterView, list[str]]:
        """fleetctl's findUnits: the named units that exist (others are silently skipped)."""
        view = self.registry.cluster_view()
        names = list(dict.fromkeys(mangle_unit_name(a) for a in arguments))
        return view, [n for n in names if n in view.jobs]

    # -- commands ---------------------------------------------------------------------------------

    def cmd_submit(self) -> int:
        if not self.args:
            _stderr("No units given")
            return 0
        try:
            self.create_units(self.args, "submit")
        except ProvisionerError as exc:
            _stderr(f"Error creating units: {exc}")
            return 1
        return 0

    def _load_or_start(self, command: str, state: DesiredState, verb: str) -> int:
        if not self.args:
            _stderr("No units given")
            return 0
        try:
            self.create_units(self.args, command)
        except ProvisionerError as exc:
            _stderr(f"Error creating units: {exc}")
            return 1
        try:
            triggered = self.set_states(self.args, state)
        except ProvisionerError as exc:
            _stderr(f"Error {'loading' if command == 'load' else 'starting'} units: {exc}")
            return 1
        view = self.registry.cluster_view()
        waiting = []
        for name in triggered:
            if view.requirements(name).is_global:
                _stdout(f"Triggered global unit {name} {verb}")
            else:
                waiting.append(name)
        try:
            self.wait_states(waiting, state, verb)
        except WaitError as exc:
            _stderr(f"Error waiting for units: {exc}")
            _stderr(f"Error waiting for unit states, exit status: {exc}")
            return 1
        if command == "start" and self.block_attempts() >= 0:
            for name in waiting:
                problem = self.wait_active(name)
                if problem:
                    _stderr(f"Error waiting for systemd unit states, err: {problem}")
                    return 1
        return 0

    def wait_active(self, name: str) -> str | None:
        """After 'launched': wait until the unit is active (and loaded); a message if it failed instead."""
        attempts = self.block_attempts()

        def check() -> str | None:
            view = self.registry.cluster_view()
            target = view.target_of(name)
            state = next((s for s in view.states if s.unit == name and s.machine == target), None)
            if state is None:
                return None
            if state.status.load == "loaded" and state.status.active == "active":
                return ""
            if state.status.load != "loaded" or state.status.active == "failed":
                return (f"unit {name} is {state.status.active} ({state.status.sub}) with load state "
                        f"{state.status.load} on {self.legend(state.machine, False)}")
            return None
        try:
            return self.wait(check, attempts, f"Failed to find an active unit {name}") or None
        except WaitError as exc:
            return str(exc)

    def cmd_load(self) -> int:
        return self._load_or_start("load", DesiredState.LOADED, "load")

    def cmd_start(self) -> int:
        return self._load_or_start("start", DesiredState.LAUNCHED, "start")

    def cmd_stop(self) -> int:
        return self._lower(DesiredState.LOADED, "stop", "stopped")

    def cmd_unload(self) -> int:
        return self._lower(DesiredState.INACTIVE, "unload", "unloaded")

    def named_units(self) -> tuple[ClusterView, list[str]] | None:
        """The existing units among the arguments; None, after fleetctl's message, when there are none."""
        if not self.args:
            _stderr("No units given")
            return None
        view, names = self.find_units(self.args)
        if not names:
            _stderr("Units not found in registry")
            return None
        return view, names

    def _lower(self, state: DesiredState, verb: str, done: str) -> int:
        found = self.named_units()
        if found is None:
            return 0
        view, names = found
        waiting = []
        for name in names:
            is_global = view.requirements(name).is_global
            if not is_global:
                current = view.current_state(name)
                if current is DesiredState.INACTIVE:
                    if state is DesiredState.LOADED:
                        _stderr(f"Unable to stop unit {name} in state inactive")
                        return 1
                    continue
                if current is state:
                    continue
            self.registry.set_target_state(name, state)
            if is_global:
                _stdout(f"Triggered global unit {name} {verb}")
            else:
                waiting.append(name)
        try:
            self.wait_states(waiting, state, verb)
        except WaitError as exc:
            _stderr(f"Failed to {verb} units {_go_list(waiting)}. err: {exc}")
            return 1
        _stderr(f"Successfully {done} units {_go_list(waiting)}.")
        return 0

    def cmd_destroy(self) -> int:
        found = self.named_units()
        if found is None:
            return 0
        for name in found[1]:
            self.registry.destroy(name)
            attempts = self.block_attempts()
            if attempts >= 0:
                def gone(unit: str = name) -> str | None:
                    return "" if not any(s.unit == unit for s in self.registry.states()) else None
                try:
                    self.wait(gone, attempts, f"timed out waiting for unit {name} to stop")
                except WaitError as exc:
                    _stderr(f"Error destroying units: {exc}")
                    return 1
            _stdout(f"Destroyed {name}")
        return 0

    def cmd_restart(self) -> int:
        found = self.named_units()
        if found is None:
            return 0
        view, names = found
        for name in names:
            if view.requirements(name).is_global:
                continue
            current = view.current_state(name)
            if current is DesiredState.INACTIVE:
                _stderr(f"Unable to restart unit {name} in state inactive")
                continue
            steps = [DesiredState.LAUNCHED] if current is DesiredState.LOADED else [DesiredState.LOADED,
                                                                                     DesiredState.LAUNCHED]
            for step in steps:
                self.registry.set_target_state(name, step)
                try:
                    self.wait_states([name], step, "restart")
                except WaitError as exc:
                    _stderr(f"Error waiting for unit states, exit status: {exc}")
                    return 1
        return 0

    def cmd_cat(self) -> int:
        if len(self.args) != 1:
            _stderr("One unit file must be provided")
            return 1
        name = mangle_unit_name(self.args[0])
        found = self.registry.job(name)
        if found is None:
            _stderr(f"Unit {name} not found")
            return 1
        sys.stdout.write(found[1].serialize())  # no newline added: the unit file as stored
        return 0

    def _table(self, rows: list[list[str]], fields: list[str]) -> None:
        if not self.options["no-legend"]:
            rows.insert(0, [f.upper() for f in fields])
        sys.stdout.write(tabwrite(rows))

    def _fields(self, valid: Sequence[str]) -> list[str] | None:
        text = str(self.options["fields"])
        if not text:
            _stderr("Must define output format")
            return None
        fields = text.split(",")
        for field in fields:
            if field not in valid:
                _stderr(f'Invalid key in output format: "{field}"')
                return None
        return fields

    def cmd_list_units(self) -> int:
        fields = self._fields(("unit", "load", "active", "sub", "machine", "hash"))
        if fields is None:
            return 1
        full = bool(self.options["full"])
        states = sorted(self.registry.states(), key=lambda s: (s.unit, s.machine))
        cells = {
            "unit": lambda s: s.unit, "load": lambda s: s.status.load or "-",
            "active": lambda s: s.status.active or "-", "sub": lambda s: s.status.sub or "-",
            "machine": lambda s: self.legend(s.machine, full),
            "hash": lambda s: (s.unit_hash if full else s.unit_hash[:7]) or "-",
        }
        self._table([[cells[f](s) for f in fields] for s in states], fields)
        return 0

    def cmd_list_unit_files(self) -> int:
        fields = self._fields(("unit", "hash", "dstate", "state", "target", "tmachine", "global", "desc"))
        if fields is None:
            return 1
        if "tmachine" in fields:
            _stderr('WARNING: The "tmachine" field is deprecated. Use "target" instead')
        full = bool(self.options["full"])
        view = self.registry.cluster_view()
        self._machines = dict(view.machines)

        def target(name: str) -> str:
            if view.requirements(name).is_global:
                return "global"
            machine = view.target_of(name)
            return self.legend(machine, full) if machine else "-"

        cells = {
            "unit": lambda n: n, "hash": lambda n: view.jobs[n].unit_hash if full else view.jobs[n].unit_hash[:7],
            "dstate": lambda n: view.jobs[n].desired.value,
            "state": lambda n: "-" if view.requirements(n).is_global else view.current_state(n).value,
            "target": target, "tmachine": target, "global": lambda n: str(view.requirements(n).is_global).lower(),
            "desc": lambda n: (u.description if (u := view.unit_of(n)) else "") or "-",
        }
        self._table([[cells[f](n) for f in fields] for n in sorted(view.jobs)], fields)
        return 0

    def cmd_list_machines(self) -> int:
        fields = self._fields(("machine", "ip", "metadata"))
        if fields is None:
            return 1
        full = bool(self.options["full"])
        try:
            machines = self.registry.machines()
        except etcd.EtcdError as exc:
            _stderr(f"Error retrieving list of active machines from fleet API ({exc})")
            _stderr("Possible issues:\n  etcd is unhealthy and/or lost quorum\n"
                    "  connection cannot be established to any etcd servers")
            return 1
        cells = {
            "machine": lambda m: m.id if full else f"{m.short_id}...", "ip": lambda m: m.public_ip or "-",
            "metadata": lambda m: ",".join(f"{k}={v}" for k, v in sorted(m.metadata)) or "-",
        }
        self._table([[cells[f](m) for f in fields] for _, m in sorted(machines.items())], fields)
        return 0

    def cmd_status(self) -> int:
        exit_code = 0
        global_units = []
        view = self.registry.cluster_view()
        self._machines = dict(view.machines)
        for index, argument in enumerate(self.args):
            name = mangle_unit_name(argument)
            if name not in view.jobs:
                _stderr(f"Unit {name} does not exist.")
                return 1
            if view.requirements(name).is_global:
                global_units.append(name)
                continue
            target = view.target_of(name)
            if view.current_state(name) is DesiredState.INACTIVE or target is None:
                _stderr(f"Unit {name} does not appear to be loaded.")
                return 1
            if index:
                print()  # systemctl status separates units with a blank line
            code = self.on_machine(target, status_command(self.machine_of(target), name, bool(self.options["sudo"])))
            if code:
                exit_code = code
                break
        for name in global_units:
            for state in sorted((s for s in view.states if s.unit == name), key=lambda s: s.machine):
                code = self.on_machine(state.machine, status_command(self.machine_of(state.machine), name))
                if code:
                    _stderr(f"Error running systemctl status. machine id={state.machine}, unit name={name}")
                    return 1
        return exit_code

    def cmd_journal(self) -> int:
        if len(self.args) != 1:
            _stderr("One unit file must be provided.")
            return 1
        name = mangle_unit_name(self.args[0])
        view = self.registry.cluster_view()
        self._machines = dict(view.machines)
        if name not in view.jobs:
            _stderr(f"Unit {name} does not exist.")
            return 1
        if view.requirements(name).is_global:
            _stderr(f"Unable to retrieve journal of global unit {name}.")
            return 1
        target = view.target_of(name)
        if view.current_state(name) is DesiredState.INACTIVE or target is None:
            _stderr(f"Unit {name} does not appear to be running.")
            return 1
        argv = journal_command(self.machine_of(target), name, int(self.options["lines"]),
                               bool(self.options["follow"]), str(self.options["output"]), bool(self.options["sudo"]))
        return self.on_machine(target, argv)

    def machine_of(self, machine_id: str) -> Machine:
        machine = self.machines().get(machine_id)
        if machine is None:
            raise RemoteError(f"Error getting machine IP: machine {machine_id} is not in the cluster")
        return machine

    def on_machine(self, machine_id: str, argv: list[str]) -> int:
        from provisioner.cli.fleetctl_ssh import run_on_machine

        try:
            return run_on_machine(self.machine_of(machine_id), argv, self.ssh)
        except RemoteError as exc:
            _stderr(f"Unable to SSH to remote host: {exc}")
            return 1

    def cmd_ssh(self) -> int:
        machine_flag, unit_flag = str(self.options["machine"]), str(self.options["unit"])
        if machine_flag and unit_flag:
            _stderr("Both machine and unit flags provided, please specify only one.")
            return 1
        args = list(self.args)
        try:
            if machine_flag:
                address = find_machine(self.machines(), machine_flag).public_ip
            elif unit_flag:
                address = self.unit_address(unit_flag)
            else:
                if not args:
                    raise RemoteError("one machine or unit must be provided")
                address = self.lookup(args.pop(0))
        except (RemoteError, ProvisionerError) as exc:
            _stderr(f"Unable to proceed: {exc}")
            return 1
        if not address:
            _stderr("Could not determine address of machine.")
            return 1
        command = " ".join([*args, *self.rest])
        from provisioner.cli.fleetctl_ssh import interactive_shell, run_command

        try:
            if command:
                return run_command(address, command, self.ssh)
            return interactive_shell(address, self.ssh)
        except RemoteError as exc:
            _stderr(f"Failed building SSH client: {exc}")
            return 1

    def unit_address(self, argument: str) -> str:
        name = mangle_unit_name(argument)
        view = self.registry.cluster_view()
        if name not in view.jobs:
            raise RemoteError("unit does not exist")
        if view.requirements(name).is_global:
            raise RemoteError("global units unsupported")
        target = view.target_of(name)
        machine = view.machines.get(target) if target else None
        return machine.public_ip if machine else ""

    def lookup(self, word: str) -> str:
        """fleetctl's globalMachineLookup: a machine ID prefix or a unit name, not both."""
        try:
            machine_address = find_machine(self.machines(), word).public_ip
        except RemoteError:
            machine_address = None
        try:
            unit_address = self.unit_address(word) or None
        except RemoteError:
            unit_address = None
        if machine_address and unit_address:
            raise RemoteError(f"ambiguous argument, both machine and unit found for `{word}`.\nPlease use flag "
                              f"`-m` or `-u` to refine the search")
        if machine_address or unit_address:
            return str(machine_address or unit_address)
        raise RemoteError("could not find matching unit or machine")

    def cmd_verify(self) -> int:
        _stderr("WARNING: The signed/verified units feature is DEPRECATED and cannot be used.")
        return 2


def ssh_options(options: Mapping[str, Any]) -> SshOptions:
    """fleetctl's SSH flags (importing paramiko only for the commands that use SSH)."""
    from provisioner.cli.fleetctl_ssh import SshOptions

    tunnel = str(options["tunnel"])
    return SshOptions(user=str(options["ssh-username"]), port=int(options.get("ssh-port", 22)),
                      tunnel=tunnel if not tunnel or ":" in tunnel else f"{tunnel}:22",
                      timeout=float(options["ssh-timeout"]),
                      strict_host_key_checking=bool(options["strict-host-key-checking"]),
                      known_hosts_file=str(options["known-hosts-file"]),
                      forward_agent=bool(options.get("forward-agent", False)))


def find_machine(machines: dict[str, Machine], lookup: str) -> Machine:
    """fleetctl's findAddressInMachineList: the one machine whose ID starts with `lookup`. Raises RemoteError."""
    found = [m for m in machines.values() if m.id.startswith(lookup)]
    if len(found) > 1:
        raise RemoteError("found more than one machine")
    if not found:
        raise RemoteError("machine does not exist")
    return found[0]


def _local_unit(path: Path) -> UnitFile:
    """A unit file from disk, warning (file:line) about docker flags today's docker rejects; raises ConfigError.

    The guides' `docker run -rm` fails on docker >= 1.10; the warning names the fix rather than shimming docker."""
    text = _read(path)
    for line, message in legacy_docker_flags(text):
        _stderr(f"{path}:{line}: warning: {message}")
    return UnitFile.parse(text, str(path))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _fd_forward(args: Sequence[str]) -> int:
    """fleet's `fd-forward SOCKET`: bridge stdin/stdout to a unix socket (what `--tunnel` ran remotely)."""
    import selectors
    import socket

    if len(args) != 1:
        _stderr("Provide a single argument")
        return 1
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(args[0])
    except OSError as exc:
        _stderr(f"Unable to connect to socket {args[0]}: {exc.strerror}")
        return 1
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "in")
    selector.register(sock, selectors.EVENT_READ, "sock")
    while True:
        for key, _ in selector.select():
            if key.data == "in":
                data = os.read(sys.stdin.fileno(), 65536)
                if not data:
                    sock.shutdown(socket.SHUT_WR)
                    selector.unregister(sys.stdin.fileno())
                else:
                    sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    return 0
                os.write(sys.stdout.fileno(), data)


def run(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """fleetctl with `argv` (without the program name); returns the exit code."""
    try:
        parsed = parse(argv, environ)
    except UsageError as exc:
        _stderr(f"Error: {exc}\nRun 'fleetctl help' for usage.")
        return 2
    logging.basicConfig(level=logging.DEBUG if parsed.options["debug"] else logging.ERROR, format="%(message)s",
                        stream=sys.stderr)
    command = parsed.command
    if parsed.options["version"] or (command is not None and command.name == "version"):
        _stdout(f"fleetctl version {__version__}")
        return 0
    if command is None or parsed.options["help"] or command.name == "help":
        topic = None
        if command is not None and command.name == "help" and parsed.args:
            try:
                topic = find_command(parsed.args[0])
            except UsageError as exc:
                _stderr(f"Error: {exc}")
                return 2
        elif command is not None and command.name != "help":
            topic = command
        sys.stdout.write(usage(topic, __version__))
        return 0
    if command.name == "fd-forward":
        return _fd_forward(parsed.args)
    if parsed.options.get("sign"):
        _stderr("WARNING: The signed/verified units feature is DEPRECATED and cannot be used.")
        return 2
    driver = str(parsed.options["driver"])
    endpoint = str(parsed.options["endpoint"])
    if driver.lower() not in ("etcd", "api") or endpoint.startswith(("unix:", "file:")):
        _stderr(f"Unable to initialize client: only etcd endpoints are supported (--endpoint "
                f"http://<etcd>:2379), not {endpoint!r}")
        return 1
    tunnel = None
    try:
        endpoints = etcd.parse_endpoints(endpoint)
        if parsed.options["tunnel"]:
            from provisioner.cli.fleetctl_ssh import EtcdTunnel

            try:
                tunnel = EtcdTunnel(endpoints, ssh_options(parsed.options))
            except RemoteError as exc:
                _stderr(f"Unable to initialize client: failed initializing SSH client: {exc}")
                return 1
            endpoints = tunnel.endpoints
        tls = etcd.TlsFiles(ca_file=str(parsed.options["ca-file"]) or None,
                            cert_file=str(parsed.options["cert-file"]) or None,
                            key_file=str(parsed.options["key-file"]) or None)
        client = etcd.EtcdClient(endpoints, float(parsed.options["request-timeout"]), tls)
        fleetctl = Fleetctl(parsed, Registry(client, str(parsed.options["etcd-key-prefix"])))
        handler = getattr(fleetctl, "cmd_" + command.name.replace("-", "_"))
        return int(handler())
    except UsageError as exc:
        _stderr(str(exc))
        return 2
    except etcd.EtcdError as exc:
        _stderr(f"Error: {exc}")
        return 1
    except ProvisionerError as exc:
        _stderr(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if tunnel is not None:
            tunnel.close()


def main() -> int:
    """The `fleetctl` console script."""
    return run(sys.argv[1:], os.environ)
