"""An SSH session to a rescue host (paramiko), and running commands over it.

Connection order, each step failing with one line:
1. TCP connect (through the ProxyJump chain: each hop's `direct-tcpip` channel is the next hop's socket);
2. key exchange, then the host-key policy (hostkeys.decide) *before* authentication, so a wrong host
   never sees our credentials and no command ever runs on it;
3. authentication: the key files (-i / IdentityFile / ~/.ssh/id_*), the agent, then a password from
   $PROVISIONER_SSH_PASSWORD or a prompt (never from the command line, where `ps` would show it).

Commands run through the remote login shell, so argv is quoted with shlex. No pty is requested: a pty
would mangle the binary image stream of `--push` and merge stderr into the JSON progress on stdout.

A dead link must not hang the operator for the TCP default of ~15 minutes: TCP keepalive and
TCP_USER_TIMEOUT bound how long we wait on an unanswered peer (Linux tcp(7)).
"""

from __future__ import annotations

import contextlib
import getpass
import io
import logging
import os
import shlex
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from provisioner.errors import RemoteError
from provisioner.remote.hostkeys import (
    HostKeyPolicy,
    decide,
    fingerprint,
    known_hosts_name,
    load_known_hosts,
    record_host_key,
    recorded_fingerprints,
)
from provisioner.remote.paramiko_lib import paramiko
from provisioner.remote.target import Endpoint, Target

log = logging.getLogger("provisioner.remote")

PASSWORD_ENV = "PROVISIONER_SSH_PASSWORD"
DEFAULT_KEY_FILES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
CHUNK = 256 * 1024

# Host-key algorithms paramiko may negotiate for each known_hosts key type (RSA keys sign with SHA-2).
_ALGORITHMS_OF_TYPE = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}
# What to try, in order, when a pinned fingerprint is not the one of the first negotiated key.
_PIN_RETRY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                    "rsa-sha2-512")


def _key_type_of(algorithm: str) -> str:
    return "ssh-rsa" if algorithm.startswith("rsa-sha2") else algorithm


class ConnectionLost(RemoteError):
    """The SSH connection dropped while a command was running (its outcome on the host is unknown)."""


@dataclass(frozen=True)
class Auth:
    """How to authenticate: explicit key files, the agent, and whether a password may be asked for."""

    use_agent: bool = True
    allow_prompt: bool = True


@dataclass
class Result:
    """A finished remote command."""

    command: str
    exit_status: int
    stdout: str
    stderr: str


def _tune_socket(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 4), ("TCP_USER_TIMEOUT", 60000)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _QuickAckSocket(socket.socket):
    """A TCP socket that ACKs at once what arrives after each of its sends (Linux TCP_QUICKACK, tcp(7)).

    Having just sent, the kernel delays its next ACK (40 ms) to carry it on an answer. After the
    authentication, OpenSSH sends a notice of its host keys that wants none, then holds the answer to our
    first channel open behind it (Nagle) until that ACK comes: every rescue command waited those 40 ms.
    The flag does not stick (the kernel drops back to delayed ACKs), hence once per send.
    """

    def send(self, data, flags: int = 0) -> int:
        sent = super().send(data, flags)
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return sent


class Session:
    """An authenticated SSH connection to `target` (use as a context manager, or call close())."""

    def __init__(self, target: Target, policy: HostKeyPolicy, auth: Auth = Auth(), timeout: float = 20.0):
        self.target = target
        self.policy = policy
        self.auth = auth
        self.timeout = timeout
        self._transports: list[paramiko.Transport] = []

    # -- connecting -------------------------------------------------------------------------------

    def connect(self) -> Session:
        """Open the chain of transports; raises RemoteError (one line) on any failure."""
        try:
            for hop in (*self.target.jumps, self.target.endpoint):
                transport = self._handshake(hop)
                self._transports.append(transport)
                self._authenticate(hop, transport)
        except BaseException:
            self.close()  # the jump hosts' transports too
            raise
        return self

    def _socket(self, hop: Endpoint) -> socket.socket | paramiko.Channel:
        """A TCP socket to the first hop, or a direct-tcpip channel through the last jump host."""
        if not self._transports:
            try:
                sock = socket.create_connection((hop.hostname, hop.port), timeout=self.timeout)
            except OSError as exc:
                raise RemoteError(f"{hop}: cannot connect: {exc.strerror or exc}") from None
            _tune_socket(sock)
            if not hasattr(socket, "TCP_QUICKACK"):
                return sock
            quick = _QuickAckSocket(fileno=sock.detach())
            quick.settimeout(self.timeout)
            return quick
        try:
            return self._transports[-1].open_channel(
                "direct-tcpip", (hop.hostname, hop.port), ("127.0.0.1", 0), timeout=self.timeout)
        except (paramiko.SSHException, OSError) as exc:
            raise RemoteError(f"{hop}: the jump host cannot reach it: {exc}") from None

    def _handshake(self, hop: Endpoint) -> paramiko.Transport:
        """Key exchange, then the host-key policy. With a pin that the negotiated key does not match,
        try the host's other key types (one connection each): the console may show the RSA key while
        we negotiated ed25519. Raises RemoteError."""
        policy = self.policy
        if hop is not self.target.endpoint or (hop.known_hosts and policy.known_hosts != hop.known_hosts):
            # Jump hosts are always checked against known_hosts; --host-key pins the rescue host only.
            policy = HostKeyPolicy(known_hosts=hop.known_hosts or policy.known_hosts,
                                   pin=policy.pin if hop is self.target.endpoint else None,
                                   accept_new=policy.accept_new)
        path = policy.known_hosts_path
        name = known_hosts_name(hop.hostname, hop.port)
        recorded = recorded_fingerprints(load_known_hosts(path), name)
        if recorded and policy.pin is None:
            # Ask for the key type we have on record, as ssh does, so a host with several keys is not
            # mistaken for a changed one.
            preferred = [a for t in recorded for a in _ALGORITHMS_OF_TYPE.get(t, (t,))]
        else:
            preferred = []
        transport, key = self._key_exchange(hop, preferred, only=False)
        verdict = decide(policy, name, key.get_name(), fingerprint(key.asbytes()), recorded)
        seen = {key.get_name(): fingerprint(key.asbytes())}
        while not verdict.accept and policy.pin is not None:
            if transport is not None:
                transport.close()
            others = [t for t in _PIN_RETRY_TYPES if _key_type_of(t) not in seen]
            if not others:
                break
            transport, key = self._key_exchange(hop, [others[0]], only=True)
            if key is None:  # the host has no key of that type
                seen[_key_type_of(others[0])] = ""
                continue
            seen[key.get_name()] = fingerprint(key.asbytes())
            verdict = decide(policy, name, key.get_name(), fingerprint(key.asbytes()), recorded)
        if not verdict.accept:
            if transport is not None:
                transport.close()
            if policy.pin is not None:
                offered = ", ".join(f"{t} {f}" for t, f in seen.items() if f)
                raise RemoteError(f"host key of {name} ({offered}) does not match the pinned {policy.pin}: refusing "
                                  f"to connect (a wrong or intercepted host; check the provider's console)")
            raise RemoteError(verdict.reason)
        log.info("%s: %s", hop, verdict.reason)
        if verdict.record:
            record_host_key(path, name, key)
        return transport

    def _key_exchange(self, hop: Endpoint, key_types: list[str], only: bool):
        """Connect and run the key exchange preferring (or, `only`, restricted to) `key_types`.

        Returns (transport, server key); with `only`, (None, None) when the host has no such key.
        Raises RemoteError.
        """
        transport = paramiko.Transport(self._socket(hop))
        transport.set_keepalive(15)
        options = transport.get_security_options()
        usable = [a for a in key_types if a in options.key_types]
        if only:
            options.key_types = usable
        elif usable:
            options.key_types = usable + [a for a in options.key_types if a not in usable]
        try:
            transport.start_client(timeout=self.timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport.close()
            if only and "host key" in str(exc).lower():
                return None, None
            raise RemoteError(f"{hop}: SSH handshake failed: {exc or type(exc).__name__}") from None
        return transport, transport.get_remote_server_key()

    def _keys(self, hop: Endpoint) -> Iterable[tuple[str, paramiko.PKey]]:
        explicit = bool(hop.identity_files)
        for path in hop.identity_files or DEFAULT_KEY_FILES:
            full = os.path.expanduser(path)
            if not os.path.exists(full):
                if explicit:
                    raise RemoteError(f"{hop}: identity file {full} does not exist")
                continue
            try:
                yield f"key {full}", paramiko.PKey.from_path(full)
            except paramiko.PasswordRequiredException:
                log.warning("%s is encrypted; load it into ssh-agent (ssh-add) to use it", full)
            except (paramiko.SSHException, OSError, ValueError) as exc:
                if explicit:
                    raise RemoteError(f"{hop}: cannot load identity file {full}: {exc}") from None
        if self.auth.use_agent and os.environ.get("SSH_AUTH_SOCK"):
            try:
                agent_keys = paramiko.Agent().get_keys()
            except paramiko.SSHException:
                agent_keys = ()
            for number, key in enumerate(agent_keys):
                yield f"agent key {number + 1}", key

    def _authenticate(self, hop: Endpoint, transport: paramiko.Transport) -> None:
        tried: list[str] = []
        try:
            for label, key in self._keys(hop):
                tried.append(label)
                try:
                    transport.auth_publickey(hop.user, key)
                except paramiko.AuthenticationException:
                    continue
                if transport.is_authenticated():
                    log.info("%s: authenticated with %s", hop, label)
                    return
            password, source = os.environ.get(PASSWORD_ENV), f"${PASSWORD_ENV}"
            if password is None and self.auth.allow_prompt and sys.stdin.isatty():
                password, source = getpass.getpass(f"{hop} password: "), "the prompt"
            if password is not None:
                tried.append(f"password from {source}")
                with contextlib.suppress(paramiko.AuthenticationException):
                    transport.auth_password(hop.user, password)
                if transport.is_authenticated():
                    log.info("%s: authenticated with a password", hop)
                    return
        except paramiko.AuthenticationException:
            pass  # e.g. the server allows no such method: report what we tried, below
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise RemoteError(f"{hop}: connection failed during authentication: {exc}") from None
        detail = ", ".join(tried) if tried else "no key found (give -i FILE) and no password"
        hint = "" if any(t.startswith("password") for t in tried) else f"; for a password set ${PASSWORD_ENV}"
        raise RemoteError(f"{hop}: authentication failed (tried: {detail}){hint}")

    def close(self) -> None:
        for transport in reversed(self._transports):
            transport.close()
        self._transports.clear()

    def __enter__(self) -> Session:
        return self.connect() if not self._transports else self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running commands -------------------------------------------------------------------------

    @property
    def transport(self) -> paramiko.Transport:
        if not self._transports or not self._transports[-1].is_active():
            raise ConnectionLost(f"{self.target.endpoint}: not connected")
        return self._transports[-1]

    def run(self, argv: list[str] | str, *, input: bytes | str | None = None, check: bool = True,
            timeout: float | None = 120.0) -> Result:
        """Run a command (argv list, quoted for the remote shell; or a ready shell string) and collect output.

        Raises RemoteError on a non-zero exit (with check), ConnectionLost if the link drops.
        """
        data = input.encode() if isinstance(input, str) else input
        lines: list[str] = []
        result = self.stream(argv, stdin=data, on_line=lines.append, timeout=timeout)
        result.stdout = "".join(line + "\n" for line in lines)
        if check and result.exit_status != 0:
            raise RemoteError(failure_line(self.target.endpoint, result))
        return result

    def start(self, argv: list[str] | str) -> RemoteProcess:
        """Start a command to talk to: send on its stdin and read its stdout line by line as it answers.

        Raises ConnectionLost if the link is down or drops while starting it.
        """
        command = argv if isinstance(argv, str) else shlex.join(argv)
        log.debug("ssh %s: %s", self.target.endpoint, command)
        try:
            channel = self.transport.open_session(timeout=self.timeout)
            channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectionLost(f"{self.target.endpoint}: lost the connection starting {command!r}: {exc}") from None
        return RemoteProcess(str(self.target.endpoint), channel, command)

    def stream(self, argv: list[str] | str, *, stdin: bytes | BinaryIO | None = None,
               on_line: Callable[[str], None] | None = None, on_sent: Callable[[int], None] | None = None,
               timeout: float | None = None) -> Result:
        """Run a command, feeding `stdin` (bytes or a binary file, streamed in chunks) and calling
        `on_line` for each stdout line as it arrives. stderr is collected in the Result.

        Raises ConnectionLost if the link drops before the command's exit status arrives, RemoteError
        on a timeout.
        """
        process = self.start(argv)
        if stdin is not None:
            process.send(stdin, background=True, eof=True, on_sent=on_sent)
        else:
            process.close_stdin()
        try:
            for line in process.lines(timeout):
                if on_line is not None:
                    on_line(line)
        except BaseException:
            process.close()
            raise
        return process.wait()

    def upload(self, data: bytes | BinaryIO, remote_path: str, mode: int = 0o600) -> None:
        """Write `data` to `remote_path` atomically (temp file + rename), created with `mode`.

        Uses `cat` over an exec channel rather than SFTP: rescue images do not always ship sftp-server.
        Raises RemoteError when the remote side cannot write it.
        """
        script = ('umask 077 && mkdir -p "$(dirname "$1")" && cat > "$1.part" && chmod "$2" "$1.part" '
                  '&& mv -f "$1.part" "$1"')
        result = self.stream(["sh", "-c", script, "sh", remote_path, f"{mode:o}"], stdin=data, timeout=600)
        if result.exit_status != 0:
            raise RemoteError(failure_line(self.target.endpoint, result, f"cannot write {remote_path}"))


class RemoteProcess:
    """A command running on the host (Session.start): its stdin, its stdout by lines, its exit status.

    stderr is collected by a thread from the start, so a chatty command never blocks on it.
    """

    def __init__(self, endpoint: str, channel: paramiko.Channel, command: str):
        self.endpoint = endpoint
        self.channel = channel
        self.command = command
        self._pending = bytearray()
        self._lines: list[bytes] = []
        self._eof = False
        self._stderr: list[bytes] = []
        self._errors: list[BaseException] = []
        self._feeder: threading.Thread | None = None
        self._stderr_thread = threading.Thread(target=_drain_stderr, args=(channel, self._stderr), daemon=True)
        self._stderr_thread.start()

    def send(self, data: bytes | BinaryIO, *, background: bool = False, eof: bool = False,
             on_sent: Callable[[int], None] | None = None) -> None:
        """Write to the command's stdin, in order after anything sent before (then EOF with `eof`);
        `background` returns at once (a large or slow source while we read the answers). A command that
        stopped reading is not an error here: its exit status (wait) says what happened."""
        if self._feeder is not None:
            self._feeder.join()
            self._feeder = None
        if background:
            self._feeder = threading.Thread(target=_feed, args=(self.channel, data, on_sent, self._errors, eof),
                                            daemon=True)
            self._feeder.start()
        else:
            _feed(self.channel, data, on_sent, self._errors, eof)

    def close_stdin(self) -> None:
        """Send EOF once everything sent so far has gone out."""
        if self._feeder is not None:
            self._feeder.join()
            self._feeder = None
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.channel.shutdown_write()

    def readline(self, timeout: float | None = None) -> str | None:
        """The next stdout line (without its newline), or None at the end of the output.

        Raises RemoteError when no line comes within `timeout` seconds.
        """
        self.channel.settimeout(timeout)
        while not self._lines:
            if self._eof:
                if not self._pending:
                    return None
                last, self._pending = bytes(self._pending), bytearray()
                return last.decode("utf-8", "replace")
            try:
                chunk = self.channel.recv(CHUNK)
            except TimeoutError:
                self.channel.close()
                raise RemoteError(f"{self.endpoint}: {self.command!r} did not finish within {timeout:.0f} s") from None
            if not chunk:
                self._eof = True
                continue
            self._pending += chunk
            if b"\n" not in chunk:  # a long line: keep collecting (no re-split, no quadratic cost)
                continue
            *complete, rest = bytes(self._pending).split(b"\n")
            self._pending = bytearray(rest)
            self._lines.extend(complete)
        return self._lines.pop(0).decode("utf-8", "replace")

    def lines(self, timeout: float | None = None) -> Iterator[str]:
        """Every further stdout line up to the end of the output (see readline)."""
        while (line := self.readline(timeout)) is not None:
            yield line

    def wait(self) -> Result:
        """The exit status and stderr, once the command has ended.

        Raises ConnectionLost when the link dropped before the exit status came.
        """
        # paramiko sets the exit status to -1 when the channel closes without one (the link dropped).
        status = self.channel.recv_exit_status()
        for thread in (self._feeder, self._stderr_thread):
            # The feeder may sit on a slow local source; once the command has ended it no longer matters.
            if thread is not None:
                thread.join(timeout=5)
        self.channel.close()
        for error in self._errors:
            log.debug("ssh %s: stdin of %r not fully sent: %s", self.endpoint, self.command, error)
        if status == -1:
            raise ConnectionLost(f"{self.endpoint}: connection lost while running {self.command!r}")
        return Result(self.command, status, "", self.stderr)

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    def close(self) -> None:
        """Close the channel: the command sees EOF on stdin (and SIGPIPE when it writes)."""
        self.channel.close()


def _drain_stderr(channel: paramiko.Channel, chunks: list[bytes]) -> None:
    while True:
        try:
            chunk = channel.recv_stderr(CHUNK)
        except (TimeoutError, OSError, EOFError):
            return
        if not chunk:
            return
        chunks.append(chunk)


def _feed(channel: paramiko.Channel, source: bytes | BinaryIO, on_sent: Callable[[int], None] | None,
          errors: list[BaseException], eof: bool) -> None:
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        sent = 0
        while chunk := stream.read(CHUNK):
            channel.sendall(chunk)
            sent += len(chunk)
            if on_sent:
                on_sent(sent)
        if eof:
            channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        # The remote command stopped reading (it failed, or the link dropped): its exit status says which.
        errors.append(exc)


def failure_line(endpoint: Endpoint | str, result: Result, what: str = "") -> str:
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    head = what or f"{result.command!r} failed"
    return f"{endpoint}: {head} (exit {result.exit_status})" + (f": {last}" if last else "")
