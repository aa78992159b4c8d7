"""fleetctl's SSH paths, on the project's paramiko session (provisioner.remote.session).

- `run_on_machine`: what `status` and `journal` run (scheduler/unitlogs.py) goes to the unit's machine:
  locally when it is this one (fleet compared /etc/machine-id), else over SSH to its public IP, through
  the `--tunnel` host when one is given (a ProxyJump hop);
- `EtcdTunnel`: `--tunnel` for etcd: a local port per etcd endpoint, each connection carried to the
  endpoint through the tunnel host (SSH direct-tcpip), so fleetctl's etcd client needs no change;
- `run_command` / `interactive_shell`: `fleetctl ssh` with a command, or a shell (a pty, the terminal
  in raw mode).
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import socket
import subprocess
import sys
import threading
import urllib.parse
from dataclasses import dataclass

from provisioner.errors import RemoteError
from provisioner.remote.hostkeys import HostKeyPolicy
from provisioner.remote.paramiko_lib import paramiko
from provisioner.remote.session import Auth, Session
from provisioner.remote.target import Endpoint, Target, parse_target
from provisioner.scheduler.model import Machine
from provisioner.scheduler.unitlogs import local_machine_id

DEFAULT_KNOWN_HOSTS = "~/.fleetctl/known_hosts"


@dataclass(frozen=True)
class SshOptions:
    """fleetctl's SSH flags."""

    user: str = "core"
    port: int = 22
    tunnel: str = ""
    timeout: float = 10.0
    strict_host_key_checking: bool = True
    known_hosts_file: str = DEFAULT_KNOWN_HOSTS
    forward_agent: bool = False

    def policy(self) -> HostKeyPolicy:
        if not self.strict_host_key_checking:
            # fleet's --strict-host-key-checking=false: any key, nothing recorded.
            return HostKeyPolicy(known_hosts=os.devnull, accept_new=True)
        return HostKeyPolicy(known_hosts=self.known_hosts_file)

    def endpoint(self, address: str, default_port: int | None = None) -> Endpoint:
        """`[user@]host[:port]`; without a port, `default_port` (else --ssh-port)."""
        user, host, given_port = parse_target(address)
        return Endpoint(alias=host, hostname=host, port=given_port or default_port or self.port, user=user or self.user,
                        known_hosts=os.path.expanduser(self.known_hosts_file) if self.strict_host_key_checking
                        else os.devnull)

    def target(self, address: str) -> Target:
        jumps = (self.endpoint(self.tunnel, 22),) if self.tunnel else ()
        return Target(endpoint=self.endpoint(address), jumps=jumps)

    def session(self, address: str) -> Session:
        return Session(self.target(address), self.policy(), Auth(allow_prompt=sys.stdin.isatty()),
                       timeout=self.timeout).connect()


def run_on_machine(machine: Machine, argv: list[str], options: SshOptions) -> int:
    """Run argv on `machine` with its output on ours; returns its exit status. Raises RemoteError."""
    if machine.id == local_machine_id():
        try:
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, errors="replace")
        except FileNotFoundError as exc:
            raise RemoteError(f"cannot run {argv[0]} locally: {exc.strerror}") from None
        assert process.stdout is not None
        for line in process.stdout:  # line by line: `journal -f` shows each line as it comes
            print(line, end="", flush=True)
        return process.wait()
    if not machine.public_ip:
        raise RemoteError(f"machine {machine.id} publishes no IP address to connect to")
    with options.session(machine.public_ip) as session:
        result = session.stream(shlex.join(argv), on_line=lambda line: print(line, flush=True))
        if result.stderr:
            sys.stderr.write(result.stderr)
        return result.exit_status


def run_command(address: str, command: str, options: SshOptions) -> int:
    """`fleetctl ssh MACHINE command...`: run a shell command line there; returns its exit status."""
    with options.session(address) as session:
        channel = session.transport.open_session(timeout=options.timeout)
        if options.forward_agent:
            paramiko.agent.AgentRequestHandler(channel)
        channel.exec_command(command)
        return _pump(channel)


def interactive_shell(address: str, options: SshOptions) -> int:
    """`fleetctl ssh MACHINE`: a login shell with a pty, the local terminal in raw mode."""
    import termios
    import tty

    with options.session(address) as session:
        channel = session.transport.open_session(timeout=options.timeout)
        if options.forward_agent:
            paramiko.agent.AgentRequestHandler(channel)
        size = os.get_terminal_size() if sys.stdin.isatty() else os.terminal_size((80, 24))
        channel.get_pty(term=os.environ.get("TERM", "vt100"), width=size.columns, height=size.lines)
        channel.invoke_shell()
        saved = termios.tcgetattr(sys.stdin) if sys.stdin.isatty() else None
        try:
            if saved is not None:
                tty.setraw(sys.stdin.fileno())
            return _pump(channel, interactive=True)
        finally:
            if saved is not None:
                termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)


def _pump(channel: paramiko.Channel, interactive: bool = False) -> int:
    """Copy the channel's output to ours (and, interactive, our stdin to it) until it closes."""
    sources: list = [channel, sys.stdin] if interactive else [channel]
    while True:
        readable, _, _ = select.select(sources, [], [], 1.0)
        if channel in readable:
            if channel.recv_ready():
                _emit(sys.stdout, channel.recv(32768))
            if channel.recv_stderr_ready():
                _emit(sys.stderr, channel.recv_stderr(32768))
            if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                break
        if interactive and sys.stdin in readable:
            data = os.read(sys.stdin.fileno(), 1024)
            if not data:
                channel.shutdown_write()
                sources.remove(sys.stdin)
            else:
                channel.sendall(data)
        if channel.closed:
            break
    return channel.recv_exit_status()


def _emit(stream, data: bytes) -> None:
    """Bytes to a text stream (its binary buffer when it has one: a pty session sends raw bytes)."""
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        buffer.write(data)
    else:
        stream.write(data.decode("utf-8", "replace"))
    stream.flush()


class EtcdTunnel:
    """Forward each etcd endpoint through the SSH tunnel host; `endpoints` are the local replacements."""

    def __init__(self, endpoints: list[str], options: SshOptions):
        self.session = Session(Target(endpoint=options.endpoint(options.tunnel, 22)), options.policy(),
                               Auth(allow_prompt=sys.stdin.isatty()), timeout=options.timeout).connect()
        self.endpoints: list[str] = []
        self._listeners: list[socket.socket] = []
        self._closed = threading.Event()
        for endpoint in endpoints:
            parsed = urllib.parse.urlsplit(endpoint)
            destination = (parsed.hostname or "127.0.0.1", parsed.port or 2379)
            listener = socket.create_server(("127.0.0.1", 0))
            self._listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener, destination), daemon=True).start()
            self.endpoints.append(f"{parsed.scheme}://127.0.0.1:{listener.getsockname()[1]}")

    def _accept(self, listener: socket.socket, destination: tuple[str, int]) -> None:
        while not self._closed.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                channel = self.session.transport.open_channel("direct-tcpip", destination, ("127.0.0.1", 0))
            except (paramiko.SSHException, OSError, RemoteError):
                client.close()  # the etcd client sees a dropped connection and tries its next endpoint
                continue
            for source, sink in ((client, channel), (channel, client)):
                threading.Thread(target=_copy, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        for listener in self._listeners:
            listener.close()
        self.session.close()


def _copy(source, sink) -> None:
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    for end in (sink, source):
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            end.close()

