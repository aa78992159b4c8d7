"""Fixtures for the installer's integration tests: a synthetic signed release (built once per
module), a local HTTP server on 127.0.0.1 that speaks Range and can cut or stall a download,
and a runner for the real CLI."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provisioner.disk import gpt
from tests.fixtures.coreos_image import build_image, build_release, make_signing_key

MiB = 1 << 20


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A signed release dir (zst, bz2, xz, gz, raw) of a small CoreOS-layout image."""
    work = tmp_path_factory.mktemp("release")
    image = build_image(work / "image.bin")
    return build_release(work / "base", image, formats=("zst", "zst1", "bz2", "xz", "gz"), keep_raw=True)


@pytest.fixture(scope="module")
def big_release(tmp_path_factory):
    """A release whose .zst is a few MiB (USR-A holds 6 MiB of semi-random data), so a download
    stalled half-way leaves the writer mid-image."""
    work = tmp_path_factory.mktemp("big-release")
    image = build_image(work / "image.bin", usr_fill=6 * MiB)
    return build_release(work / "base", image, formats=("zst",))


@pytest.fixture(scope="module")
def other_key(tmp_path_factory):
    return make_signing_key(tmp_path_factory.mktemp("other-key"), name="Somebody Else")


@dataclass
class ServerControl:
    """What the test server does to the next image download."""

    cut_after: int | None = None  # send this many body bytes, then drop the connection (once)
    gone_after_cut: bool = False   # and stop listening, as a killed server would (connection refused)
    stall_after: int | None = None  # send this many bytes, then wait for `release_stall`
    release_stall: threading.Event = field(default_factory=threading.Event)
    range_requests: list = field(default_factory=list)
    gets: list = field(default_factory=list)
    heads: list = field(default_factory=list)


def _handler(root: Path, control: ServerControl):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def _resolve(self):
            path = (root / self.path.lstrip("/").split("?", 1)[0]).resolve()
            if not str(path).startswith(str(root.resolve())) or not path.is_file():
                self.send_error(404)
                return None
            return path

        def do_HEAD(self):
            control.heads.append(self.path)
            path = self._resolve()
            if path:
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()

        def do_GET(self):
            path = self._resolve()
            if not path:
                return
            size = path.stat().st_size
            start = 0
            control.gets.append(self.path)
            header = self.headers.get("Range")
            if header:
                control.range_requests.append(header)
                start = int(header.split("=", 1)[1].split("-", 1)[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            with open(path, "rb") as handle:
                handle.seek(start)
                data = handle.read()
            big = path.suffix in (".zst", ".zst1", ".bz2", ".xz", ".gz", ".bin")  # the image, not its .sig/.DIGESTS
            if big and control.cut_after is not None and start == 0:
                cut, control.cut_after = control.cut_after, None
                self.wfile.write(data[:cut])
                self.wfile.flush()
                self.close_connection = True
                if control.gone_after_cut:   # new connections are refused from now on
                    self.server.shutdown()
                    self.server.server_close()
                return
            if big and control.stall_after is not None:
                stall, control.stall_after = control.stall_after, None
                self.wfile.write(data[:stall])
                self.wfile.flush()
                control.release_stall.wait(60)
                data = data[stall:]
            self.wfile.write(data)

    return Handler


def _serve(base: Path):
    control = ServerControl()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(base, control))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", control
    control.release_stall.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def http_release(release):
    """(base URL, control) serving the release dir on 127.0.0.1."""
    yield from _serve(release.base)


@pytest.fixture
def http_big_release(big_release):
    yield from _serve(big_release.base)


@pytest.fixture
def serve_dir():
    """serve_dir(path) -> (base URL, control): more servers on 127.0.0.1 (mirrors), stopped after the test."""
    running = []

    def start(base: Path):
        server = _serve(base)
        running.append(server)
        return next(server)

    yield start
    for server in running:
        next(server, None)


@pytest.fixture
def dead_url():
    """http://127.0.0.1:PORT of a server already dead: the port is bound (no other test takes it) but nothing
    listens, so a connection is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def installed_disk(loop_disk, release):
    """A loop disk that already holds a valid install (so failures must visibly wipe it)."""
    device = loop_disk(160 * MiB)
    proc = run_install("-d", device, "-f", str(release.files["zst"]), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert gpt.read_gpt(device, require_valid=False).valid
    return device


def install_argv(*args: str) -> list:
    return [sys.executable, "-m", "provisioner.cli.main", "install", *args]


def run_install(*args: str, timeout: float = 120, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run the real CLI: `provisioner install ARGS` (exit code, stdout, stderr); stdin is empty."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(install_argv(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL)
