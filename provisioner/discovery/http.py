"""HTTP face of the discovery store, mounted in the boot server's aiohttp app.

    GET  /discovery/new?size=N          -> body: http://<server>/discovery/<token>   (size 3 by default)
    GET  /discovery/<token>[/<key>]     -> v2 keys JSON (node or directory), X-Etcd-Index header
    GET  ...?wait=true&waitIndex=N      -> long-poll for the next change
    PUT  /discovery/<token>/<key>       -> form value=..., query/form prevExist=false
    DELETE /discovery/<token>/<key>

etcd (`--discovery http://<server>/discovery/<token>`) uses the URL's path as the key and talks to
the URL's host with an empty key prefix, so the request paths are exactly the keys above.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from aiohttp import web
from multidict import MultiDictProxy

from provisioner.discovery.store import DiscoveryStore, KeysError

log = logging.getLogger("provisioner.discovery")

WAIT_TIMEOUT = 300.0


def _form_text(form: MultiDictProxy[str | bytes | bytearray | web.FileField], name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.lower() == "true"


class DiscoveryHttp:
    def __init__(self, store: DiscoveryStore, server_url: str, on_change: Callable[[], None] = lambda: None):
        self.store = store
        self.server_url = server_url.rstrip("/")
        self.on_change = on_change

    def routes(self) -> list[tuple[str, str, Callable]]:
        return [("GET", "/discovery/new", self.new),
                ("*", "/discovery/{rest:.+}", self.keys)]

    def _json(self, status: int, body: dict) -> web.Response:
        return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                            headers={"X-Etcd-Index": str(self.store.index)})

    async def new(self, request: web.Request) -> web.Response:
        text = request.query.get("size", "3")
        try:
            size = int(text)
            token = self.store.new_token(size)
        except ValueError as exc:
            return web.Response(status=400, text=f"size: {exc}\n")
        self.on_change()
        log.info("discovery: new token %s for a %d-member cluster", token, size)
        return web.Response(text=f"{self.server_url}/discovery/{token}")

    async def keys(self, request: web.Request) -> web.Response:
        key = "/discovery/" + request.match_info["rest"]
        try:
            if request.method == "GET":
                if _bool(request.query.get("wait")):
                    try:
                        wait_index = int(request.query.get("waitIndex", "0"))
                    except ValueError:
                        return self._json(400, {"errorCode": 209, "message": "Invalid field",
                                                "cause": "invalid value for waitIndex", "index": self.store.index})
                    recursive = bool(_bool(request.query.get("recursive")))
                    found = await self.store.wait(key, wait_index, recursive, WAIT_TIMEOUT)
                    if found is None:
                        return web.Response(status=200, text="", headers={"X-Etcd-Index": str(self.store.index)})
                    return self._json(200, found)
                return self._json(200, self.store.get(key))
            if request.method == "PUT":
                form = await request.post()
                value = form.get("value", request.query.get("value", ""))
                in_query = request.query.get("prevExist")
                prev_exist = _bool(in_query if in_query is not None else _form_text(form, "prevExist"))
                status, body = self.store.put(key, str(value), prev_exist)
                self.on_change()
                return self._json(status, body)
            if request.method == "DELETE":
                body = self.store.delete(key)
                self.on_change()
                return self._json(200, body)
        except KeysError as exc:
            return self._json(exc.status, exc.body())
        return web.Response(status=405, text="method not allowed\n")
