"""Render once, send to many: a fact is rendered once per view (the page a tab shows) and the same text goes to
every tab with that view; tabs on other pages get their own view's; one slow tab holds back no other."""

import asyncio
import json
import re
from collections import Counter

import pytest
import uvicorn
import websockets
from fasthtml.common import Div

from quanda.config import Settings
from quanda.fanout import send_to_all
from quanda.server import create_app
from tests.servers import free_port

TIMEOUT = 20


@pytest.fixture
async def served(tmp_path):
    """The app under uvicorn in this test's event loop (so the test reaches its hub), local mode."""
    port = free_port()
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'q.db'}", port=port)
    app = create_app(settings, entry_point_group=None)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(TIMEOUT):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)  # uvicorn sets a flag, no event to wait on
    yield app, f"ws://127.0.0.1:{port}/ws"
    server.should_exit = True
    await asyncio.wait_for(task, TIMEOUT)


async def frame_with(ws, pattern: str) -> str:
    async with asyncio.timeout(TIMEOUT):
        while True:
            frame = await ws.recv()
            if re.search(pattern, frame):
                return frame


async def test_a_fact_is_rendered_once_per_page_and_every_tab_of_that_page_gets_the_same_text(served):
    app, url = served
    hub, ctx = app.state.hub, app.state.ctx
    renders: Counter = Counter()

    async def probe(topic, fact, h):  # stands in for the plugins' views: says which view and which render it is
        renders[h.page] += 1
        await asyncio.sleep(0)  # a view that awaits (the store) between renders
        return [Div(f"{topic} for {h.page} render {renders[h.page]}", id="probe")]

    hub.render_fact = probe
    pages = ["todo"] * 6 + ["simulator"] * 3 + ["chat"]
    tabs = [await websockets.connect(url) for _ in pages]
    try:
        for ws, page in zip(tabs, pages):
            await ws.send(json.dumps({"action": "view", "page": page, "streams": {}, "fresh": []}))
        async with asyncio.timeout(TIMEOUT):  # every tab's view is in
            while sorted(c.page for c in hub.connections.values() if c.page) != sorted(pages):
                await asyncio.sleep(0.01)
        await ctx.publish("local", "probe.fact", n=1)
        got = [await frame_with(ws, "probe.fact") for ws in tabs]
    finally:
        for ws in tabs:
            await ws.close()
    assert renders == {"todo": 1, "simulator": 1, "chat": 1}, renders
    for frame, page in zip(got, pages):
        assert f"probe.fact for {page} render 1<" in frame, (page, frame)
    assert len({f for f, p in zip(got, pages) if p == "todo"}) == 1


class Tab:
    def __init__(self, gate: asyncio.Event | None = None):
        self.gate, self.got, self.sent_from = gate, [], None

    async def send_text(self, text: str) -> None:
        self.sent_from = asyncio.current_task()
        if self.gate is not None:
            await self.gate.wait()
        self.got.append(text)


async def test_sends_that_need_not_wait_run_in_the_callers_task_and_a_slow_tab_holds_back_no_other():
    gate = asyncio.Event()
    slow, quick = Tab(gate), [Tab() for _ in range(5)]
    fanning = asyncio.create_task(send_to_all([quick[0], quick[1], slow, *quick[2:]], "frame"))
    async with asyncio.timeout(TIMEOUT):
        while not all(t.got for t in quick):
            await asyncio.sleep(0)
    assert all(t.got == ["frame"] for t in quick) and slow.got == []
    assert all(t.sent_from is fanning for t in quick)  # no task per tab
    assert not fanning.done()  # it returns once every tab has the frame
    gate.set()
    await asyncio.wait_for(fanning, TIMEOUT)
    assert slow.got == ["frame"]


async def test_cancelling_the_fan_out_cancels_a_send_still_waiting():
    gate = asyncio.Event()
    slow = Tab(gate)
    cancelled = asyncio.Event()

    async def send_text(text):
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    slow.send_text = send_text
    fanning = asyncio.create_task(send_to_all([slow], "frame"))
    await asyncio.sleep(0)
    fanning.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(fanning, TIMEOUT)
    assert cancelled.is_set()
