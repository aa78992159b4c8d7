"""Live rows (provisioner/ui/live.py): coalesced, one render for every page, nothing without a page."""

from __future__ import annotations

import asyncio

from provisioner.ui.live import CLOSED, QUEUE_LIMIT, LiveRows


def test_changes_are_coalesced_rendered_once_and_sent_to_every_page():
    rendered: list[set[str]] = []

    def render(macs):
        rendered.append(set(macs))
        return f"rows {sorted(macs)}".encode()

    async def scenario():
        counters: dict[str, int] = {}
        live = LiveRows(render, counters, interval=0.01)
        live.changed("a")                 # no page open: nothing to do, nothing kept
        assert not live.dirty and live._timer is None
        pages = [live.open(), live.open()]
        for mac in ("a", "b", "a"):
            live.changed(mac)
        messages = [await asyncio.wait_for(page.get(), 5) for page in pages]
        assert rendered == [{"a", "b"}] and messages == [b"rows ['a', 'b']"] * 2
        assert counters["ui_updates"] == 1 and "ui_update_microseconds" in counters
        live.drop(pages[0])
        live.changed("c")
        assert await asyncio.wait_for(pages[1].get(), 5) == b"rows ['c']"
        assert pages[0].get_nowait() == CLOSED and pages[0].empty()
        live.close()
        assert pages[1].get_nowait() == CLOSED and not live.pages

    asyncio.run(scenario())


def test_a_page_that_does_not_read_is_closed_not_buffered_without_end():
    async def scenario():
        live = LiveRows(lambda macs: b"x", {}, interval=0.001)
        slow, reader = live.open(), live.open()
        for i in range(QUEUE_LIMIT + 1):
            live.changed(str(i))
            await asyncio.wait_for(reader.get(), 5)
        assert slow not in live.pages and slow.get_nowait() == CLOSED
        assert reader in live.pages

    asyncio.run(scenario())


def test_a_render_that_fails_is_logged_and_the_loop_goes_on(caplog):
    def render(macs):
        raise ValueError("template bug")

    async def scenario():
        live = LiveRows(render, {}, interval=0.001)
        page = live.open()
        live.changed("a")
        await asyncio.sleep(0.05)
        assert page.empty() and page in live.pages

    asyncio.run(scenario())
    assert "cannot render the rows of a" in caplog.text
