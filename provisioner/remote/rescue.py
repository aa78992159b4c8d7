"""Install to a disk of a host booted into its provider's rescue Linux, over one SSH session.

The steps (each a function, `rescue_install` runs them in order) run in ONE exec and one remote python3
on one connection (host_script.py, started as `python3 -c BOOT`; each exec forks a session on the host
and each python3 start costs again, so nothing else is spawned there): the host process prints the
facts, then waits on its stdin for our decision while the installer zipapp and the input files are
already on their way to it (kept in its memory, written only once we ask for the install):
1. inspect (facts_script.py, in the host process): stop an install a dropped session left running (its
   pid file), read disks/holders/memory/python3 and the recorded install states; a /dev/disk/by-id/...
   name is followed to its device there;
2. pick the disk (explicit, or `auto` = flatcar-install -s) and refuse a busy one, naming the reason;
   `--stop-raid` first has the host process stop the auto-assembled md/dm holders on it
   (inspect.stop_plan) and inspect again;
3. ask for confirmation (the CLI's job; `--yes` skips it); a "no" tells the host process to exit, and
   nothing was written on the host;
4. the install request: the host process writes the zipapp (standard library only: rescue systems have
   python3 but no pip), the cloud-config / Ignition / key files (mode 0600: a cloud-config often carries
   secrets), `state-<disk>.json = installing` and its own pid (`installer.pid`);
5. it runs the installer from the zipapp in the same process (`-d DISK ... --progress json --yes`),
   streaming its JSON progress into the local bar; with `--push` the installer pulls the local image
   through a port forwarded over this same SSH connection (push.py), so it streams from our disk to theirs;
6. if that succeeded, it verifies with the zipapp's own GPT reader (verify_script.py): the CoreOS layout
   and each file we sent, compared by SHA-256; it records `installed`, and with `--reboot` starts the
   reboot command detached, a second later.
The report's step times: inspect (until the facts are judged), upload (the install request until the
installer's first event), install, verify.

A dropped connection is a PartialError (exit 3) that says the disk is partially written; the state file
on the host says `installing`, and the same command re-run stops any orphaned install and installs
again from the start (writing an image is idempotent; resuming in the middle of a compressed stream
is not possible, and the installer commits the GPT headers last, so a half-written disk never looks
installed). Ctrl-C stops the remote install through its pid file (without a pty it would go on).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.core.logs import step
from provisioner.core.sizes import format_size
from provisioner.disk.blockdev import busy_reasons
from provisioner.errors import (
    ConfigError,
    DiskError,
    InstallError,
    PartialError,
    ProvisionerError,
    RemoteError,
    UsageError,
    VerifyError,
)
from provisioner.install.progress import EventKind, ProgressEvent, parse_progress_line
from provisioner.install.zipapp import build_zipapp
from provisioner.remote import inspect
from provisioner.remote.inspect import AUTO_MIN_SIZE, Block, HostFacts
from provisioner.remote.session import ConnectionLost, RemoteProcess, Result, Session, failure_line

log = logging.getLogger("provisioner.remote")

REMOTE_DIR = "/tmp/provisioner-rescue"
SCRIPTS = tuple(Path(__file__).with_name(name) for name in ("facts_script.py", "verify_script.py", "host_script.py"))
MARK = "provisioner-rescue:"  # host_script.MARK: the lines of its protocol on stdout
VERIFY_MARKER = f"{MARK} verify"
UNPACK_FAILED = 90  # host_script.UNPACK_FAILED: the payload cannot be written
# `python3 -c BOOT REMOTE_DIR DISK`: load SCRIPTS from stdin (each after its length) as modules and run
# the host process; the command line stays short and names REMOTE_DIR (facts_script.stop_orphan).
BOOT = """import sys, types
modules = []
for name in ("facts_script", "verify_script", "host_script"):
    module = types.ModuleType(name)
    exec(compile(sys.stdin.buffer.read(int(sys.stdin.buffer.readline())), name + ".py", "exec"), module.__dict__)
    modules.append(module)
sys.exit(modules[2].main(modules[0], modules[1]))
"""
# Where the installer leaves the cloud-config and the Ignition file (flatcar-install's places).
CLOUD_CONFIG_TARGET = "ROOT:/var/lib/flatcar-install/user_data"
IGNITION_TARGET = "OEM:/config.ign"


@dataclass(frozen=True)
class RescueRequest:
    """What the operator asked for (the CLI builds it; paths are local unless named remote)."""

    disk: str = "auto"
    installer_args: tuple[str, ...] = ()  # passed through unchanged (-C -V -b -o ... and extras)
    image: Path | None = None  # --push: the local image file, served through a forwarded port (push.py)
    cloud_config: Path | None = None
    ignition: Path | None = None
    keyfile: Path | None = None  # -k: a local public key file, uploaded
    push: bool = False
    stop_raid: bool = False
    reboot: bool = False
    reboot_command: tuple[str, ...] = ("reboot",)
    min_size: int = AUTO_MIN_SIZE
    auto_types: tuple[str, ...] = ("disk",)
    remote_dir: str = REMOTE_DIR
    zipapp: Path | None = None  # a prebuilt installer zipapp; built on the fly when None


@dataclass
class RescueReport:
    """What happened, for the CLI to print (text or --json)."""

    host: str
    disk: str
    disk_size: int = 0
    auto_chosen: bool = False
    previous: str | None = None
    stopped: list[str] = field(default_factory=list)
    verify: dict = field(default_factory=dict)
    rebooted: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@contextlib.contextmanager
def _timed(report: RescueReport, name: str) -> Iterator[None]:
    """Log the step (core.logs.step) and keep its time in report.seconds, so a slow install says why."""
    start = time.monotonic()
    try:
        with step(name, log):
            yield
    finally:
        report.seconds[name] = round(time.monotonic() - start, 3)


def state_path(request: RescueRequest, disk: str) -> str:
    return f"{request.remote_dir}/state-{disk.rsplit('/', 1)[-1]}.json"


def installer_argv(request: RescueRequest, disk: str, uploaded: dict[str, str],
                   source_args: Sequence[str] = ()) -> list[str]:
    """The remote installer's arguments (pure): our uploads replace the local paths; `source_args`
    point a pushed image's installer at the forwarded port (push.installer_args)."""
    argv = ["-d", disk, *request.installer_args, *source_args]
    if "cloud_config" in uploaded:
        argv += ["-c", uploaded["cloud_config"]]
    if "ignition" in uploaded:
        argv += ["-i", uploaded["ignition"]]
    if "keyfile" in uploaded:
        argv += ["-k", uploaded["keyfile"]]
    return argv + ["--progress", "json", "--yes"]


def expected_files(request: RescueRequest) -> dict[str, str]:
    """`LABEL:/path` -> sha256 of what must be on the installed disk (pure but for reading the files)."""
    files = {}
    if request.cloud_config:
        files[CLOUD_CONFIG_TARGET] = hashlib.sha256(request.cloud_config.read_bytes()).hexdigest()
    if request.ignition:
        files[IGNITION_TARGET] = hashlib.sha256(request.ignition.read_bytes()).hexdigest()
    return files


def check_request(request: RescueRequest) -> None:
    """Refuse a request that cannot work before connecting. Raises UsageError / ConfigError."""
    if request.push and request.image is None:
        raise UsageError("--push needs -f IMAGE (a local image file to stream to the rescue host)")
    if request.push and any(a in ("-b", "-C", "-V") for a in request.installer_args):
        raise UsageError("--push streams a local file: -b/-C/-V make no sense with it")
    for name, path in (("-f", request.image), ("-c", request.cloud_config), ("--ignition", request.ignition),
                       ("-k", request.keyfile)):
        if path is not None and (request.push or name != "-f") and not path.is_file():
            raise ConfigError(f"{path}: no such file (given as {name})")
    if request.reboot and not request.reboot_command:
        raise UsageError("--reboot needs a reboot command")


def state_record(disk: str, status: str, **extra) -> bytes:
    """The JSON kept in REMOTE_DIR/state-<disk>.json (facts_script.py reads it back on a re-run)."""
    state = {"disk": disk, "status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    return json.dumps(state).encode() + b"\n"


def payload_files(request: RescueRequest, zipapp: Path) -> list[tuple[str, str, bytes]]:
    """(role, file name in REMOTE_DIR, content) of everything the host process writes before the
    install: the installer zipapp and the local input files."""
    files = [("zipapp", "installer.pyz", zipapp.read_bytes())]
    for role, path, name in (("cloud_config", request.cloud_config, "cloud-config.yaml"),
                             ("ignition", request.ignition, "config.ign"),
                             ("keyfile", request.keyfile, "release-key.asc")):
        if path is not None:
            files.append((role, name, path.read_bytes()))
    return files


def _request_line(**request: object) -> bytes:
    return json.dumps(request).encode() + b"\n"


def _reply(process: RemoteProcess, kind: str, timeout: float | None) -> dict | None:
    """The data of the host process's next `MARK kind {...}` line; None when its output ends first.
    Raises RemoteError for a line that is not JSON."""
    prefix = f"{MARK} {kind} "
    for line in process.lines(timeout):
        if line.startswith(prefix):
            try:
                return json.loads(line[len(prefix):])
            except ValueError as exc:
                raise RemoteError(f"{process.endpoint}: unreadable {kind!r} answer from the host: {exc}") from None
        log.info("remote: %s", line)
    return None


def read_facts(process: RemoteProcess, host: str) -> tuple[HostFacts, str | None]:
    """The facts the host process prints, and the requested disk with its symlinks followed there
    (None: no such path). Raises RemoteError (python3 missing, inspection failed)."""
    data = _reply(process, "facts", timeout=60)
    if data is None:
        raise inspect.inspection_failure(host, process.wait())
    return inspect.parse_output(host, data), data.get("disk")


def select_disk(facts: HostFacts, request: RescueRequest, path: str | None = None) -> tuple[Block, bool]:
    """The target disk (`path`, default request.disk) and whether it was chosen automatically.

    Raises DiskError for an unknown disk, a partition, or no candidate for `auto`.
    """
    wanted = path or request.disk
    if wanted == "auto":
        choice = inspect.choose_disk(facts, request.min_size, request.auto_types)
        for line in choice.rejected:
            log.info("--disk auto: passed over %s", line)
        log.warning("--disk auto chose %s (%s, the smallest unused disk larger than %s)", choice.disk.path,
                    format_size(choice.disk.size), format_size(request.min_size))
        return choice.disk, True
    disk = facts.disk(wanted)
    if disk is None:
        for block in facts.disks:
            for node in block.walk():
                if node.path == wanted and node is not block:
                    raise DiskError(f"{wanted} is a partition on {facts.hostname}; give the whole disk "
                                    f"({block.path})")
        known = ", ".join(b.path for b in facts.disks if b.type in ("disk", "loop") and b.size) or "none"
        raise DiskError(f"{wanted}: no such disk on {facts.hostname} (disks: {known})")
    return disk, False


def release_disk(process: RemoteProcess, host: str, facts: HostFacts, disk: Block,
                 request: RescueRequest) -> tuple[Block, list[str]]:
    """Refuse a busy disk with its reason, or (--stop-raid) stop its RAID/LVM holders first.

    Returns the disk as re-inspected and the commands that ran. Raises DiskError, RemoteError.
    """
    reasons = busy_reasons(disk, facts.disk_use)
    if not reasons:
        return disk, []
    holders_only = all(" is built on " in r or " holds " in r for r in reasons)
    if not request.stop_raid:
        hint = "; pass --stop-raid to stop the RAID/LVM on it" if holders_only else ""
        raise DiskError(f"{disk.path} on {facts.hostname} is busy: {'; '.join(reasons)}{hint}")
    plan = inspect.stop_plan(facts, disk)
    for argv in plan:
        log.warning("--stop-raid: %s", shlex.join(argv))
    process.send(_request_line(op="stop", commands=plan))
    ran = []
    for argv in plan:
        outcome = _reply(process, "ran", timeout=130)
        if outcome is None:
            raise inspect.inspection_failure(host, process.wait())
        result = Result(shlex.join(argv), outcome["exit"], "", outcome["stderr"])
        if result.exit_status != 0:
            raise RemoteError(failure_line(host, result))
        ran.append(result.command)
    again, _path = read_facts(process, host)
    disk = again.disk(disk.path) or disk
    still = busy_reasons(disk, again.disk_use)
    if still:
        raise DiskError(f"{disk.path} on {again.hostname} is still busy after --stop-raid: {'; '.join(still)}")
    return disk, ran


def install_and_verify(process: RemoteProcess, request: RescueRequest, install: bytes,
                       on_event: Callable[[ProgressEvent], None], report: RescueReport) -> dict:
    """Send the install request to the host process, stream the installer's progress and read the
    check's report; fills report.seconds (upload, install, verify).

    Raises RemoteError (cannot write the inputs), InstallError, VerifyError, ConnectionLost.
    """
    events: list[ProgressEvent] = []
    other: list[str] = []
    checked: list[str] = []
    marks = {"start": time.monotonic()}

    def line(text: str) -> None:
        if "verify" in marks:
            checked.append(text)
            return
        if text == VERIFY_MARKER:
            marks["verify"] = time.monotonic()
            return
        event = parse_progress_line(text)
        if event is None:
            if text.strip():
                other.append(text)
                log.info("remote: %s", text)
            return
        marks.setdefault("install", time.monotonic())
        events.append(event)
        on_event(event)

    try:
        process.send(install, eof=True)
        for text in process.lines():
            line(text)
        result = process.wait()
    finally:
        end = time.monotonic()
        started, verify = marks.get("install", end), marks.get("verify", end)
        report.seconds.update(upload=round(started - marks["start"], 3), install=round(verify - started, 3),
                              verify=round(end - verify, 3))
    stderr_last = (result.stderr.strip().splitlines() or ["no output"])[-1]
    if "verify" not in marks:
        if result.exit_status == UNPACK_FAILED and not events:
            raise RemoteError(f"{process.endpoint}: cannot unpack the installer into {request.remote_dir}: "
                              f"{stderr_last}")
        last = events[-1] if events else None
        failed = last is not None and last.kind is EventKind.ERROR
        message = (last.message if failed and last is not None else None) or \
            (result.stderr.strip().splitlines() or other or ["no output"])[-1]
        raise InstallError(f"remote installer failed (exit {result.exit_status}): {message}")
    if result.exit_status != 0 or not checked:
        raise VerifyError(f"verifying {report.disk} on the host failed (exit {result.exit_status}): {stderr_last}")
    try:
        verified = json.loads(checked[-1])
    except ValueError as exc:
        raise VerifyError(f"verifying {report.disk} on the host: unreadable report ({exc})") from None
    if verified["problems"]:
        raise VerifyError(f"{verified['disk']}: installed, but verification found: {'; '.join(verified['problems'])}")
    return verified


def start_host_process(session: Session, request: RescueRequest) -> RemoteProcess:
    """Start host_script.py on the host (`python3 -c BOOT`) and send it its modules. Raises ConnectionLost."""
    process = session.start(["python3", "-c", BOOT, request.remote_dir, request.disk])
    sources = [path.read_bytes() for path in SCRIPTS]
    process.send(b"".join(b"%d\n" % len(source) + source for source in sources), background=True)
    return process


def rescue_install(session: Session, request: RescueRequest, *, on_event: Callable[[ProgressEvent], None],
                   confirm: Callable[[str], bool] | None = None) -> RescueReport:
    """Install to the rescue host behind `session` (connected). Returns a RescueReport.

    Raises DiskError (no/busy disk), InstallError (installer failed), VerifyError, RemoteError,
    PartialError (link dropped mid-install: the disk is partially written, re-run to finish).
    """
    check_request(request)
    host = str(session.target.endpoint)
    report = RescueReport(host=host, disk=request.disk)
    with contextlib.ExitStack() as cleanup:
        with _timed(report, "inspect"):
            process = start_host_process(session, request)
            cleanup.callback(process.close)
            # Built while the host process starts, sent while it inspects: it keeps the files in memory
            # until the install request.
            with tempfile.TemporaryDirectory(prefix="provisioner-rescue-") as tmp:
                files = payload_files(request, request.zipapp or build_zipapp(Path(tmp) / "installer.pyz"))
            header = _request_line(op="payload", files=[[name, len(data)] for _role, name, data in files])
            process.send(b"".join([header, *(data for _role, _name, data in files)]), background=True)
            facts, resolved = read_facts(process, host)
            if facts.orphan_stopped:
                log.warning("%s: stopped installer pid %s left running by a dropped session", host,
                            facts.orphan_stopped)
            if not facts.is_root:
                raise RemoteError(f"{host}: not logged in as root; the installer needs root (log in as root@)")
            if not facts.python_ok:
                raise RemoteError(f"{host}: python3 is {'.'.join(map(str, facts.python))}, the installer needs >= 3.9")
            if request.disk.startswith("/dev/disk/") and resolved is None:
                raise DiskError(f"{request.disk}: no such device on the rescue host")
            wanted = resolved if request.disk.startswith("/dev/disk/") else request.disk
            disk, report.auto_chosen = select_disk(facts, request, wanted)
            disk, report.stopped = release_disk(process, host, facts, disk, request)
            report.disk, report.disk_size = disk.path, disk.size
            previous = facts.states.get(disk.path, {})
            if previous.get("status") == "installing":
                report.previous = f"an install to {disk.path} started {previous.get('time')} was interrupted"
                log.warning("%s: %s (disk partially written); installing again", host, report.previous)
        if confirm is not None and not confirm(
                f"Erase {disk.path} ({format_size(disk.size)}) on {facts.hostname} ({host}) and install?"):
            process.send(_request_line(op="abort"), eof=True)
            raise ProvisionerError(f"aborted: nothing was written to {disk.path}")
        uploaded = {role: f"{request.remote_dir}/{name}" for role, name, _data in files}
        state = state_path(request, disk.path)
        try:
            with contextlib.ExitStack() as stack:
                source_args: list[str] = []
                if request.image is not None and request.push:  # check_request: --push needs -f
                    # Imported here: its HTTP server (http.server, ssl) is ~10 ms of a pull's start.
                    from provisioner.remote.push import PushServer

                    push = stack.enter_context(PushServer(session.transport, request.image))
                    source_args = push.installer_args()
                install = _request_line(
                    op="install", disk=disk.path, state=state.rsplit("/", 1)[-1],
                    installing=state_record(disk.path, "installing", mode="push" if request.push else "pull").decode(),
                    argv=installer_argv(request, disk.path, uploaded, source_args),
                    expect={"files": expected_files(request), "state": state,
                            "installed": state_record(disk.path, "installed").decode()},
                    reboot=list(request.reboot_command) if request.reboot else None)
                report.verify = install_and_verify(process, request, install, on_event, report)
        except ConnectionLost as exc:
            raise PartialError(
                f"{host}: connection lost during the install ({exc}); {disk.path} is partially written; "
                f"re-run the same command to finish") from None
        except KeyboardInterrupt:
            # Ctrl-C: stop the remote install too; without a pty it would go on writing the disk.
            with contextlib.suppress(RemoteError):
                session.run(["sh", "-c", 'kill "$(cat "$1")" 2>/dev/null', "sh",
                             f"{request.remote_dir}/installer.pid"], check=False, timeout=30)
            raise PartialError(f"{host}: interrupted; the remote installer was stopped; {disk.path} is "
                               f"partially written; re-run the same command to finish") from None
    # The host process started the reboot (detached, after a second) once the check passed.
    report.rebooted = request.reboot
    return report


def inspect_host(session: Session, request: RescueRequest) -> tuple[HostFacts, str]:
    """`--inspect`: the facts and their text report (nothing is changed on the host)."""
    facts = inspect.gather(session)
    return facts, inspect.format_report(facts, request.min_size, request.auto_types)
