"""The pages under /ui/ (aiohttp, Jinja2 templates in templates/, static/ui.js and ui.css).

    GET  /ui/                  every machine: a table, filters by stage and group, live rows
    GET  /ui/machines/<MAC>    one machine: timeline, why its group, rendered iPXE and cloud-config,
                               install reports, the reinstall button (which calls the admin API)
    GET  /ui/events            server-sent events: `rows`, {row id: its new <tr>, or null when gone}
    GET  /ui/login, POST       the admin token, once, from an address other than loopback (access.py)
    GET  /ui/static/<file>     ui.js, ui.css: nothing is fetched from anywhere else

Everything is rendered from the server's own objects: the machine log, the installed marks and the
loaded inventory (the BootData the machine-facing port renders from), so a page shows what a machine
would be served now.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from provisioner.errors import ConfigError, ProvisionerError
from provisioner.inventory import Inventory
from provisioner.inventory.identifiers import normalize_mac_or_none
from provisioner.pxe.admin_access import TokenFile, token_matches
from provisioner.pxe.events import Counters
from provisioner.pxe.http import BootData
from provisioner.pxe.installed import LABEL, VALUE, rewritten_query
from provisioner.pxe.state import InstalledMarks, MachineLog
from provisioner.ui import view
from provisioner.ui.access import COOKIE, needs_login, session_valid, session_value
from provisioner.ui.live import CLOSED, LiveRows

HERE = Path(__file__).parent
STATIC = {"ui.js": "text/javascript", "ui.css": "text/css"}
HEARTBEAT = 15.0     # a comment line on an idle stream: proxies and browsers keep it open
OPEN_PATHS = ("/ui/login", "/ui/static/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class OperatorUi:
    def __init__(self, states: MachineLog, installed: InstalledMarks, data: BootData, tokens: TokenFile,
                 counters: Counters):
        self.states = states
        self.installed = installed
        self.data = data
        self.tokens = tokens
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.static = {name: (HERE / "static" / name).read_bytes() for name in STATIC}
        self.live = LiveRows(self._rows_event, counters)

    def mount(self, parent: web.Application, prefix: str) -> None:
        """Serve the pages under `prefix`/ of `parent` (the admin API's application)."""
        parent.add_subapp(prefix, self.app())

        async def to_pages(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"{prefix}/")

        parent.router.add_get(prefix, to_pages)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._login_guard])
        r = app.router
        r.add_get("/", self.machines_page)
        r.add_get("/machines/{mac}", self.machine_page)
        r.add_get("/events", self.events)
        r.add_get("/login", self.login_page)
        r.add_post("/login", self.login)
        r.add_get("/static/{name}", self.static_file)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _shutdown(self, app: web.Application) -> None:
        self.live.close()

    # ---------------------------------------------------------------- access

    @web.middleware
    async def _login_guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # The admin API's guard (admin.py) has checked the address already.
        if not needs_login(request.remote) or request.path.startswith(OPEN_PATHS):
            return await handler(request)
        try:
            token = self.tokens.current()
        except ConfigError as exc:
            return web.Response(status=503, text=f"{exc}\n")
        if session_valid(token, request.cookies.get(COOKIE)):
            return await handler(request)
        if request.path == "/ui/events":
            return web.Response(status=401, text="log in at /ui/login\n")
        raise web.HTTPSeeOther(f"/ui/login?next={request.path}")

    async def login_page(self, request: web.Request) -> web.Response:
        return self._page("login.html", error=None, next=_local_path(request.query.get("next")))

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        target = _local_path(str(form.get("next", "")))
        try:
            token = self.tokens.current()
        except ConfigError as exc:
            return web.Response(status=503, text=f"{exc}\n")
        if not token_matches(token, f"Bearer {form.get('token', '')}"):
            return self._page("login.html", status=401, error="That is not the admin token.", next=target)
        response = web.HTTPSeeOther(target)
        response.set_cookie(COOKIE, session_value(token), path="/ui/", httponly=True, samesite="Strict")
        raise response

    # ---------------------------------------------------------------- pages

    def _page(self, name: str, status: int = 200, **context: Any) -> web.Response:
        html = self.templates.get_template(name).render(stages=view.STAGES, **context)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    def _inventory(self) -> Inventory | None:
        self.data.maybe_reload(time.monotonic())
        return self.data.renderer.inventory if self.data.renderer is not None else None

    def _rows(self) -> list[view.Row]:
        self.installed.refresh(time.monotonic())
        return view.rows(self.states.machines, self.installed.is_installed, self._inventory())

    async def machines_page(self, request: web.Request) -> web.Response:
        stage, group = request.query.get("stage", ""), request.query.get("group", "")
        every = self._rows()
        shown = [found for found in every if view.keep(found, stage, group)]
        inventory = self._inventory()
        groups = sorted(g.id for g in inventory.groups) if inventory is not None else []
        return self._page("machines.html", rows=shown, total=len(every), stage=stage, group=group, groups=groups,
                          load_error=self.data.load_error)

    async def machine_page(self, request: web.Request) -> web.Response:
        mac = normalize_mac_or_none(request.match_info["mac"]) or request.match_info["mac"]
        inventory = self._inventory()
        self.installed.refresh(time.monotonic())
        record = self.states.machines.get(mac)
        if record is None and mac not in view.inventory_macs(inventory):
            return self._page("missing.html", status=404, mac=mac)
        installed = self.installed.is_installed(mac)
        query = view.machine_query(mac, installed)
        context: dict[str, Any] = {"row": view.row(mac, record, installed, inventory), "query": query,
                                   "candidates": [], "ipxe": None, "ipxe_error": None, "cloud": None,
                                   "cloud_error": None, "report": [],
                                   "timeline": view.timeline(record.history if record else []),
                                   "reports": view.install_reports(record.history if record else []),
                                   "load_error": self.data.load_error}
        if inventory is not None and query is not None:
            context["candidates"] = view.candidates(inventory, query)
            params = {"mac": mac, **({LABEL: VALUE} if installed else {})}
            rendered = self.data.render("ipxe", rewritten_query(params), params)   # what the machine is served
            context["ipxe"], context["ipxe_error"] = rendered.body.decode(errors="replace"), rendered.reason
            assert self.data.renderer is not None
            try:
                context["cloud"], report = self.data.renderer.cloud_config_report(query)
                context["report"] = report.sorted()
            except ProvisionerError as exc:
                context["cloud_error"] = str(exc)
        return self._page("machine.html", **context)

    async def static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=self.static[name], content_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    # ---------------------------------------------------------------- live rows

    def _rows_event(self, macs: Iterable[str]) -> bytes:
        inventory = self._inventory()
        known = view.inventory_macs(inventory)
        template = self.templates.get_template("row.html")
        changed: dict[str, str | None] = {}
        for mac in macs:
            record = self.states.machines.get(mac)
            if record is None and mac not in known:
                changed[view.dom_id(mac)] = None
            else:
                found = view.row(mac, record, self.installed.is_installed(mac), inventory)
                changed[found.dom_id] = template.render(r=found)
        return f"event: rows\ndata: {json.dumps(changed)}\n\n".encode()

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        page = self.live.open()
        try:
            await response.write(b"retry: 1000\n\n")
            while True:
                try:
                    message = await asyncio.wait_for(page.get(), HEARTBEAT)
                except TimeoutError:
                    message = b": still here\n\n"
                if message == CLOSED:
                    break
                await response.write(message)
        except ConnectionResetError:   # the page was closed
            pass
        finally:
            self.live.drop(page)
        return response


def _local_path(target: str | None) -> str:
    """Where to go after the login: a path under /ui/ on this server, never another site."""
    if target and target.startswith("/ui/") and not target.startswith("//"):
        return target
    return "/ui/"
