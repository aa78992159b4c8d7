"""The process backend: fleetd runs each unit's [Service] commands itself, the way systemd would.

One thread per backend runs every unit's state machine (systemd's service states: start-pre,
start, start-post, running/exited, stop, stop-sigterm, stop-sigkill, stop-post, dead/failed,
auto-restart) on a selector over pidfds and log pipes, so a machine with hundreds of units costs one
thread, not hundreds. Calls from the agent (load, start, stop, unload) are queued to that thread.

Processes (started with subprocess.Popen, not core.commands.run, which runs a command to completion:
these are long-running children supervised here):
- every command runs in a session (process group) of its own; a unit's groups are what `KillMode=
  control-group` signals, so children of a unit's shell are stopped with it;
- commands are started through `setpriv --pdeathsig KILL`, from the manager thread, so when fleetd
  is killed (even with SIGKILL) its units die with it, like services with their service manager;
  leftover groups of a previous fleetd (pid files under <runtime>/pids) are killed at start;
- the environment is systemd's clean one (PATH, INVOCATION_ID, the unit's Environment= and
  EnvironmentFile=, $MAINPID/$SERVICE_RESULT/$EXIT_CODE/$EXIT_STATUS where systemd sets them).

Output (stdout and stderr) goes line by line to <runtime>/journal/<unit>.log in journalctl's short
format (`Nov 23 19:36:06 host bash[1234]: Hello`), rotated at 1 MiB to <unit>.log.1, and the unit's
systemctl-status-like header to <runtime>/status/<unit>; `fleetctl journal` and `fleetctl status`
read those files on the unit's machine (over SSH from elsewhere), as fleet ran journalctl there.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from provisioner.errors import ProvisionerError
from provisioner.scheduler.backends import ExistingUnit
from provisioner.scheduler.backends.service import (
    CLEAN_SIGNALS,
    DEFAULT_PATH,
    CommandLine,
    HostInfo,
    KillMode,
    ServiceResult,
    ServiceSpec,
    ServiceType,
    UnitConfigError,
    describe_exit,
    parse_environment_file,
    service_spec,
)
from provisioner.scheduler.model import UnitStatus
from provisioner.scheduler.unitfile import UnitFile
from provisioner.scheduler.unitlogs import LOG_LIMIT, UnitLogFiles

log = logging.getLogger("provisioner.scheduler.process")

KILL_WAIT = 5.0  # after SIGKILL, how long to wait for a group to disappear before giving up on it
_SETTLED = frozenset({"running", "exited", "dead", "failed", "auto-restart"})
_ACTIVE = {"start-pre": "activating", "start": "activating", "start-post": "activating", "running": "active",
           "exited": "active", "stop": "deactivating", "stop-sigterm": "deactivating",
           "stop-sigkill": "deactivating", "stop-post": "deactivating", "auto-restart": "activating",
           "dead": "inactive", "failed": "failed"}


@dataclasses.dataclass
class _Proc:
    service: _Service
    popen: subprocess.Popen
    pidfd: int
    pipe: int | None
    identifier: str
    main: bool
    ignore_failure: bool = False
    partial: bytes = b""
    reaped: bool = False


@dataclasses.dataclass
class _Service:
    name: str
    unit_path: Path
    spec: ServiceSpec | None
    error: str = ""
    sub: str = "dead"
    result: ServiceResult = ServiceResult.SUCCESS
    want_running: bool = False
    by_request: bool = False
    unloading: bool = False
    steps: list[CommandLine] = dataclasses.field(default_factory=list)
    after_steps: Callable[[], None] | None = None
    control: _Proc | None = None
    main: _Proc | None = None
    main_exit: int | None = None
    pgids: set[int] = dataclasses.field(default_factory=set)
    deadline: float = math.inf
    on_deadline: Callable[[], None] | None = None
    start_times: collections.deque = dataclasses.field(default_factory=collections.deque)
    restarts: int = 0
    since: float = dataclasses.field(default_factory=time.time)
    invocation: str = ""

    @property
    def status(self) -> UnitStatus:
        if self.spec is None:
            return UnitStatus("bad-setting", "inactive", "dead")
        return UnitStatus("loaded", _ACTIVE[self.sub], self.sub)


class ProcessBackend:
    """Runs units as process groups of fleetd; see the module docstring."""

    def __init__(self, runtime_dir: str | Path, host: HostInfo, on_change: Callable[[], None] = lambda: None,
                 log_limit: int = LOG_LIMIT):
        self.root = Path(runtime_dir)
        self.host = host
        self.on_change = on_change
        self.logs = UnitLogFiles(self.root, host.hostname, log_limit)
        for sub in ("units", "pids"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if shutil.which("setpriv") is None:
            raise ProvisionerError("process backend: setpriv not found (Debian package util-linux)")
        self._kill_leftovers()
        self.logs.forget_status()
        self._lock = threading.Lock()
        self._queue: collections.deque[tuple[str, str, UnitFile | None]] = collections.deque()
        self._statuses: dict[str, UnitStatus] = {}
        self._services: dict[str, _Service] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="process-backend", daemon=True)
        self._thread.start()

    # -- the interface (any thread) ---------------------------------------------------------------

    def load(self, name: str, unit: UnitFile) -> None:
        self._enqueue("load", name, unit)

    def unload(self, name: str) -> None:
        self._enqueue("unload", name)

    def start(self, name: str) -> None:
        self._enqueue("start", name)

    def stop(self, name: str) -> None:
        self._enqueue("stop", name)

    def statuses(self) -> dict[str, UnitStatus]:
        with self._lock:
            return dict(self._statuses)

    def existing(self) -> dict[str, ExistingUnit]:
        return {}  # the units of a previous fleetd died with it

    def close(self, timeout: float = 120.0) -> None:
        """Stop every unit (ExecStop, signals, ExecStopPost) and end the manager thread."""
        self._enqueue("close", "")
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("process backend: units still stopping after %.0f s; leaving them", timeout)

    def _enqueue(self, command: str, name: str, unit: UnitFile | None = None) -> None:
        with self._lock:
            self._queue.append((command, name, unit))
        with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
            os.write(self._wake_write, b"x")

    # -- the manager thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            deadline = min((s.deadline for s in self._services.values()), default=math.inf)
            stopping = any(s.sub in ("stop-sigterm", "stop-sigkill") for s in self._services.values())
            wait = min(max(deadline - now, 0.0), 0.1 if stopping else 1.0)
            for key, _ in self._selector.select(wait):
                try:
                    self._event(key)
                except Exception:  # one unit's trouble must not stop the others
                    log.exception("process backend: handling an event failed")
            self._run_queue()
            self._check_timers()
            if self._closing and not self._services:
                self._selector.close()
                os.close(self._wake_read)
                os.close(self._wake_write)
                return

    def _event(self, key: selectors.SelectorKey) -> None:
        if key.data is None:
            try:
                while os.read(self._wake_read, 4096):
                    pass
            except BlockingIOError:
                pass
            return
        # An event from the same select() may belong to a descriptor closed (or even reused) since.
        kind, proc = key.data
        if kind == "pipe" and proc.pipe is not None:
            self._read_output(proc)
        elif kind == "exit" and not proc.reaped:
            self._reaped(proc)

    def _run_queue(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    return
                command, name, unit = self._queue.popleft()
            try:
                self._command(command, name, unit)
            except Exception:
                log.exception("process backend: %s %s failed", command, name)

    def _command(self, command: str, name: str, unit: UnitFile | None) -> None:
        if command == "close":
            self._closing = True
            for service in list(self._services.values()):
                service.unloading = True
                self._request_stop(service)
            return
        found = self._services.get(name)
        if command == "load":
            assert unit is not None
            self._load(name, unit, found)
            return
        if found is None:
            log.debug("process backend: %s %s: not loaded", command, name)
            return
        service = found
        if command == "start":
            service.want_running = True
            if service.sub in ("dead", "failed"):
                self._begin_start(service)
        elif command == "stop":
            self._request_stop(service)
        elif command == "unload":
            service.unloading = True
            self._request_stop(service)

    def _load(self, name: str, unit: UnitFile, service: _Service | None) -> None:
        # Written here, in queue order, so an unload queued just before cannot delete the new file.
        path = self.root / "units" / name
        try:
            path.with_name(f".{name}.tmp").write_text(unit.serialize())
            os.replace(path.with_name(f".{name}.tmp"), path)
            spec, error = service_spec(name, unit, self.host), ""
        except OSError as exc:
            spec, error = None, f"{path}: cannot write the unit file: {exc.strerror}"
        except UnitConfigError as exc:
            spec, error = None, str(exc)
        if error:
            self.logs.line(name, f"fleetd[{os.getpid()}]", f"{name}: {error}")
        if service is None:
            service = _Service(name=name, unit_path=self.root / "units" / name, spec=spec, error=error)
            self._services[name] = service
        else:  # same name loaded again: the new file applies from its next start
            service.spec, service.error, service.unloading = spec, error, False
        self._changed(service)

    def _check_timers(self) -> None:
        now = time.monotonic()
        # Only units whose own processes are reaped can be done; their groups may still hold children.
        stopping = [s for s in self._services.values() if s.sub in ("stop-sigterm", "stop-sigkill")
                    and s.main is None and s.control is None]
        live = _live_groups({pgid for s in stopping for pgid in s.pgids}) if stopping else set()
        for service in list(self._services.values()):
            if service in stopping and self._all_gone(service, live):
                service.deadline = math.inf
                self._enter_stop_post(service)
            elif now >= service.deadline and service.on_deadline is not None:
                action, service.on_deadline, service.deadline = service.on_deadline, None, math.inf
                action()

    # -- starting ---------------------------------------------------------------------------------

    def _begin_start(self, service: _Service) -> None:
        spec = service.spec
        if spec is None:
            return
        now = time.monotonic()
        while service.start_times and now - service.start_times[0] > spec.start_limit_interval:
            service.start_times.popleft()
        if len(service.start_times) >= spec.start_limit_burst:
            service.result = ServiceResult.START_LIMIT_HIT
            self._log(service, f"{service.name}: Start request repeated too quickly.")
            self._log(service, f"{service.name}: Failed with result 'start-limit-hit'.")
            self._set(service, "failed")
            return
        service.start_times.append(now)
        service.result = ServiceResult.SUCCESS
        service.by_request = False
        service.main_exit = None
        service.invocation = uuid.uuid4().hex
        self._log(service, f"Starting {spec.description}...")
        self._arm(service, spec.timeout_start, lambda: self._start_timed_out(service))
        self._run_steps(service, "start-pre", list(spec.exec_start_pre), lambda: self._enter_start(service))

    def _enter_start(self, service: _Service) -> None:
        spec = service.spec
        assert spec is not None
        if spec.type is ServiceType.ONESHOT:
            self._run_steps(service, "start", list(spec.exec_start), lambda: self._enter_start_post(service),
                            main=True)
            return
        self._set(service, "start")
        if self._spawn(service, spec.exec_start[0], main=True) is None:
            self._fail(service, ServiceResult.EXIT_CODE)
            return
        self._enter_start_post(service)

    def _enter_start_post(self, service: _Service) -> None:
        spec = service.spec
        assert spec is not None
        self._run_steps(service, "start-post", list(spec.exec_start_post), lambda: self._enter_running(service))

    def _enter_running(self, service: _Service) -> None:
        spec = service.spec
        assert spec is not None
        service.deadline, service.on_deadline = math.inf, None
        if spec.type is ServiceType.ONESHOT:
            self._log(service, f"Finished {spec.description}.")
            if spec.remain_after_exit:
                self._set(service, "exited")
            else:
                self._enter_stop(service)
            return
        if service.main is None and service.main_exit is not None:
            self._set(service, "running")
            self._main_exited(service)  # it ended while ExecStartPost= ran
            return
        self._set(service, "running")
        self._log(service, f"Started {spec.description}.")

    def _start_timed_out(self, service: _Service) -> None:
        self._log(service, f"{service.name}: Start operation timed out. Terminating.")
        self._fail(service, ServiceResult.TIMEOUT)

    # -- steps: a list of commands run one after the other ------------------------------------------

    def _run_steps(self, service: _Service, phase: str, commands: list[CommandLine], then: Callable[[], None],
                   main: bool = False) -> None:
        self._set(service, phase)
        service.steps = commands
        service.after_steps = then
        self._next_step(service, main)

    def _next_step(self, service: _Service, main: bool = False) -> None:
        if not service.steps:
            then, service.after_steps = service.after_steps, None
            if then is not None:
                then()
            return
        command = service.steps.pop(0)
        proc = self._spawn(service, command, main=main)
        if proc is None and not command.ignore_failure:
            self._step_failed(service, main)
        elif proc is None:
            self._next_step(service, main)

    def _step_failed(self, service: _Service, main: bool = False) -> None:
        if service.sub == "stop-post":
            self._next_step(service, main)  # ExecStopPost= failures do not stop the cleanup
            return
        service.steps = []
        service.after_steps = None
        if service.sub == "stop":
            self._enter_sigterm(service)  # a failing ExecStop= still goes on to stop the unit
        else:
            self._fail(service, ServiceResult.EXIT_CODE)

    # -- stopping ---------------------------------------------------------------------------------

    def _request_stop(self, service: _Service) -> None:
        service.want_running = False
        if service.sub in ("dead", "failed", "auto-restart"):
            service.deadline, service.on_deadline = math.inf, None
            if service.sub == "auto-restart":
                self._set(service, "dead")
            self._finish_unload(service)
            return
        if service.sub in ("stop", "stop-sigterm", "stop-sigkill", "stop-post"):
            return
        service.by_request = True
        if service.spec is not None:
            self._log(service, f"Stopping {service.spec.description}...")
        if service.sub in ("running", "exited"):
            self._enter_stop(service)
        else:  # still starting: no ExecStop=, straight to the signals
            service.steps, service.after_steps = [], None
            self._enter_sigterm(service)

    def _fail(self, service: _Service, result: ServiceResult) -> None:
        """Activation failed: stop what runs (no ExecStop=, it never started), then ExecStopPost=."""
        if service.result is ServiceResult.SUCCESS:
            service.result = result
        service.steps, service.after_steps = [], None
        self._enter_sigterm(service)

    def _enter_stop(self, service: _Service) -> None:
        spec = service.spec
        assert spec is not None
        self._arm(service, spec.timeout_stop, lambda: self._stop_timed_out(service))
        self._run_steps(service, "stop", list(spec.exec_stop), lambda: self._enter_sigterm(service))

    def _stop_timed_out(self, service: _Service) -> None:
        self._log(service, f"{service.name}: Stopping timed out. Killing.")
        if service.result is ServiceResult.SUCCESS:
            service.result = ServiceResult.TIMEOUT
        self._enter_sigkill(service)

    def _enter_sigterm(self, service: _Service) -> None:
        spec = service.spec
        assert spec is not None
        self._set(service, "stop-sigterm")
        self._arm(service, spec.timeout_stop, lambda: self._stop_timed_out(service))
        if spec.kill_mode is KillMode.CONTROL_GROUP:
            self._signal_groups(service, spec.kill_signal)
        elif spec.kill_mode in (KillMode.PROCESS, KillMode.MIXED):
            for proc in (service.main, service.control):
                if proc is not None:
                    _signal_pid(proc.popen.pid, spec.kill_signal)

    def _enter_sigkill(self, service: _Service) -> None:
        spec = service.spec
        assert spec is not None
        self._set(service, "stop-sigkill")
        if spec.send_sigkill and spec.kill_mode is not KillMode.NONE:
            self._signal_groups(service, signal.SIGKILL)
        self._arm(service, KILL_WAIT, lambda: self._enter_stop_post(service))

    def _enter_stop_post(self, service: _Service) -> None:
        spec = service.spec
        assert spec is not None
        service.deadline, service.on_deadline = math.inf, None
        if service.sub == "stop-post" or service.sub in ("dead", "failed"):
            return
        self._arm(service, spec.timeout_stop, lambda: self._finish(service))
        self._run_steps(service, "stop-post", list(spec.exec_stop_post), lambda: self._finish(service))

    def _finish(self, service: _Service) -> None:
        """The unit is down: dead or failed, then maybe restarted, unloaded, or started again."""
        spec = service.spec
        assert spec is not None
        service.deadline, service.on_deadline = math.inf, None
        if service.control is not None:
            _signal_pid(service.control.popen.pid, signal.SIGKILL)
        service.main = None
        failed = service.result is not ServiceResult.SUCCESS
        if failed:
            self._log(service, f"{service.name}: Failed with result '{service.result.value}'.")
        elif service.by_request:
            self._log(service, f"Stopped {spec.description}.")
        else:
            self._log(service, f"{service.name}: Deactivated successfully.")
        self._set(service, "failed" if failed else "dead")
        service.pgids.clear()
        (self.root / "pids" / service.name).unlink(missing_ok=True)
        if self._finish_unload(service):
            return
        if service.want_running and service.by_request:
            self._begin_start(service)  # a start came while it was stopping
            return
        outcome = "clean" if not failed else {ServiceResult.EXIT_CODE: "exit-code", ServiceResult.SIGNAL: "signal",
                                              ServiceResult.CORE_DUMP: "signal",
                                              ServiceResult.TIMEOUT: "timeout"}.get(service.result, "")
        if service.want_running and not service.by_request and spec.restarts_after(outcome):
            service.restarts += 1
            self._set(service, "auto-restart")
            self._log(service, f"{service.name}: Scheduled restart job, restart counter is at {service.restarts}.")
            self._arm(service, spec.restart_sec, lambda: self._restart(service))
        else:
            service.want_running = False

    def _restart(self, service: _Service) -> None:
        if service.sub == "auto-restart":
            self._set(service, "dead")
            self._begin_start(service)

    def _finish_unload(self, service: _Service) -> bool:
        if not service.unloading or service.sub not in ("dead", "failed"):
            return False
        del self._services[service.name]
        with self._lock:
            self._statuses.pop(service.name, None)
        for path in (service.unit_path, self.root / "pids" / service.name):
            path.unlink(missing_ok=True)
        self.logs.forget_status(service.name)
        self.on_change()
        return True

    # -- processes --------------------------------------------------------------------------------

    def _environment(self, service: _Service) -> dict[str, str]:
        spec = service.spec
        assert spec is not None
        environment = {"PATH": DEFAULT_PATH, "INVOCATION_ID": service.invocation}
        environment.update(spec.environment)
        for path, optional in spec.environment_files:
            try:
                environment.update(parse_environment_file(Path(path).read_text()))
            except OSError as exc:
                if not optional:
                    raise UnitConfigError(f"EnvironmentFile={path}: {exc.strerror}") from None
        if service.main is not None and service.sub in ("start-post", "running", "stop"):
            environment["MAINPID"] = str(service.main.popen.pid)
        if service.sub in ("stop", "stop-post"):
            environment["SERVICE_RESULT"] = service.result.value
            if service.main_exit is not None:
                code, status = describe_exit(service.main_exit)
                environment["EXIT_CODE"] = code
                environment["EXIT_STATUS"] = status.split("/")[1 if code == "killed" else 0]
        return environment

    def _spawn(self, service: _Service, command: CommandLine, main: bool) -> _Proc | None:
        """Start one command in a new session; None (after logging why) when it cannot be started."""
        spec = service.spec
        assert spec is not None
        identity = f"fleetd[{os.getpid()}]"
        try:
            environment = self._environment(service)
            argv = command.argv(environment)
            if not argv:
                raise UnitConfigError(f"{command.path}: the command line expands to nothing")
            path = _locate(command.path)
            if path is None:
                raise UnitConfigError(f"Failed to locate executable {command.path}: No such file or directory")
            if command.argv0_given:
                program, args = path, argv
            else:
                program, args = "setpriv", ["setpriv", "--pdeathsig", "KILL", "--", path, *argv[1:]]
            cwd = _working_directory(spec)
        except UnitConfigError as exc:
            self.logs.line(service.name, identity, f"{service.name}: {exc}")
            service.main_exit = 203 if main else service.main_exit
            return None
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            popen = subprocess.Popen(args, executable=program if command.argv0_given else None,
                                     stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end, env=environment,
                                     cwd=cwd, start_new_session=True, user=spec.user, group=spec.group,
                                     umask=spec.umask, close_fds=True)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            os.close(read_end)
            os.close(write_end)
            self.logs.line(service.name, identity, f"{service.name}: Failed to execute {path}: {exc}")
            service.main_exit = 203 if main else service.main_exit
            return None
        os.close(write_end)
        os.set_blocking(read_end, False)
        proc = _Proc(service, popen, os.pidfd_open(popen.pid), read_end, os.path.basename(argv[0]), main,
                     command.ignore_failure)
        service.pgids.add(popen.pid)
        records = (f"{pgid}:{_start_time(pgid)}" for pgid in sorted(service.pgids))
        (self.root / "pids" / service.name).write_text(" ".join(records) + "\n")
        self._selector.register(proc.pidfd, selectors.EVENT_READ, ("exit", proc))
        self._selector.register(read_end, selectors.EVENT_READ, ("pipe", proc))
        if main:
            service.main = proc
        else:
            service.control = proc
        return proc

    def _reaped(self, proc: _Proc) -> None:
        returncode = proc.popen.poll()
        if returncode is None:
            return
        proc.reaped = True
        while proc.pipe is not None and self._read_output(proc):
            pass  # its last words go to the log before the exit is reported
        self._selector.unregister(proc.pidfd)
        os.close(proc.pidfd)
        service = proc.service
        if proc.main:
            service.main = None if service.main is proc else service.main
            service.main_exit = returncode
            if service.sub in ("running", "start-post"):
                if service.sub == "running":
                    self._main_exited(service)
                return
            if service.sub == "start" and service.spec is not None and service.spec.type is ServiceType.ONESHOT:
                self._step_done(service, proc, returncode, main=True)
            return
        if service.control is proc:
            service.control = None
            self._step_done(service, proc, returncode)

    def _step_done(self, service: _Service, proc: _Proc, returncode: int, main: bool = False) -> None:
        if service.sub in ("stop-sigterm", "stop-sigkill", "dead", "failed"):
            return  # a step we killed while stopping: the stop goes on from the timers
        if returncode != 0 and not proc.ignore_failure:
            code, status = describe_exit(returncode)
            what = "Main" if main else "Control"
            self._log(service, f"{service.name}: {what} process exited, code={code}, status={status}")
            if main and returncode < 0:
                service.result = ServiceResult.SIGNAL
            self._step_failed(service, main)
            return
        self._next_step(service, main)

    def _main_exited(self, service: _Service) -> None:
        spec = service.spec
        assert spec is not None and service.main_exit is not None
        returncode = service.main_exit
        code, status = describe_exit(returncode)
        clean = returncode == 0 or returncode in spec.success_exit_status or (
            returncode < 0 and (-returncode in CLEAN_SIGNALS or -returncode in spec.success_signals))
        if not clean:
            self._log(service, f"{service.name}: Main process exited, code={code}, status={status}")
            service.result = ServiceResult.SIGNAL if returncode < 0 else ServiceResult.EXIT_CODE
        self._enter_stop(service)

    def _all_gone(self, service: _Service, live: set[int]) -> bool:
        if service.main is not None or service.control is not None:
            return False
        service.pgids &= live
        return not service.pgids

    def _signal_groups(self, service: _Service, number: int) -> None:
        for pgid in list(service.pgids):
            try:
                os.killpg(pgid, number)
            except ProcessLookupError:
                service.pgids.discard(pgid)
            except PermissionError as exc:
                log.warning("%s: cannot signal process group %d: %s", service.name, pgid, exc)

    def _kill_leftovers(self) -> None:
        """Process groups a previous fleetd left behind (only a killed fleetd leaves any).

        Each record is 'pgid:start time of its leader', so a group ID that the kernel has since given
        to an unrelated process is left alone.
        """
        for record in (self.root / "pids").iterdir():
            for text in record.read_text().split():
                pgid, _, started = text.partition(":")
                if not pgid.isdigit() or _start_time(int(pgid)) != started:
                    continue
                try:
                    os.killpg(int(pgid), signal.SIGKILL)
                    log.info("process backend: killed leftover process group %s of %s", pgid, record.name)
                except (ProcessLookupError, PermissionError):
                    pass
            record.unlink(missing_ok=True)

    # -- output -----------------------------------------------------------------------------------

    def _read_output(self, proc: _Proc) -> bool:
        """Log what the process wrote; False when nothing more can be read now."""
        assert proc.pipe is not None
        try:
            chunk = os.read(proc.pipe, 65536)
        except BlockingIOError:
            return False
        if chunk:
            *lines, proc.partial = (proc.partial + chunk).split(b"\n")
        else:
            lines, proc.partial = ([proc.partial] if proc.partial else []), b""
            self._selector.unregister(proc.pipe)
            os.close(proc.pipe)
            proc.pipe = None
        for line in lines:
            self.logs.line(proc.service.name, f"{proc.identifier}[{proc.popen.pid}]",
                               line.decode("utf-8", "replace"))
        return proc.pipe is not None

    def _log(self, service: _Service, message: str) -> None:
        self.logs.line(service.name, f"fleetd[{os.getpid()}]", message)

    # -- state ------------------------------------------------------------------------------------

    def _arm(self, service: _Service, seconds: float, action: Callable[[], None]) -> None:
        service.deadline = time.monotonic() + seconds if seconds != math.inf else math.inf
        service.on_deadline = action

    def _set(self, service: _Service, sub: str) -> None:
        active_changed = _ACTIVE[sub] != _ACTIVE[service.sub]
        if active_changed:
            service.since = time.time()
        service.sub = sub
        # The status file is rewritten when the unit settles or its active state changes, not at every
        # step of a start (start-pre, start, start-post): a unit start costs two writes, not four.
        self._changed(service, write=active_changed or sub in _SETTLED)

    def _changed(self, service: _Service, write: bool = True) -> None:
        with self._lock:
            self._statuses[service.name] = service.status
        if write:
            self._write_status(service)
        self.on_change()

    def _write_status(self, service: _Service) -> None:
        status = service.status
        description = service.spec.description if service.spec else service.name
        since = time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime(service.since))
        lines = [f"● {service.name} - {description}",
                 f"     Loaded: {status.load} ({service.unit_path})"
                 + (f"\n      Error: {service.error}" if service.error else ""),
                 f"     Active: {status.active} ({status.sub}) since {since}"]
        if service.main is not None:
            lines.append(f"   Main PID: {service.main.popen.pid} ({service.main.identifier})")
        elif service.main_exit is not None:
            code, exit_status = describe_exit(service.main_exit)
            lines.append(f"    Process: code={code}, status={exit_status}")
        self.logs.status(service.name, lines)


def _locate(path: str) -> str | None:
    """An absolute path as is (if it exists), a bare name searched in systemd's fixed PATH."""
    if path.startswith("/"):
        return path if os.access(path, os.X_OK) else None
    for directory in DEFAULT_PATH.split(":"):
        candidate = os.path.join(directory, path)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _working_directory(spec: ServiceSpec) -> str:
    directory = spec.working_directory
    if directory is None:
        return "/"
    optional = directory.startswith("-")
    directory = directory.lstrip("-")
    if directory == "~":
        directory = os.path.expanduser(f"~{spec.user}" if spec.user else "~")
    if not os.path.isdir(directory):
        if optional:
            return "/"
        raise UnitConfigError(f"WorkingDirectory={directory}: no such directory")
    return directory


def _live_groups(pgids: set[int]) -> set[int]:
    """The process groups among `pgids` that still hold a process that is not a zombie.

    kill(-pgid, 0) answers "gone" for most groups at once (the cheap, common case). It is no test for
    the rest: an orphaned child of a unit stays a zombie until PID 1 reaps it, which on some hosts
    takes seconds, and a zombie still counts as a member of its group; for those, /proc says.
    """
    existing: set[int] = set()
    for pgid in pgids:
        try:
            os.killpg(pgid, 0)
            existing.add(pgid)
        except ProcessLookupError:
            pass
        except PermissionError:
            existing.add(pgid)  # it exists (a member changed its user)
    if not existing:
        return existing
    alive: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) in existing:
            alive.add(int(fields[2]))
    return alive


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), '' if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _signal_pid(pid: int, number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, number)
