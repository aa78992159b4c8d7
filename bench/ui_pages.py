"""Open operator pages for bench/ui.py; runs inside the server's lab namespace, prints JSON at SIGTERM.

    python -m bench.ui_pages --url http://127.0.0.1:8081 --pages 50

Each page does what a browser tab on /ui/ does to the server: load the table once (every machine's
row), then keep /ui/events open and read every update. Prints `ready` once all pages are open, then
at SIGTERM one JSON line: what the pages received, which machines' rows the first page was sent (and
when, for the `--timed` ones), and this process's own CPU time. Only the first page parses what it
gets: the others count, so that this client takes as little as it can of the CPU the server shares
with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

import aiohttp


class Pages:
    def __init__(self) -> None:
        self.rows_loaded: list[int] = []
        self.messages: list[int] = []
        self.bytes = 0
        self.first_page: list[tuple[float, bytes]] = []   # what the first page was sent, when; parsed at the end
        self.errors: list[str] = []

    async def page(self, session: aiohttp.ClientSession, url: str, opened: asyncio.Event, counter: list[int],
                   total: int) -> None:
        async with session.get(f"{url}/ui/") as response:
            html = await response.text()
            if response.status != 200:
                raise RuntimeError(f"/ui/: HTTP {response.status}")
        self.rows_loaded.append(html.count("<tr id="))
        index = len(self.messages)
        self.messages.append(0)
        async with session.get(f"{url}/ui/events") as stream:
            counter[0] += 1
            if counter[0] == total:
                opened.set()
            async for chunk in stream.content.iter_any():
                self.bytes += len(chunk)
                self.messages[index] += chunk.count(b"event: rows\n")
                if index == 0:
                    self.first_page.append((time.time(), chunk))

    def first_sent(self) -> dict[str, float]:
        """Row id -> when the first page first received it (the time its message was complete)."""
        first: dict[str, float] = {}
        buffer = b""
        for at, chunk in self.first_page:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"data: "):
                    for row in json.loads(line[6:]):
                        first.setdefault(row, at)
        return first


async def run(args) -> dict:
    pages = Pages()
    opened = asyncio.Event()
    counter = [0]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        tasks = [asyncio.create_task(pages.page(session, args.url, opened, counter, args.pages))
                 for _ in range(args.pages)]
        await asyncio.wait_for(opened.wait(), 120)
        print("ready", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:   # reported: a page that broke is a result too
                pages.errors.append(f"{type(exc).__name__}: {exc}")
    first = pages.first_sent()
    sent = set(first)
    return {"pages": args.pages, "rows_on_load_min": min(pages.rows_loaded), "messages_min": min(pages.messages),
            "first_sent": {row: at for row, at in first.items() if row.startswith(args.timed)},
            "messages_max": max(pages.messages), "bytes_received": pages.bytes,
            "first_page_rows_updated": len(sent),
            "first_page_rows_updated_with_prefix": sum(1 for row in sent if row.startswith(args.prefix)),
            "client_cpu_seconds": round(time.process_time(), 2), "errors": pages.errors[:5]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--prefix", default="m-52-54-01-", help="count the updated rows whose id starts so")
    parser.add_argument("--timed", default="m-52-54-03-", help="report when rows whose id starts so first came")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
