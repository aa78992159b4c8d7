"""Fixtures for the boot-server integration tests: a real `provisioner serve` process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.system import free_port

DATA_DIR = Path(__file__).parent / "data"


@dataclass
class ServerProcess:
    process: subprocess.Popen
    url: str
    state_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait: the exit code (0 for a clean shutdown)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                pytest.fail(f"provisioner serve ignored SIGTERM for {timeout} s; log:\n{self.log()}")
        return self.process.returncode


def serve_argv(data_dir: Path, state_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "provisioner.cli.main", "-v", "serve", "--data-dir", str(data_dir),
            "--state-dir", str(state_dir), *args]


def wait_http(url: str, process: subprocess.Popen, log_path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"provisioner serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"provisioner serve did not answer {url}/healthz within {timeout} s:\n{log_path.read_text()}")


def start_server(tmp_path: Path, *args: str, data_dir: Path = DATA_DIR, netns: str | None = None,
                 url: str | None = None) -> ServerProcess:
    state_dir = tmp_path / "state"
    log_path = tmp_path / f"serve-{time.monotonic_ns()}.log"
    if netns is None and "--admin-addr" not in args:
        # The admin API's default port (8081) is one per host: tests running side by side take any free one.
        args = (*args, "--admin-addr", "127.0.0.1:0")
    argv = serve_argv(data_dir, state_dir, *args)
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(process, url or "", state_dir, log_path)
    return server


@contextlib.contextmanager
def loopback_server(tmp_path: Path, *args: str, data_dir: Path = DATA_DIR) -> Iterator[ServerProcess]:
    """`provisioner serve --dhcp off` with HTTP on a free 127.0.0.1 port (plus `args`), answering
    /healthz, until the block ends; a shutdown that is not clean fails the test."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, "--dhcp", "off", "--http-addr", f"127.0.0.1:{port}", *args,
                          data_dir=data_dir, url=url)
    try:
        wait_http(url, server.process, server.log_path)
        yield server
    finally:
        assert server.stop() == 0, server.log()


@pytest.fixture
def http_server(tmp_path):
    """The loopback server with TFTP on a free port and a copy of the test assets; yields ServerProcess."""
    tftp_port = free_port()
    assets = tmp_path / "assets"
    shutil.copytree(DATA_DIR / "assets", assets)
    with loopback_server(tmp_path, "--tftp-addr", f"127.0.0.1:{tftp_port}", "--assets-dir", str(assets)) as server:
        server.tftp_port = tftp_port  # type: ignore[attr-defined]
        server.assets = assets        # type: ignore[attr-defined]
        yield server


def wait_ready(server: ServerProcess, timeout: float = 30) -> None:
    """Wait for the 'serve: ready' log line (for servers inside a netns the host cannot reach)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "serve: ready" in server.log():
            return
        if server.process.poll() is not None:
            pytest.fail(f"provisioner serve exited with {server.process.returncode}:\n{server.log()}")
        time.sleep(0.2)
    pytest.fail(f"provisioner serve not ready within {timeout} s:\n{server.log()}")


@pytest.fixture
def lab_net(root_required):
    """A namespace with bridge br0 = 10.77.0.1/24 and no uplink (see provisioner.lab.netns)."""
    from provisioner.lab.netns import LabNetwork

    name = f"pxet{os.getpid() % 10000}"
    net = LabNetwork.create(name, "10.77.0.1/24")
    try:
        yield net
    finally:
        net.destroy()
