"""The machine-facing writes: `POST /report` and `POST /installed`, each proven by the boot's secret.

Both name the machine with `?mac=` and must carry the secret the server issued with that MAC's
install boot (boot_secrets.py; `Authorization: Bearer <secret>`). Before anything else a write is
held to the limits that keep a flood from filling memory or disk (limits.py): a rate per client
address (429), a body of at most reports.MAX_BODY bytes (413). A write without the right secret
gets 403, goes into the named machine's history as a refusal (machines.py) and changes nothing.

- `POST /report?mac=M`: one install progress report (reports.py), recorded in M's history.
- `POST /installed?mac=M`: M's installer succeeded: mark it installed (installed.py) and revoke its
  secrets, so nothing more can be written in the name of that boot.

A secret-gated config fetch (BootHttp) is checked by the same `refusal()`. A write the state cannot
take now (etcd away, state_etcd.py) gets 503 with the reason, and the machine's hook tries again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web

from provisioner.inventory.identifiers import normalize_mac_or_none
from provisioner.pxe import reports
from provisioner.pxe.boot_secrets import QUERY_PARAMETER, presented_secret
from provisioner.pxe.events import BootEvent, Counters, EventSink, EventSource, count, count_request
from provisioner.pxe.limits import MAX_SOURCES, RecentMap, SourceRateLimiter
from provisioner.pxe.machines import REFUSED
from provisioner.pxe.state import BootSecrets, InstalledMarks, SecretCheck, StateRunner, run_inline

log = logging.getLogger("provisioner.pxe.writes")


def request_secret(request: web.Request) -> str | None:
    """The boot secret `request` carries, if any (boot_secrets.presented_secret)."""
    return presented_secret(request.headers.get("Authorization"), request.query.get(QUERY_PARAMETER))


class MachineWrites:
    def __init__(self, installed: InstalledMarks, secrets: BootSecrets, on_event: EventSink, counters: Counters,
                 limiter: SourceRateLimiter | None = None, clock: Callable[[], float] = time.time,
                 run_state: StateRunner = run_inline):
        self.installed = installed
        self.run_state = run_state
        self.secrets = secrets
        self.on_event = on_event
        self.counters = counters
        self.limiter = limiter or SourceRateLimiter()
        self.clock = clock
        self._reported_percent: RecentMap[str, int | None] = RecentMap(MAX_SOURCES)   # MAC -> last recorded %

    def routes(self) -> list[tuple[str, str, Callable]]:
        return [("POST", "/report", self.report), ("POST", "/installed", self.mark_installed)]

    def _event(self, stage: str, request: web.Request, mac: str, detail: dict) -> None:
        self.on_event(BootEvent(stage=stage, source=EventSource.HTTP, mac=mac, ip=request.remote, detail=detail))

    def _answer(self, path: str, status: int, text: str) -> web.Response:
        count_request(self.counters, path, status)
        return web.Response(status=status, text=text)

    async def refusal(self, request: web.Request, mac: str | None, path: str) -> web.Response | None:
        """None when `request` carries `mac`'s live boot secret; else the 403 to send, with the refusal
        recorded in the machine's history and counted."""
        try:
            check = SecretCheck.NONE_ISSUED
            if mac:
                # What this process holds answers on the loop; only the rest costs a trip to the state runner.
                secret, now = request_secret(request), self.clock()
                held = self.secrets.check_held(mac, secret, now)
                check = held if held is not None else await self.run_state(self.secrets.check, mac, secret, now)
        except OSError as exc:   # the secret cannot be checked now (a shared state store away)
            count(self.counters, f'boot_secret_unchecked{{path="{path}"}}')
            return self._answer(path, 503, f"{path}: cannot check the boot secret now: {exc.strerror}; try again\n")
        if check is SecretCheck.OK:
            return None
        count(self.counters, f'boot_secret_refused{{path="{path}",reason="{check.name.lower()}"}}')
        if mac:
            log.warning("%s for %s from %s refused: %s", path, mac, request.remote, check.value)
            self._event(REFUSED, request, mac, {"path": path, "reason": check.value, "from": request.remote})
        return self._answer(path, 403, f"{path}: {check.value}\n")

    async def _admitted(self, request: web.Request, path: str) -> str | web.Response:
        """The MAC of a write within the limits and proven by its boot secret, else the refusal to send."""
        if not self.limiter.allow(request.remote or "", time.monotonic()):
            count(self.counters, "write_rate_limited")
            response = self._answer(path, 429, f"{path}: too many writes from {request.remote}; slow down\n")
            response.headers["Retry-After"] = "1"
            return response
        mac = normalize_mac_or_none(request.query.get("mac"))
        if mac is None:
            return self._answer(path, 400, f"{path}: give ?mac=<MAC address>\n")
        if request.content_length is not None and request.content_length > reports.MAX_BODY:
            count(self.counters, "write_too_large")
            return self._answer(path, 413, f"{path}: a body of at most {reports.MAX_BODY} bytes\n")
        return await self.refusal(request, mac, path) or mac

    async def report(self, request: web.Request) -> web.Response:
        """POST /report?mac=M: one install progress report (provisioner/pxe/reports.py)."""
        mac = await self._admitted(request, "/report")
        if isinstance(mac, web.Response):
            return mac
        if request.content_length is None:
            return self._answer("/report", 411, f"/report: send one JSON object of at most {reports.MAX_BODY} "
                                                f"bytes with a Content-Length\n")
        body = await request.read()
        try:
            report = reports.parse_report(body)
        except ValueError as exc:
            return self._answer("/report", 400, f"/report: {exc}\n")
        if report.event == "start":
            self._reported_percent.pop(mac, None)
        if reports.worth_recording(report, self._reported_percent.get(mac)):
            if report.percent is not None:
                self._reported_percent[mac] = report.percent
            self._event(report.machine_stage, request, mac, report.detail())
        return self._answer("/report", 200, "ok\n")

    async def mark_installed(self, request: web.Request) -> web.Response:
        """POST /installed?mac=M: the install is done; M boots from its disk from now on."""
        mac = await self._admitted(request, "/installed")
        if isinstance(mac, web.Response):
            return mac
        try:
            if await self.run_state(self.installed.mark, mac):
                self._event("installed", request, mac, {"via": "POST /installed"})
            await self.run_state(self.secrets.revoke, mac)
        except OSError as exc:
            log.error("installed: cannot record %s: %s", mac, exc)
            return self._answer("/installed", 503, f"/installed: cannot record {mac} now: {exc.strerror}; "
                                                   f"try again\n")
        return self._answer("/installed", 200, f"{mac} installed\n")
