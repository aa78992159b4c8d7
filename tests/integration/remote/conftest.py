"""A real OpenSSH sshd on 127.0.0.1:<free port> standing in for a rescue system (this machine, as root).

The daemon gets generated ed25519 host and client keys, an AuthorizedKeysFile in the tmp dir, and a
config of its own (`sshd -D -e -f`), so nothing of the machine's ssh setup is used or changed. Root may
log in (rescue systems log in as root, and the installer needs root for loop devices). The password
path is tested against a throwaway user created and deleted by the `password_user` fixture.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures.system import free_port, need_root

SSHD = "/usr/sbin/sshd"
REPO = Path(__file__).resolve().parents[3]


def _keygen(path: Path, comment: str, kind: str = "ed25519") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)


def fingerprint_of(public_key_file: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(public_key_file)], check=True, capture_output=True,
                         text=True).stdout
    return out.split()[1]


@dataclass
class SshServer:
    port: int
    workdir: Path
    host_key: Path
    client_key: Path
    known_hosts: Path
    log: Path
    process: subprocess.Popen
    extra_env: dict = field(default_factory=dict)

    @property
    def host_fingerprint(self) -> str:
        return fingerprint_of(Path(f"{self.host_key}.pub"))

    @property
    def ecdsa_fingerprint(self) -> str:
        """The host's second key (rescue hosts have several types; a console may show any of them)."""
        return fingerprint_of(self.workdir / "ssh_host_ecdsa_key.pub")

    def target(self, user: str = "root") -> str:
        return f"{user}@127.0.0.1"

    def ssh_args(self, user: str = "root", key: bool = True) -> list[str]:
        """Connection options for `provisioner rescue` (host-key check against our own known_hosts)."""
        args = [self.target(user), "-p", str(self.port), "--known-hosts", str(self.known_hosts),
                "--ssh-config", str(self.workdir / "ssh_config")]
        if key:
            args += ["-i", str(self.client_key)]
        return args

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def session_pids(self) -> list[int]:
        """sshd processes below the listener: the ones serving connections."""
        children: dict[int, list[int]] = {}
        names: dict[int, str] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
            names[int(entry)] = comm
        found: list[int] = []
        todo = list(children.get(self.process.pid, []))
        while todo:
            pid = todo.pop()
            if names.get(pid) == "sshd":
                found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def kill_sessions(self) -> list[int]:
        """SIGKILL every sshd process serving a connection (the client sees the link drop)."""
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids


    def stop(self) -> None:
        self.kill_sessions()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class SshdStartError(RuntimeError):
    pass


def _wait_for_banner(port: int, process: subprocess.Popen, log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SshdStartError(f"sshd exited with {process.returncode}: {log.read_text(errors='replace')[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-2.0"):
                    return
        except OSError:
            time.sleep(0.05)
    raise SshdStartError(f"sshd on 127.0.0.1:{port} did not answer within {timeout} s")


def start_sshd(workdir: Path, plain_root_shell: bool = False) -> SshServer:
    """Start sshd -D on 127.0.0.1:<free port> with keys and config under `workdir` (root only).

    `plain_root_shell` (bench/rescue.py): the daemon runs in a mount namespace of its own where root's
    ~/.bashrc is empty, as on a rescue system. Debian's bash reads ~/.bashrc for every command sshd runs,
    and a build machine's may set up tools (pyenv init: ~0.2 s per command, and a `python3` shim that
    costs another ~0.1 s per start), which would be measured as our cost. Nothing outside the daemon
    sees the difference. Raises SshdStartError when it does not come up.
    """
    if not os.path.exists(SSHD):
        raise SshdStartError(f"{SSHD} not found: install the Debian package openssh-server (make setup does)")
    workdir.mkdir(parents=True, exist_ok=True)
    host_key, client_key = workdir / "ssh_host_ed25519_key", workdir / "id_ed25519"
    _keygen(host_key, "rescue-host")
    _keygen(workdir / "ssh_host_ecdsa_key", "rescue-host", "ecdsa")
    _keygen(client_key, "operator")
    (workdir / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    port = free_port()
    known_hosts = workdir / "known_hosts"
    host_pub = Path(f"{host_key}.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (workdir / "ssh_config").write_text("# empty: tests never read the operator's ~/.ssh/config\n")
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nHostKey {workdir}/ssh_host_ecdsa_key\nPidFile {workdir}/sshd.pid\n"
        f"AuthorizedKeysFile {workdir}/authorized_keys\nPermitRootLogin yes\nUsePAM no\nStrictModes no\n"
        "PubkeyAuthentication yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n"
        "PermitEmptyPasswords no\nMaxStartups 20\nLogLevel VERBOSE\n"
        "Subsystem sftp internal-sftp\n"
    )
    # sshd refuses to start without its privilege-separation directory (Debian creates it at boot).
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = workdir / "sshd.log"
    argv = [SSHD, "-D", "-e", "-f", str(config)]
    bashrc = Path("/root/.bashrc")
    if plain_root_shell and bashrc.exists():
        (workdir / "bashrc").write_text("")
        # unshare and sh exec in place: the process stays the daemon itself (session_pids, stop).
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(workdir / "bashrc"), str(bashrc), *argv]
    with open(log, "wb") as log_handle:
        process = subprocess.Popen(argv, stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = SshServer(port, workdir, host_key, client_key, known_hosts, log, process)
    try:
        _wait_for_banner(port, process, log)
    except SshdStartError:
        server.stop()
        raise
    return server


@pytest.fixture
def sshd(tmp_path, monkeypatch) -> Iterator[SshServer]:
    """A running sshd on 127.0.0.1:<free port>; the client key is authorized for root."""
    need_root()
    # The operator's agent must not make a test pass that should fail.
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("PROVISIONER_SSH_PASSWORD", raising=False)
    try:
        server = start_sshd(tmp_path / "sshd")
    except SshdStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def password_user():
    """A throwaway local user with a random password (for the password path); deleted afterwards."""
    need_root()
    name = f"provrescue{os.getpid() % 100000}"
    password = secrets.token_urlsafe(12)
    subprocess.run(["userdel", "-r", name], capture_output=True)
    subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True)
        yield name, password
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def provisioner_cli(args: list[str], *, env: dict | None = None, timeout: float = 180,
                    stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run `provisioner ARGS` as an operator would (a separate process, one line on errors)."""
    full_env = dict(os.environ)
    full_env.pop("SSH_AUTH_SOCK", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "provisioner.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO, input=stdin)
