"""The SSH session against a real sshd: auth methods, host-key policies, ssh config, one-line errors."""

from __future__ import annotations

import json
import subprocess

from provisioner.remote.hostkeys import HostKeyPolicy
from provisioner.remote.session import Auth, Session
from provisioner.remote.target import load_ssh_config, resolve
from tests.integration.remote.conftest import provisioner_cli


def _session(sshd, text=None, identities=None, policy=None, config=None) -> Session:
    target = resolve(text or f"root@127.0.0.1:{sshd.port}", config=load_ssh_config(config or
                     str(sshd.workdir / "ssh_config")),
                     identities=(str(sshd.client_key),) if identities is None else identities)
    return Session(target, policy or HostKeyPolicy(known_hosts=str(sshd.known_hosts)), Auth(allow_prompt=False))


def test_key_auth_runs_commands_and_streams_stdin(sshd):
    with _session(sshd) as session:
        assert session.run(["id", "-un"]).stdout == "root\n"
        payload = bytes(range(256)) * 4096  # 1 MiB of binary through stdin, back through sha256sum
        result = session.run(["sha256sum"], input=payload)
        import hashlib
        assert result.stdout.split()[0] == hashlib.sha256(payload).hexdigest()
        failed = session.run(["sh", "-c", "echo oops >&2; exit 7"], check=False)
        assert (failed.exit_status, failed.stderr) == (7, "oops\n")
        session.upload(b"secret: 1\n", "/tmp/provisioner-rescue-test/cfg.yaml")
        mode = session.run(["stat", "-c", "%a", "/tmp/provisioner-rescue-test/cfg.yaml"]).stdout.strip()
        assert mode == "600"
        session.run(["rm", "-rf", "/tmp/provisioner-rescue-test"])


def test_wrong_pinned_host_key_is_refused_before_authentication(sshd):
    wrong = "SHA256:" + "A" * 43
    result = provisioner_cli(["rescue", *sshd.ssh_args(), "--host-key", wrong, "--inspect"])
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match the pinned" in lines[0], lines
    assert f"ssh-ed25519 {sshd.host_fingerprint}" in lines[0]
    # sshd never saw a login attempt: no key was offered, so no command can have run.
    log = sshd.log_text()
    assert "Accepted" not in log and "Failed" not in log and "Postponed" not in log


def test_pin_of_the_hosts_other_key_type_is_found(sshd):
    # paramiko negotiates ed25519 first; the console showed the ECDSA key: the pin must still match.
    result = provisioner_cli(["rescue", *sshd.ssh_args(), "--host-key", sshd.ecdsa_fingerprint, "--inspect"])
    assert result.returncode == 0, result.stderr
    assert "python3: 3." in result.stdout


def test_changed_known_host_key_is_refused(sshd, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = (tmp_path / "other_key.pub").read_text().split()[:2]
    sshd.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    result = provisioner_cli(["rescue", *sshd.ssh_args(), "--accept-new", "--inspect"])
    assert result.returncode == 1
    assert "CHANGED" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Accepted" not in sshd.log_text()


def test_pinned_key_and_accept_new_record(sshd):
    pinned = provisioner_cli(["rescue", *sshd.ssh_args(), "--host-key", sshd.host_fingerprint, "--inspect"])
    assert pinned.returncode == 0, pinned.stderr
    assert "python3: 3." in pinned.stdout
    sshd.known_hosts.write_text("")
    unknown = provisioner_cli(["rescue", *sshd.ssh_args(), "--inspect"])
    assert unknown.returncode == 1 and "unknown" in unknown.stderr and "--accept-new" in unknown.stderr
    first = provisioner_cli(["rescue", *sshd.ssh_args(), "--accept-new", "--inspect"])
    assert first.returncode == 0, first.stderr
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 " in sshd.known_hosts.read_text()
    # Recorded: the next connection passes on known_hosts alone.
    again = provisioner_cli(["rescue", *sshd.ssh_args(), "--inspect", "--json"])
    assert again.returncode == 0, again.stderr
    facts = json.loads(again.stdout)
    assert facts["is_root"] and facts["python"][:1] == [3] and facts["disks"]


def test_bad_key_is_one_line(sshd, tmp_path):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    args = sshd.ssh_args(key=False) + ["-i", str(stranger), "--inspect"]
    result = provisioner_cli(["rescue", *args])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"provisioner: error: root@127.0.0.1:{sshd.port}: authentication failed (tried: key {stranger}); "
        f"for a password set $PROVISIONER_SSH_PASSWORD"]


def test_password_from_environment(sshd, password_user):
    user, password = password_user
    args = ["rescue", *sshd.ssh_args(user=user, key=False), "--inspect"]
    bad = provisioner_cli(args, env={"PROVISIONER_SSH_PASSWORD": password + "x", "HOME": "/nonexistent"})
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"provisioner: error: {user}@127.0.0.1:{sshd.port}: authentication failed "
        f"(tried: password from $PROVISIONER_SSH_PASSWORD)"]
    good = provisioner_cli(args, env={"PROVISIONER_SSH_PASSWORD": password, "HOME": "/nonexistent"})
    assert good.returncode == 0, good.stderr
    assert "NOT logged in as root" in good.stdout  # it is the throwaway user's session
    assert f"Accepted password for {user}" in sshd.log_text()


def test_ssh_config_alias_port_and_proxyjump(sshd, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host jump\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n  IdentityFile {sshd.client_key}\n"
        f"Host rescue-1\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n  ProxyJump jump\n"
        f"  IdentityFile {sshd.client_key}\n"
    )
    with _session(sshd, "rescue-1", identities=(), config=str(config)) as session:
        assert len(session._transports) == 2  # the rescue host was reached through the jump host
        assert session.run(["echo", "via jump"]).stdout == "via jump\n"
    log = sshd.log_text()
    assert "direct-tcpip" in log or log.count("Accepted publickey") >= 2
