"""Running Debian's docker-registry: its config, its argv, the readiness probe, and a short-lived
instance on loopback for the `provisioner registry` commands.

The config replaces Debian's /etc/docker/registry/config.yml, which is upstream's example with
`auth: htpasswd` pointing at a directory (Debian patch 0002): anonymous pulls would get a 401.
Ours: filesystem storage under the data dir, no auth, no proxy section (`proxy.remoteurl` would make
it a pull-through cache that refuses pushes), JSON logs at warn level (every error response, e.g. a
manifest a node asked for and the registry lacks, is one JSON line; see supervisor.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from provisioner.core.commands import require_tool, terminate
from provisioner.errors import NetworkError

log = logging.getLogger("provisioner.registry")

REGISTRY_TOOL = "docker-registry"
READY_TIMEOUT = 15.0


def storage_dir(data_dir: Path) -> Path:
    """Where a data dir keeps its images (the registry's filesystem driver root)."""
    return Path(data_dir) / "registry"


@dataclass(frozen=True)
class RegistrySettings:
    storage: Path
    host: str
    port: int

    @property
    def local_url(self) -> str:
        """The URL this machine reaches the registry at (loopback when it listens on every address)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"


def registry_config(settings: RegistrySettings, secret: str) -> str:
    """The registry's config.yml (pure). `secret` signs upload state; one instance per process."""
    config = {
        "version": 0.1,
        "log": {"level": "warn", "formatter": "json", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(Path(settings.storage).resolve())},
                    "delete": {"enabled": False}},
        "http": {"addr": f"{settings.host}:{settings.port}", "secret": secret},
    }
    return yaml.safe_dump(config, sort_keys=False)


def registry_argv(config_path: Path) -> list[str]:
    """docker-registry under `setpriv --pdeathsig TERM` (util-linux): the registry ends with the process
    that started it, even when that process is killed and cannot stop it."""
    return ["setpriv", "--pdeathsig", "TERM", REGISTRY_TOOL, "serve", str(config_path)]


def write_config(settings: RegistrySettings, directory: Path) -> Path:
    """Write config.yml (with a fresh secret) into `directory`; returns its path. Raises OSError."""
    directory.mkdir(parents=True, exist_ok=True)
    Path(settings.storage).mkdir(parents=True, exist_ok=True)
    path = directory / "config.yml"
    path.write_text(registry_config(settings, secrets.token_hex(16)))
    return path


def answers(url: str, timeout: float = 2.0) -> bool:
    """True when GET <url>/v2/ answers 200 with the Distribution API header."""
    try:
        with urllib.request.urlopen(f"{url}/v2/", timeout=timeout) as response:
            return response.status == 200 and "registry/2.0" in response.headers.get(
                "Docker-Distribution-Api-Version", "")
    except (OSError, urllib.error.URLError):
        return False


def last_log_line(path: Path) -> str:
    """The registry's last log message (its JSON `msg`, with `error` when given), for error lines."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    try:
        entry = json.loads(lines[-1])
    except ValueError:
        return lines[-1].strip()
    message = str(entry.get("msg", ""))
    return f"{message}: {entry['error']}" if entry.get("error") else message


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def temporary_registry(storage: Path) -> Iterator[str]:
    """A docker-registry on 127.0.0.1 over `storage` for one command; yields its URL, stops it after.

    Several instances may share a storage directory (the server's and this one): each upload has its
    own directory and tags are single link files. Raises NetworkError when it does not come up."""
    require_tool(REGISTRY_TOOL)
    with tempfile.TemporaryDirectory(prefix="provisioner-registry-") as tmp:
        settings = RegistrySettings(Path(storage), "127.0.0.1", free_loopback_port())
        config = write_config(settings, Path(tmp))
        log_path = Path(tmp) / "registry.log"
        with open(log_path, "ab") as log_handle:
            process = subprocess.Popen(registry_argv(config), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=log_handle)
        try:
            wait_ready(settings.local_url, process, log_path)
            log.info("registry: %s serving %s", settings.local_url, storage)
            yield settings.local_url
        finally:
            terminate(process)


def wait_ready(url: str, process: subprocess.Popen, log_path: Path, timeout: float = READY_TIMEOUT) -> None:
    """Wait until the registry answers /v2/; raises NetworkError with its own last log line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NetworkError(f"registry: docker-registry exited with {process.returncode} before answering "
                               f"{url}: {last_log_line(log_path) or 'no output'}")
        if answers(url, timeout=1.0):
            return
        time.sleep(0.05)
    raise NetworkError(f"registry: docker-registry did not answer {url}/v2/ within {timeout:.0f} s")


def node_registry_url(host: str, port: int, server_url: str) -> str:
    """The registry URL nodes use (pure): the listen address, or the server URL's host when the registry
    listens on every address (as the server URL tells nodes where the server is)."""
    if host in ("", "0.0.0.0"):
        host = urllib.parse.urlsplit(server_url).hostname or "127.0.0.1"
    return f"http://{host}:{port}"
