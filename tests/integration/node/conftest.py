"""Fixtures of the node-runtime integration tests: a node root tree, a network namespace that gives the
applier a known address, the CLI, and `systemd --user` machines (tests/fixtures/user_systemd.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.lab.netns import LabNetwork
from tests.fixtures.system import need_root
from tests.fixtures.user_systemd import user_systemd  # noqa: F401  (a systemd --user "machine" per test)
from tests.integration.pxe.conftest import http_server  # noqa: F401  (provisioner serve on 127.0.0.1)

REPO = Path(__file__).resolve().parents[3]
NODE_ADDRESS = "10.77.13.5"


def make_node_root(root: Path) -> Path:
    """A node's root tree: root, Debian's etcd user and core (uid 1000, in sudo) in passwd/group/shadow,
    Debian's login.defs."""
    need_root()
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                "etcd:x:105:111:etcd,,,:/var/lib/etcd/:/usr/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nsudo:x:27:\nusers:x:100:\netcd:x:111:\ndocker:x:999:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\netcd:!:19000::::::\n")
    (etc / "gshadow").write_text("root:*::\nsudo:*::\nusers:*::\netcd:!::\ndocker:!::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o640)
    shutil.copyfile("/etc/login.defs", etc / "login.defs")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    subprocess.run(["useradd", "--prefix", str(root), "--uid", "1000", "--user-group", "--create-home",
                    "--groups", "sudo", "--shell", "/bin/bash", "--password", "*", "core"], check=True)
    return root


@pytest.fixture
def node_root(tmp_path) -> Path:
    return make_node_root(tmp_path / "root")


@pytest.fixture
def address_netns():
    """A network namespace whose only non-loopback address is NODE_ADDRESS (what $private_ipv4 becomes)."""
    need_root()
    net = LabNetwork.create(f"nodeapply{os.getpid() % 10000}", f"{NODE_ADDRESS}/24")
    yield net
    net.destroy()


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, netns: LabNetwork | None = None, timeout: float = 120) -> CliResult:
    """`provisioner ARGS` from this checkout (inside `netns` when given)."""
    argv = [sys.executable, "-m", "provisioner.cli.main", *args]
    if netns is not None:
        argv = netns.argv(argv)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    return CliResult(done.returncode, done.stdout, done.stderr)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root (except the apply status) with its type, mode, owner, size and mtime."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = "/" + str(path.relative_to(root))
        if relative == "/run" or relative.startswith("/run/provisioner"):
            continue   # the apply status is written on every run
        info = path.lstat()
        found[relative] = (info.st_mode, info.st_uid, info.st_gid, info.st_size, info.st_mtime_ns,
                           os.readlink(path) if path.is_symlink() else None)
    return found
