"""The HTTP side of the boot server (aiohttp): matchbox-compatible paths plus health and metrics.

Paths: /boot.ipxe (and /boot.ipxe.0), /ipxe, /cloud-config (and matchbox's /cloud), /ignition,
/generic, /metadata, /assets/<path> (sendfile, Range, HEAD via aiohttp's FileResponse),
/boot/<ipxe binary> (for UEFI HTTP boot), /healthz, /metrics, the etcd discovery service
under /discovery/, and the machines' own writes /report and /installed (writes.py). Operator
actions are not here: they are on the admin address only (admin.py).

Boot secrets (boot_secrets.py): an /ipxe script that boots a kernel, for a MAC that is not marked
installed, carries a fresh secret for that boot (`set boot_secret ...` in front of the cached
script, whose kernel line passes `provisioner.boot_secret=${boot_secret}`). The configs of a
group or profile with `require_boot_secret: true` go only to a request carrying that secret (its
`boot_secret` query parameter is taken out of the query before rendering: it is no label).
With --state-etcd such a script also names the site's other live servers (`set site_servers ...`, passed
as `provisioner.servers=${site_servers}` on a kernel line that reports to us: ipxe.with_servers_argument),
so the live image can report to and download from another server when this one is gone.

Hot path (/ipxe?mac=...): rendered answers are cached per query string; the data dir is checked
for changes at most once a second (file mtimes), and a change reloads the inventory and empties
the cache. So a steady-state request costs one dict lookup, no template work and no disk read.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from provisioner.errors import ConfigError, ProvisionerError
from provisioner.inventory import MachineQuery, load_inventory
from provisioner.inventory.identifiers import normalize_mac_or_none
from provisioner.pxe import ipxe
from provisioner.pxe.boot_secrets import QUERY_PARAMETER
from provisioner.pxe.events import BootEvent, Counters, EventSink, EventSource, count, count_request
from provisioner.pxe.file_response import MappedFileResponse
from provisioner.pxe.installed import rewritten_query, with_installed_label
from provisioner.pxe.jail import JailError, resolve_in_jail
from provisioner.pxe.limits import MAX_SOURCES, RecentMap
from provisioner.pxe.state import BootSecrets, InstalledMarks, MarkedInstalled, StateRunner, run_inline
from provisioner.pxe.update_checks import STAGE as UPDATE_CHECK
from provisioner.pxe.update_checks import check_detail
from provisioner.pxe.writes import MachineWrites
from provisioner.render import NoMatch, Renderer

log = logging.getLogger("provisioner.pxe.http")

WATCHED_DIRS = ("profiles", "groups", "cloud", "ignition", "generic")
CACHE_LIMIT = 20000
CHECK_INTERVAL = 1.0

# endpoint -> (Renderer method name, machine stage, content type)
RENDERED = {
    "ipxe": ("ipxe", "ipxe-script", "text/plain"),
    "cloud-config": ("cloud_config", "cloud-config", "text/plain"),
    "ignition": ("ignition", "ignition", "application/json"),
    "generic": ("generic", "generic", "text/plain"),
    "metadata": ("metadata", "metadata", "text/plain"),
}

def data_dir_signature(data_dir: Path) -> tuple:
    """A cheap fingerprint of the inventory files: (name, mtime_ns, size) of every file (pure I/O)."""
    entries: list[tuple[str | int | None, ...]] = []
    for sub in WATCHED_DIRS:
        folder = data_dir / sub
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    try:
                        st = entry.stat()
                    except OSError:
                        continue
                    entries.append((sub, entry.name, st.st_mtime_ns, st.st_size))
        except OSError:
            entries.append((sub, None))
    return tuple(sorted(entries, key=repr))


class MalformedRequests(logging.Filter):
    """Attached to aiohttp's `aiohttp.server` logger: a request aiohttp cannot parse is answered 400 and
    logged with a full traceback at ERROR (web_protocol.handle_error). That is the client's fault, and
    anyone on the boot network could fill the log with it: one debug line and a count instead."""

    def __init__(self, counters: Counters):
        super().__init__()
        self.counters = counters

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and error.code < 500:
            count(self.counters, "http_malformed")
            log.debug("malformed request: %s", " ".join(str(error).split())[:200])
            return False
        return True


@dataclass
class Rendered:
    status: int
    body: bytes
    content_type: str
    mac: str | None
    boot_assets: tuple[tuple[str, str], ...] = ()   # (asset path, "kernel"/"initrd") from the profile
    reason: str | None = None
    boots_kernel: bool = False      # an iPXE script that starts a kernel: it gets a boot secret
    needs_secret: bool = False      # a config of a group/profile with require_boot_secret


class BootData:
    """The loaded inventory + renderer, a render cache and change detection."""

    def __init__(self, data_dir: Path, server_url: str, registry_url: str | None = None,
                 servers_argument: bool = False):
        self.data_dir = Path(data_dir)
        self.server_url = server_url.rstrip("/")
        self.registry_url = registry_url
        self.servers_argument = servers_argument   # a site of several servers: the hook is told the others
        self.renderer: Renderer | None = None
        self.load_error: str | None = None
        self.cache: dict[tuple[str, str], Rendered] = {}
        self.signature: tuple | None = None
        self.checked_at = 0.0
        self.reload()

    def reload(self) -> None:
        """Load the inventory; on error keep serving the previous one and remember the message."""
        signature = data_dir_signature(self.data_dir)
        try:
            inventory = load_inventory(self.data_dir)
        except ConfigError as exc:
            self.load_error = str(exc)
            log.error("inventory: %s (still serving the previous version)", exc)
        else:
            self.renderer = Renderer(inventory, server_url=self.server_url, registry_url=self.registry_url)
            self.load_error = None
            log.info("inventory: loaded %d groups, %d profiles from %s", len(inventory.groups),
                     len(inventory.profiles), self.data_dir)
        self.signature = signature
        self.cache.clear()

    def maybe_reload(self, now: float) -> None:
        if now - self.checked_at < CHECK_INTERVAL:
            return
        self.checked_at = now
        if data_dir_signature(self.data_dir) != self.signature:
            self.reload()

    def render(self, endpoint: str, query_string: str, params) -> Rendered:
        key = (endpoint, query_string)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        result = self._render(endpoint, query_string, params)
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()
        self.cache[key] = result
        return result

    def _render(self, endpoint: str, query_string: str, params) -> Rendered:
        method, _stage, content_type = RENDERED[endpoint]
        try:
            query = MachineQuery.from_params({k: params.get(k) for k in params}, raw_query=query_string)
        except ConfigError as exc:
            return self._refusal(endpoint, 400, str(exc), None)
        if self.renderer is None:
            return self._refusal(endpoint, 503, f"inventory not loaded: {self.load_error}", query.mac)
        try:
            text = getattr(self.renderer, method)(query)
            needs_secret = endpoint != "ipxe" and self.renderer.select(query).requires_boot_secret
        except NoMatch as exc:
            return self._refusal(endpoint, 404, str(exc), query.mac)
        except ProvisionerError as exc:
            log.error("%s for %s: %s", endpoint, query.mac or query_string, exc)
            return self._refusal(endpoint, 500, str(exc), query.mac)
        if endpoint != "ipxe" or not ipxe.boots_kernel(text):
            return Rendered(200, text.encode(), content_type, query.mac, needs_secret=needs_secret)
        text = ipxe.with_secret_argument(text)
        if self.servers_argument:
            text = ipxe.with_servers_argument(text)
        return Rendered(200, text.encode(), content_type, query.mac, _boot_assets(text, self.server_url),
                        boots_kernel=True)

    def _refusal(self, endpoint: str, status: int, reason: str, mac: str | None) -> Rendered:
        if endpoint == "ipxe":
            # iPXE only runs a script it got with 200: tell the operator on the console, then retry.
            body = ipxe.retry_script(reason, f"{self.server_url}/boot.ipxe")
            return Rendered(200, body.encode(), "text/plain", mac, reason=reason)
        return Rendered(status, (reason + "\n").encode(), "text/plain", mac, reason=reason)


def _boot_assets(script: str, server_url: str) -> tuple[tuple[str, str], ...]:
    """(asset path, kind) for `kernel`/`initrd` lines that point at our /assets/ (pure)."""
    prefixes = (f"{server_url}/assets/", "/assets/")   # iPXE resolves /assets/.. against the script URL
    found = []
    for line in script.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("kernel", "initrd"):
            url, skip = "", False
            for word in words[1:]:
                if skip:
                    skip = False
                elif word in ("--name", "-n"):
                    skip = True   # iPXE: initrd --name <name> <url>
                elif not word.startswith("-"):
                    url = word
                    break
            for prefix in prefixes:
                if url.startswith(prefix):
                    found.append((url[len(prefix):].split("?", 1)[0], words[0]))
                    break
    return tuple(found)


@dataclass(frozen=True)
class QueryView:
    """A request's query as it is rendered: the boot secret taken out, the MAC normalised (see _query_view)."""

    params: Mapping[str, str]
    query_string: str
    mac: str | None

    def installed_view(self) -> tuple[Mapping[str, str], str]:
        """(params, query string) for an installed machine: os=installed added unless the query names an os."""
        extra = with_installed_label(dict(self.params), True)
        if extra is None:
            return self.params, self.query_string
        return extra, rewritten_query(extra)


def _query_view(query: Mapping[str, str], query_string: str) -> QueryView:
    """The view of a request's query (first value of each name); its own query string unless the secret is
    taken out (pure)."""
    plain = {k: query.get(k, "") for k in query}
    if QUERY_PARAMETER in plain:
        del plain[QUERY_PARAMETER]
        query_string = rewritten_query(plain)
    return QueryView(plain, query_string, normalize_mac_or_none(plain.get("mac")))


class BootHttp:
    """Builds the aiohttp Application. Boot events go to `on_event`, request counts to `counters`."""

    def __init__(self, data: BootData, assets_dir: Path | None, ipxe_dir: Path | None, on_event: EventSink,
                 counters: Counters, metrics_text: Callable[[], str], *, installed: InstalledMarks,
                 secrets: BootSecrets, extra_routes=(), forward_state: bool = False,
                 health_checks: Sequence[Callable[[], tuple[bool, str]]] = (), run_state: StateRunner = run_inline,
                 site_servers: Callable[[], Sequence[str]] | None = None):
        self.data = data
        self.site_servers = site_servers   # the site's other live servers (state_sync.SiteServers.others)
        self.health_checks = health_checks   # more parts of the server: (healthy, one line) each
        self.installed = installed   # the os=installed switch (provisioner/pxe/installed.py)
        self.secrets = secrets
        self.assets_dir = Path(os.path.realpath(assets_dir)) if assets_dir else None
        self.ipxe_dir = ipxe_dir
        self.on_event = on_event
        self.counters = counters
        self.metrics_text = metrics_text
        self.extra_routes = extra_routes
        self.forward_state = forward_state   # a worker: /healthz and /metrics come via extra_routes
        self.run_state = run_state
        self.writes = MachineWrites(installed, secrets, on_event, counters, run_state=run_state)
        # client ip -> {asset path: kind}, learned from the /ipxe script we sent that client
        self.expected_assets: RecentMap[str, dict[str, str]] = RecentMap(MAX_SOURCES)
        self._views: RecentMap[str, QueryView] = RecentMap(CACHE_LIMIT)   # raw query string -> its view
        self._with_secrets: RecentMap[str, tuple[str, str, bytes, bytes]] = RecentMap(MAX_SOURCES)
        self._boot_body = ipxe.boot_script(data.server_url).encode()

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/", self.root)
        r.add_get("/boot.ipxe", self.boot_ipxe)
        r.add_get("/boot.ipxe.0", self.boot_ipxe)
        for endpoint in RENDERED:
            r.add_get(f"/{endpoint}", self._rendered_handler(endpoint))
        r.add_get("/cloud", self._rendered_handler("cloud-config"))
        r.add_get("/assets/{path:.*}", self.asset)          # GET also answers HEAD
        r.add_get("/boot/{name}", self.ipxe_binary)
        if not self.forward_state:
            r.add_get("/healthz", self.healthz)
            r.add_get("/metrics", self.metrics_handler)
        for method, path, handler in (*self.writes.routes(), *self.extra_routes):
            r.add_route(method, path, handler)
        return app

    def _count(self, path: str, status: int) -> None:
        count_request(self.counters, path, status)

    def _event(self, stage: str, remote: str | None, mac: str | None = None,
               detail: Mapping[str, Any] | None = None) -> None:
        self.on_event(BootEvent(stage=stage, source=EventSource.HTTP, mac=mac, ip=remote, detail=detail or {}))

    async def root(self, request: web.Request) -> web.Response:
        self._count("/", 200)
        return web.Response(text="provisioner boot server\n")

    async def boot_ipxe(self, request: web.Request) -> web.Response:
        self._count("/boot.ipxe", 200)
        self._event("boot-script", request.remote)
        return web.Response(body=self._boot_body, content_type="text/plain")

    def _rendered_handler(self, endpoint: str):
        stage = RENDERED[endpoint][1]
        path = f"/{endpoint}"

        async def handler(request: web.Request) -> web.Response:
            self.data.maybe_reload(time.monotonic())
            params, query_string = self._machine_view(request)
            result = self.data.render(endpoint, query_string, params)
            body = result.body
            if result.needs_secret:
                refused = await self.writes.refusal(request, result.mac, path)
                if refused is not None:
                    return refused
            elif result.boots_kernel and result.mac and not self.installed.is_installed(result.mac):
                try:
                    body = await self._with_secret(result, request.remote)
                except MarkedInstalled:   # another server marked it a moment ago: answer as installed
                    params, query_string = self._machine_view(request)
                    result = self.data.render(endpoint, query_string, params)
                    body = result.body
            self._count(path, result.status)
            if result.status == 200 and result.reason is None:
                if result.boot_assets and request.remote:
                    self._expect_assets(request.remote, result.boot_assets)
                self._event(stage, request.remote, result.mac)
            elif result.reason:
                self._event(f"{stage}-refused", request.remote, result.mac, {"reason": result.reason})
            return web.Response(body=body, status=result.status, content_type=result.content_type)

        return handler

    def _expect_assets(self, remote: str, assets: tuple[tuple[str, str], ...]) -> None:
        """Remember which of our assets the script sent to `remote` boots (their events' stage names)."""
        known = self.expected_assets.get(remote)
        if known is None or known.items() != set(assets):
            self.expected_assets[remote] = dict(assets)
        else:
            self.expected_assets.move_to_end(remote)   # the same script again: no new dict per request

    def _machine_view(self, request: web.Request) -> tuple[Mapping[str, str], str]:
        """(params, query string) to render for: the boot secret taken out (it is no label), and os=installed
        added for an installed machine (installed.py)."""
        raw = request.query_string
        view = self._views.get(raw)
        if view is None:
            view = _query_view(request.query, raw)
            self._views[raw] = view
        self.installed.refresh(time.monotonic())
        if not self.installed.is_installed(view.mac):
            return view.params, view.query_string
        return view.installed_view()

    async def _with_secret(self, result: Rendered, remote: str | None) -> bytes:
        """The script with this boot's secret; without one (logged) when it cannot be stored: the machine
        boots, and its writes are refused."""
        assert result.mac is not None
        try:
            secret = await self.run_state(self.secrets.issue, result.mac, remote, time.time())
        except OSError as exc:
            log.error("boot secrets: cannot store a secret for %s: %s", result.mac, exc)
            return result.body
        servers = ipxe.servers_setting(self.site_servers()) if self.site_servers is not None else ""
        # iPXE retrying its chain gets the same secret again (boot_secrets.REUSE_SECONDS): the same bytes.
        made = self._with_secrets.get(result.mac)
        if made is not None and made[0] == secret and made[1] == servers and made[2] is result.body:
            return made[3]
        body = ipxe.with_secret_setting(result.body.decode(), secret, servers).encode()
        self._with_secrets[result.mac] = (secret, servers, result.body, body)
        return body

    async def asset(self, request: web.Request) -> web.StreamResponse:
        if self.assets_dir is None:
            self._count("/assets", 404)
            raise web.HTTPNotFound(text="assets are disabled\n")
        name = request.match_info["path"]
        try:
            path = resolve_in_jail(self.assets_dir, name)
        except JailError as exc:
            status = 403 if exc.denied else 404
            self._count("/assets", status)
            return web.Response(status=status, text=f"{name}: {exc}\n")
        self._count("/assets", 200)
        if request.method == "GET":
            update = check_detail(path, request.query)
            if update is not None:
                self._event(UPDATE_CHECK, request.remote, detail={"path": name, **update})
            else:
                kind = self.expected_assets.get(request.remote or "", {}).get(name, "asset")
                self._event(kind, request.remote, detail={"path": name, "range": request.headers.get("Range")})
        return MappedFileResponse(path)

    async def ipxe_binary(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if self.ipxe_dir is None or name not in ipxe.IPXE_FILES:
            self._count("/boot", 404)
            raise web.HTTPNotFound(text=f"{name}: not an iPXE binary we serve\n")
        self._count("/boot", 200)
        self._event("http-boot", request.remote, detail={"file": name})
        return MappedFileResponse(self.ipxe_dir / name)

    async def healthz(self, request: web.Request) -> web.Response:
        self.data.maybe_reload(time.monotonic())
        if self.data.load_error and self.data.renderer is None:
            self._count("/healthz", 503)
            return web.Response(status=503, text=f"inventory: {self.data.load_error}\n")
        text = "ok\n" if not self.data.load_error else f"ok (stale inventory: {self.data.load_error})\n"
        checks = [check() for check in self.health_checks]
        status = 200 if all(healthy for healthy, _ in checks) else 503
        self._count("/healthz", status)
        return web.Response(status=status, text=text + "".join(f"{line}\n" for _, line in checks))

    async def metrics_handler(self, request: web.Request) -> web.Response:
        self._count("/metrics", 200)
        return web.Response(text=self.metrics_text(), content_type="text/plain", charset="utf-8")
