"""The WebSocket transport against a real server (accounts mode, a user per test): bad frames, isolation
between users, resume by seq, coalescing."""

import asyncio
import json
import re

import itertools

import pytest
import websockets

from tests.servers import ACCOUNTS, AppServer, add_user, login, open_tab

USERS = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = AppServer(tmp_path_factory.mktemp("ws"), **ACCOUNTS).start()
    yield server
    server.stop()


async def session_cookie(server):
    """A new user, signed in: their own workspace."""
    name = f"user{next(USERS)}"
    add_user(server, name)
    return await login(server, name)


def connect(server, cookie):
    return open_tab(server, cookie, page="simulator")


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), 20)


async def frames_until(ws, pattern, limit=2000):
    seen = []
    for _ in range(limit):
        frame = await asyncio.wait_for(ws.recv(), 20)
        seen.append(frame)
        if re.search(pattern, frame):
            return seen
    raise AssertionError(f"{pattern!r} never came")


async def start_run(ws, chunks, low=0, high=0):
    await ws.send(json.dumps({"action": "sim.start", "chunks": str(chunks), "delay_min": str(low),
                              "delay_max": str(high)}))
    frames = await frames_until(ws, r'id="sim-run"')
    return re.search(r'data-message="([0-9a-f]{24})"', "".join(frames)).group(1)


def appended_text(frames, message_id):
    """The text the frames append to (or set in) the run's content box, in order."""
    out = []
    for frame in frames:
        for strategy, text in re.findall(r'<pre hx-swap-oob="([^"]*)"[^>]*>(.*?)</pre>', frame, re.S):
            out.append(text)
    return "".join(out)


def lines(first, last, n):
    return "".join(f"Simulated chunk {i}/{n}\n" for i in range(first, last + 1))


async def test_bad_frames_get_a_visible_error_and_the_socket_stays_up(server):
    async with connect(server, await session_cookie(server)) as ws:
        await ws.send("not json")
        assert 'id="ws-notice"' in (notice := await recv(ws)) and "malformed message (not JSON)" in notice
        await ws.send("[1, 2]")
        assert "expected a JSON object" in await recv(ws)
        await ws.send(json.dumps({"action": "launch_missiles"}))
        assert "unknown action" in await recv(ws)
        await ws.send(json.dumps({"action": "sim.start", "pad": "x" * 100_000}))
        assert "message too large" in await recv(ws)
        await ws.send(json.dumps({"action": "sim.start", "chunks": "ten"}))
        assert "whole numbers" in await recv(ws)
        await ws.send(json.dumps({"action": "follow", "streams": "nope"}))
        assert "follow needs" in await recv(ws)
        message_id = await start_run(ws, 3)  # still up and working
        assert re.fullmatch(r"[0-9a-f]{24}", message_id)
    assert "refused WebSocket frame: malformed message" in server.log_text()


async def test_without_a_login_the_socket_is_refused(server):
    async with websockets.connect(server.url.replace("http", "ws") + "/ws") as ws:
        assert "signed out" in await recv(ws)
        with pytest.raises(websockets.ConnectionClosed) as info:
            await recv(ws)
    assert info.value.rcvd.code == 1008


async def test_users_never_see_each_other(server):
    alice, mallory = await session_cookie(server), await session_cookie(server)
    assert alice != mallory
    async with connect(server, alice) as a, connect(server, mallory) as m:
        message_id = await start_run(a, 20, 1, 2)
        await a.send(json.dumps({"action": "follow", "streams": {message_id: 0}}))
        await m.send(json.dumps({"action": "follow", "streams": {message_id: 0}}))
        assert "no stream" in await recv(m)
        await m.send(json.dumps({"action": "sim.stop", "message_id": message_id}))
        assert "no run to stop" in await recv(m)
        await frames_until(a, r"Simulated chunk 20/20")
        await m.send(json.dumps({"action": "follow", "streams": {}}))  # a no-op round trip
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(m.recv(), 0.5)  # nothing of Alice's run ever reached Mallory


async def test_every_tab_of_a_user_follows_and_resume_by_seq_has_no_gap_or_duplicate(server):
    cookie = await session_cookie(server)
    async with connect(server, cookie) as tab1, connect(server, cookie) as tab2:
        message_id = await start_run(tab1, 40, 1, 2)
        await frames_until(tab2, r'id="sim-run"')  # the other tab got the new card too
        for tab in (tab1, tab2):
            await tab.send(json.dumps({"action": "follow", "streams": {message_id: 0}}))
        for tab in (tab1, tab2):
            frames = await frames_until(tab, r'data-seq="41"')
            assert appended_text(frames, message_id) == lines(1, 40, 40)
    async with connect(server, cookie) as tab3:  # a reconnecting tab that had seen up to seq 25
        await tab3.send(json.dumps({"action": "follow", "streams": {message_id: 25}}))
        frames = await frames_until(tab3, r'data-seq="41"')
        assert appended_text(frames, message_id) == lines(26, 40, 40)


async def test_updates_are_coalesced_first_at_once_then_paced(server):
    cookie = await session_cookie(server)
    async with connect(server, cookie) as ws:
        message_id = await start_run(ws, 2000, 0, 0)
        await ws.send(json.dumps({"action": "follow", "streams": {message_id: 0}}))
        frames = await frames_until(ws, r'data-seq="2001"')
        text = appended_text(frames, message_id)
        assert text == lines(1, 2000, 2000)
        content_frames = [f for f in frames if "<pre" in f]
        assert len(content_frames) < 2000 / 4, len(content_frames)  # many tokens per frame


async def test_a_stream_followed_to_its_end_is_not_followed_again_while_the_page_shows_it(server):
    async with connect(server, await session_cookie(server)) as ws:
        message_id = await start_run(ws, 3)
        await ws.send(json.dumps({"action": "follow", "streams": {message_id: 0}}))
        seen = ""
        while 'data-seq="4"' not in seen or "Stream simulator finished" not in seen:  # the stream and the job ended
            seen += await recv(ws)
        await ws.send(json.dumps({"action": "no.such.action"}))
        await frames_until(ws, "unknown action")  # everything sent before is read
        for fresh in ([], []):  # navigations that keep the run on the page
            await ws.send(json.dumps({"action": "view", "page": "simulator", "streams": {message_id: 0},
                                      "fresh": fresh}))
        await ws.send(json.dumps({"action": "no.such.action"}))
        assert "unknown action" in await recv(ws)  # nothing about the run came before it
        await ws.send(json.dumps({"action": "view", "page": "simulator", "streams": {message_id: 0},
                                  "fresh": [message_id]}))  # rendered anew: followed again from its seq
        frames = await frames_until(ws, r'data-seq="4"')
        assert appended_text(frames, message_id) == lines(1, 3, 3)


async def test_frames_go_uncompressed_unless_deflate_is_turned_on(server, tmp_path):
    """A browser offers permessage-deflate; the shipped server declines it (QUANDA_WS_DEFLATE=0: no CPU spent
    compressing every frame for every tab), and accepts it with QUANDA_WS_DEFLATE=1."""
    async with open_tab(server, await session_cookie(server)) as ws:  # websockets offers deflate, as browsers do
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
    deflating = AppServer(tmp_path, **ACCOUNTS, QUANDA_WS_DEFLATE="1").start()
    try:
        async with open_tab(deflating, await session_cookie(deflating)) as ws:
            assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
    finally:
        deflating.stop()
