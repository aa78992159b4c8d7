"""The admin API: the operator's actions, on their own address, behind a bearer token.

`provisioner serve --admin-addr 127.0.0.1:8081` (the default) serves it beside, never on, the
machine-facing port: what changes a machine's next boot from outside the machine is here and only
here. Every request must come from an allowed address (`--admin-allow CIDR`, default loopback:
403 otherwise) and carry `Authorization: Bearer <STATE_DIR/admin-token>` (401 otherwise; see
admin_access.py). Answers are JSON; errors are `{"error": "one line"}`.

    GET    /machines                      every machine: its stages, install progress, installed mark
    GET    /machines/<MAC>                one machine, with its history
    POST   /machines/<MAC>/reinstall      forget the installed mark: the next PXE boot installs again
    POST   /machines/<MAC>/mark-installed the next PXE boot goes to the disk, no install
    DELETE /machines/<MAC>                forget the machine: history, installed mark, boot secrets
    POST   /reload                        read the data dir now (it is also re-read on change)

The operator's pages (provisioner/ui) are served beside it under /ui/: the same address check, and
their own way to ask for the token.

Each action also revokes the machine's live boot secrets (boot_secrets.py): a boot in progress can no
longer write what the operator just decided.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict

from aiohttp import web

from provisioner.errors import ConfigError
from provisioner.inventory.identifiers import normalize_mac_or_none
from provisioner.pxe.admin_access import IpNetwork, TokenFile, address_allowed, token_matches
from provisioner.pxe.events import BootEvent, EventSink, EventSource
from provisioner.pxe.http import BootData
from provisioner.pxe.machines import machine_rows
from provisioner.pxe.state import BootSecrets, InstalledMarks, MachineLog

log = logging.getLogger("provisioner.pxe.admin")

UI_PREFIX = "/ui"   # the operator's pages (provisioner/ui), served beside the API
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class AdminApi:
    def __init__(self, tokens: TokenFile, allowed: Sequence[IpNetwork], states: MachineLog,
                 installed: InstalledMarks, secrets: BootSecrets, data: BootData, on_event: EventSink):
        self.tokens = tokens
        self.allowed = tuple(allowed)
        self.states = states
        self.installed = installed
        self.secrets = secrets
        self.data = data
        self.on_event = on_event

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=4096)
        r = app.router
        r.add_get("/machines", self.list_machines)
        r.add_get("/machines/{mac}", self.show_machine)
        r.add_post("/machines/{mac}/reinstall", self.reinstall)
        r.add_post("/machines/{mac}/mark-installed", self.mark_installed)
        r.add_delete("/machines/{mac}", self.forget)
        r.add_post("/reload", self.reload)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not address_allowed(request.remote, self.allowed):
            log.warning("admin: refused %s %s from %s: address not allowed", request.method, request.path,
                        request.remote)
            return _error(403, f"{request.remote} is not allowed here (serve --admin-allow)")
        if request.path == UI_PREFIX or request.path.startswith(f"{UI_PREFIX}/"):
            return await handler(request)   # the pages ask for the token their own way (provisioner/ui/access.py)
        try:
            token = self.tokens.current()
        except ConfigError as exc:
            log.error("admin: %s", exc)
            return _error(503, str(exc))
        if not token_matches(token, request.headers.get("Authorization")):
            log.warning("admin: refused %s %s from %s: no or a wrong token", request.method, request.path,
                        request.remote)
            response = _error(401, "send Authorization: Bearer <the token in STATE_DIR/admin-token>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="provisioner admin"'
            return response
        return await handler(request)

    def _event(self, stage: str, mac: str, request: web.Request) -> None:
        # ip stays None: the operator's address is not the machine's.
        self.on_event(BootEvent(stage=stage, source=EventSource.ADMIN, mac=mac,
                                detail={"via": "admin API", "from": request.remote}))

    def _machine(self, mac: str) -> dict:
        record = self.states.machines.get(mac)
        return {"mac": mac, "installed": self.installed.is_installed(mac),
                "record": asdict(record) if record is not None else None}

    async def list_machines(self, request: web.Request) -> web.Response:
        installed = [mac for mac in self.states.machines if self.installed.is_installed(mac)]
        return web.json_response({"machines": machine_rows(self.states.machines, installed)})

    async def show_machine(self, request: web.Request) -> web.Response:
        mac = normalize_mac_or_none(request.match_info["mac"])
        if mac is None:
            return _error(400, f"{request.match_info['mac']!r} is not a MAC address")
        if mac not in self.states.machines and not self.installed.is_installed(mac):
            return _error(404, f"{mac}: the server has never seen this machine")
        return web.json_response(self._machine(mac))

    async def _act(self, request: web.Request, action: Callable[[str], bool], stage: str | None) -> web.Response:
        mac = normalize_mac_or_none(request.match_info["mac"])
        if mac is None:
            return _error(400, f"{request.match_info['mac']!r} is not a MAC address")
        try:
            changed = action(mac)
            self.secrets.revoke(mac)
        except OSError as exc:
            log.error("admin: %s %s: %s", request.path, mac, exc)
            return _error(503, f"{mac}: cannot write the state: {exc.strerror}")
        log.info("admin: %s %s from %s (%s)", request.method, request.path, request.remote,
                 "changed" if changed else "nothing to change")
        if stage is not None:
            self._event(stage, mac, request)
        return web.json_response({**self._machine(mac), "changed": changed})

    async def reinstall(self, request: web.Request) -> web.Response:
        return await self._act(request, self.installed.forget, "reinstall")

    async def mark_installed(self, request: web.Request) -> web.Response:
        return await self._act(request, self.installed.mark, "installed")

    async def forget(self, request: web.Request) -> web.Response:
        def forget(mac: str) -> bool:
            had_mark = self.installed.forget(mac)
            return self.states.forget(mac) or had_mark

        return await self._act(request, forget, None)

    async def reload(self, request: web.Request) -> web.Response:
        self.data.reload()
        if self.data.load_error:
            return _error(422, self.data.load_error)
        assert self.data.renderer is not None
        inventory = self.data.renderer.inventory
        return web.json_response({"groups": len(inventory.groups), "profiles": len(inventory.profiles)})
