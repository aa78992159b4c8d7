"""SSH targets and ~/.ssh/config resolution."""

from __future__ import annotations

import subprocess
import sys

import pytest

from provisioner.errors import ConfigError, UsageError
from provisioner.remote.target import load_ssh_config, parse_target, resolve


@pytest.mark.parametrize("text, expected", [
    ("root@203.0.113.10", ("root", "203.0.113.10", None)),
    ("kimsufi-1", (None, "kimsufi-1", None)),
    ("host:2222", (None, "host", 2222)),
    ("admin@[2001:db8::1]:22", ("admin", "2001:db8::1", 22)),
    ("2001:db8::1", (None, "2001:db8::1", None)),
])
def test_parse_target(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["@host", "host:0", "host:http", "root@"])
def test_parse_target_rejects(text):
    with pytest.raises(UsageError):
        parse_target(text)


def test_resolve_uses_ssh_config_and_command_line_wins(tmp_path):
    config = tmp_path / "config"
    config.write_text("Host kimsufi-1\n  HostName 198.51.100.7\n  Port 2222\n  User admin\n"
                      "  IdentityFile ~/.ssh/kimsufi\n  ProxyJump bastion\n"
                      "Host bastion\n  HostName 192.0.2.1\n  User jump\n")
    target = resolve("kimsufi-1", config=load_ssh_config(str(config)))
    assert (target.endpoint.hostname, target.endpoint.port, target.endpoint.user) == ("198.51.100.7", 2222, "admin")
    assert target.endpoint.identity_files[0].endswith("/.ssh/kimsufi")
    assert [(j.hostname, j.port, j.user) for j in target.jumps] == [("192.0.2.1", 22, "jump")]
    override = resolve("root@kimsufi-1", config=load_ssh_config(str(config)), port=22, identities=("/k",))
    assert (override.endpoint.user, override.endpoint.port, override.endpoint.identity_files) == ("root", 22, ("/k",))
    plain = resolve("203.0.113.10", config=load_ssh_config(str(config)))
    assert (str(plain.endpoint), plain.jumps) == ("root@203.0.113.10", ())


def test_explicit_missing_ssh_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such ssh config"):
        load_ssh_config(str(tmp_path / "nope"))


def test_match_exec_in_ssh_config_still_runs(tmp_path):
    # paramiko is imported without invoke (paramiko_lib); a config with `Match exec` brings it back. In a
    # child process: invoke runs the command with the caller's stdin, which pytest replaces.
    config = tmp_path / "config"
    config.write_text('Match exec "test -d /"\n  Port 2200\nMatch exec "false"\n  User nobody\n')
    code = ("import sys; from provisioner.remote.target import load_ssh_config, resolve; "
            "e = resolve('rescue-1', config=load_ssh_config(sys.argv[1])).endpoint; print(e.port, e.user)")
    out = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert out.stdout.strip() == "2200 root", out.stderr[-300:]


def test_the_ssh_modules_do_not_import_invoke():
    code = ("import sys, provisioner.remote.session, provisioner.remote.target, provisioner.remote.push; "
            "print('invoke' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
