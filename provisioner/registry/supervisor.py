"""The registry as a child of `provisioner serve`: started with the server, restarted when it dies,
shown in /healthz and /metrics, stopped on exit.

The registry listens on --registry-addr itself: image bytes never pass through the server, so
serving them costs the server nothing. Its log (JSON lines, warn level) goes to
`<state dir>/registry/registry.log`; the supervisor reads the new lines every half second and turns
each manifest miss (a node asked for an image the registry does not hold) into one server log line
naming the registry and the image. That line is the only place the miss can be named: offline,
dockerd reports a mirror's "manifest unknown" by falling back to Docker Hub and printing Hub's
lookup error (docs/containers.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from provisioner.errors import NetworkError
from provisioner.registry.process import (
    READY_TIMEOUT,
    RegistrySettings,
    answers,
    last_log_line,
    registry_argv,
    write_config,
)

log = logging.getLogger("provisioner.registry")

TAIL_INTERVAL = 0.5
STABLE_AFTER = 30.0          # a registry that ran this long before dying is restarted without delay growth
LOG_ROTATE_BYTES = 8 << 20
MISS_CODES = ("manifest unknown", "name unknown")
MISS_REPEAT = 60.0           # one log line per node and image a minute: a docker pull asks two or three times


class RegistryState(Enum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPED = "stopped"


@dataclass(frozen=True)
class RegistryMiss:
    image: str      # repository:tag or repository@digest, as the node asked for it
    client: str     # the node's address


def parse_miss(line: str) -> RegistryMiss | None:
    """A manifest the registry did not have, from one of its JSON log lines (pure); None otherwise."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("err.code") not in MISS_CODES:
        return None
    name, reference = entry.get("vars.name"), entry.get("vars.reference")
    if not isinstance(name, str) or not isinstance(reference, str) or "/manifests/" not in str(
            entry.get("http.request.uri", "")):
        return None
    separator = "@" if reference.startswith("sha256:") else ":"
    client = str(entry.get("http.request.remoteaddr", "?")).rsplit(":", 1)[0].strip("[]")
    return RegistryMiss(f"{name}{separator}{reference}", client)


def restart_delay(failures: int) -> float:
    """Seconds to wait before the next start after `failures` quick deaths in a row (pure)."""
    return min(30.0, 0.5 * (2 ** max(0, failures - 1))) if failures else 0.0


class RegistrySupervisor:
    """One docker-registry child: `start()` (raises NetworkError when it does not come up), `stop()`,
    `health_line()` / `healthy` for /healthz, `metrics_text()` for /metrics."""

    def __init__(self, settings: RegistrySettings, public_url: str, run_dir: Path):
        self.settings = settings
        self.public_url = public_url
        self.run_dir = Path(run_dir)
        self.log_path = self.run_dir / "registry.log"
        self.state = RegistryState.STOPPED
        self.restarts = 0
        self.misses = 0
        self.last_exit: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task] = []
        self._log_offset = 0
        self._partial = b""
        self._miss_logged: dict[RegistryMiss, float] = {}

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def healthy(self) -> bool:
        return self.state is RegistryState.RUNNING

    def health_line(self) -> str:
        text = f"registry: {self.state.value} {self.public_url} (restarts {self.restarts}"
        if self.pid is not None and self.state is RegistryState.RUNNING:
            text += f", pid {self.pid}"
        if self.last_exit is not None:
            text += f", last exit {self.last_exit}"
        return text + ")"

    def metrics_text(self) -> str:
        return (
            "# TYPE provisioner_registry_up gauge\n"
            f"provisioner_registry_up {int(self.healthy)}\n"
            "# TYPE provisioner_registry_restarts_total counter\n"
            f"provisioner_registry_restarts_total {self.restarts}\n"
            "# TYPE provisioner_registry_misses_total counter\n"
            f"provisioner_registry_misses_total {self.misses}\n"
        )

    async def start(self) -> None:
        """Write the config, start the registry and wait until it answers; raises NetworkError."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists() and self.log_path.stat().st_size > LOG_ROTATE_BYTES:
            self.log_path.replace(self.log_path.with_suffix(".log.1"))
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            write_config(self.settings, self.run_dir)
        except OSError as exc:
            raise NetworkError(f"registry: cannot write its config or storage: {exc}") from None
        self.state = RegistryState.STARTING
        await self._spawn_until_ready()
        self.state = RegistryState.RUNNING
        log.info("registry: %s (listening on %s:%d, storage %s)", self.public_url, self.settings.host,
                 self.settings.port, self.settings.storage)
        self._tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._tail())]

    async def _spawn_until_ready(self) -> None:
        config = self.run_dir / "config.yml"
        with open(self.log_path, "ab") as log_handle:
            self._process = await asyncio.create_subprocess_exec(
                *registry_argv(config), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=log_handle)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.returncode is not None:
                raise NetworkError(f"registry: docker-registry exited with {self._process.returncode} before "
                                   f"answering on {self.settings.host}:{self.settings.port}: "
                                   f"{last_log_line(self.log_path) or 'no output'}")
            if await asyncio.to_thread(answers, self.settings.local_url, 1.0):
                return
            await asyncio.sleep(0.05)
        self._process.kill()
        await self._process.wait()
        raise NetworkError(f"registry: docker-registry did not answer {self.settings.local_url}/v2/ within "
                           f"{READY_TIMEOUT:.0f} s")

    async def _watch(self) -> None:
        """Restart the registry whenever it exits, with a growing delay while it keeps dying."""
        failures = 0
        while True:
            assert self._process is not None
            started = time.monotonic()
            self.last_exit = await self._process.wait()
            self.state = RegistryState.RESTARTING
            failures = 1 if time.monotonic() - started >= STABLE_AFTER else failures + 1
            delay = restart_delay(failures)
            log.error("registry: docker-registry exited with %s (%s); restarting in %.1f s", self.last_exit,
                      last_log_line(self.log_path) or "no output", delay)
            await asyncio.sleep(delay)
            self.restarts += 1
            try:
                await self._spawn_until_ready()
            except NetworkError as exc:
                log.error("%s", exc)
                continue
            self.state = RegistryState.RUNNING
            log.info("registry: restarted (pid %d)", self._process.pid)

    async def _tail(self) -> None:
        while True:
            await asyncio.sleep(TAIL_INTERVAL)
            self.read_new_log_lines()

    def read_new_log_lines(self) -> None:
        """Report the misses among the registry's log lines written since the last call."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._log_offset)
                data = handle.read()
        except OSError:
            return
        self._log_offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            miss = parse_miss(line.decode("utf-8", "replace"))
            if miss is None:
                continue
            self.misses += 1
            now = time.monotonic()
            if now - self._miss_logged.get(miss, -MISS_REPEAT) >= MISS_REPEAT:
                if len(self._miss_logged) > 1024:
                    self._miss_logged.clear()
                self._miss_logged[miss] = now
                log.warning("registry %s has no image %s (asked by %s): add it with `provisioner registry "
                            "import` or `provisioner registry build`", self.public_url, miss.image, miss.client)

    async def stop(self) -> None:
        """Stop supervising, then the registry (SIGTERM, SIGKILL after 10 s)."""
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        self.read_new_log_lines()
        self.state = RegistryState.STOPPED
        log.info("registry: stopped")
