"""The ceiling for the boot server's hot path: a bare aiohttp handler returning a constant.

`python -m bench.http_ceiling PORT PROCESSES` serves GET /ipxe on 127.0.0.1:PORT from PROCESSES processes
sharing one listening socket (as `serve --http-workers` does), on the same event loop the server picks
(provisioner.pxe.loop). Anything our server does per request beyond this is what separates it from the
ceiling. Runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

from aiohttp import web

from provisioner.pxe.loop import new_event_loop

BODY = b"#!ipxe\nkernel /assets/vmlinuz console=ttyS0\ninitrd /assets/initrd.img\nboot\n"


async def _serve(listen: socket.socket) -> None:
    async def constant(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/ipxe", constant)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, listen).start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def _run(listen: socket.socket) -> None:
    loop = new_event_loop()
    try:
        loop.run_until_complete(_serve(listen))
    finally:
        loop.close()


def main() -> None:
    port, processes = int(sys.argv[1]), int(sys.argv[2])
    listen = socket.socket()
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listen.bind(("127.0.0.1", port))
    listen.listen(1024)
    children = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:
            _run(listen)
            os._exit(0)
        children.append(pid)
    try:
        _run(listen)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


if __name__ == "__main__":
    main()
