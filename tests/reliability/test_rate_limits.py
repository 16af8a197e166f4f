"""The rate limits of app/ratelimit.py and how the transport applies them (app/ws.py's FrameGuard and Hub)."""

from __future__ import annotations

import asyncio
import json

import pytest

import quanda.ws
from quanda.context import ClientError
from quanda.ratelimit import Handshakes, Limits, Pace
from quanda.ws import OWNER_SCOPE, FrameGuard, Hub

pytestmark = pytest.mark.reliability


def test_a_pace_lets_a_burst_through_then_spaces_frames_at_its_rate():
    pace = Pace(rate=10, burst=3)
    assert [pace.wait_s(100.0) for _ in range(3)] == [0, 0, 0]
    assert [round(pace.wait_s(100.0), 3) for _ in range(2)] == [0.1, 0.2]
    assert pace.wait_s(101.0) == 0  # a quiet second refills the burst


def test_handshakes_over_an_address_burst_are_refused_without_using_it_up():
    handshakes = Handshakes(rate=10, burst=5)
    assert [handshakes.allow("a", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert handshakes.allow("b", 0.0)  # another address has its own
    assert handshakes.allow("a", 0.1) and not handshakes.allow("a", 0.1)  # one more after 1/rate, not a backlog


def test_connections_are_capped_per_owner_and_per_address_and_released():
    limits = Limits(20, 50, per_owner=2, per_address=3)
    assert limits.admit("alice", "1.2.3.4") is None and limits.admit("alice", "1.2.3.4") is None
    assert "too many open tabs (2 at most)" in limits.admit("alice", "5.6.7.8")
    assert limits.admit("bob", "1.2.3.4") is None
    assert "from your address (3 at most)" in limits.admit("carol", "1.2.3.4")
    limits.release("alice", "1.2.3.4")
    assert limits.admit("carol", "1.2.3.4") is None
    for owner in ("alice", "bob", "carol"):
        limits.release(owner, "1.2.3.4")
    assert not limits.by_owner and not limits.by_address and not limits.owner_paces


class FakeSocket:
    def __init__(self):
        self.scope: dict = {}


def test_the_hub_refuses_a_connection_over_the_cap_and_counts_a_closed_one_out():
    hub = Hub(store=None, handlers={}, views={}, render_fact=None, handle=None,
              limits=Limits(20, 50, per_owner=1, per_address=10))
    first = FakeSocket()
    hub.connect(first, "alice", address="1.2.3.4")
    assert first.scope[OWNER_SCOPE] == "alice"
    with pytest.raises(ClientError, match="too many open tabs"):
        hub.connect(FakeSocket(), "alice", address="1.2.3.4")
    hub.disconnect(first)
    hub.connect(FakeSocket(), "alice", address="1.2.3.4")


async def run_guard(limits: Limits, frames: list[str], owner: str | None = "alice"):
    """FrameGuard in front of an app that reads every frame: what the app got, what the client was sent."""
    incoming = [{"type": "websocket.receive", "text": f} for f in frames] + [{"type": "websocket.disconnect"}]
    sent, got = [], []

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    async def app_(scope, receive_, send_):
        while (message := await receive_())["type"] == "websocket.receive":
            got.append(message["text"])
        got.append(message)

    scope = {"type": "websocket", OWNER_SCOPE: owner}
    limits.admit(owner, "1.2.3.4")
    loop = asyncio.get_running_loop()
    began = loop.time()
    await FrameGuard(app_, limits=limits)(scope, receive, send)
    return got, sent, loop.time() - began


async def test_frames_over_a_connections_rate_wait_their_turn_and_the_client_is_told_once():
    frames = [json.dumps({"action": f"a{i}"}) for i in range(30)]
    got, sent, took = await run_guard(Limits(frames_per_s=100, owner_frames_per_s=1000, per_owner=5,
                                             per_address=5), frames)
    assert got[:-1] == frames  # none dropped, none reordered
    assert took < 0.2, took  # within the burst of 200: no wait at all
    got, sent, took = await run_guard(Limits(frames_per_s=10, owner_frames_per_s=1000, per_owner=5,
                                             per_address=5), frames)
    assert got[:-1] == frames
    assert 0.9 <= took < 3, took  # 20 in the burst, then 10 at 10 a second
    notices = [m["text"] for m in sent if m["type"] == "websocket.send"]
    assert len(notices) == 1 and "slow down: at most 10 messages a second" in notices[0]


async def test_an_owners_rate_holds_whatever_connection_the_frames_come_from():
    limits = Limits(frames_per_s=1000, owner_frames_per_s=10, per_owner=5, per_address=5)
    frames = [json.dumps({"action": f"a{i}"}) for i in range(25)]
    got, _sent, took = await run_guard(limits, frames)
    assert got[:-1] == frames and took >= 0.4, took  # the owner's burst of 20, then 10 a second


async def test_a_connection_kept_over_its_rate_is_closed_and_told_why(monkeypatch):
    monkeypatch.setattr(quanda.ws, "STRAINED_S", 0.3)
    frames = [json.dumps({"action": f"a{i}"}) for i in range(200)]
    got, sent, took = await run_guard(Limits(frames_per_s=20, owner_frames_per_s=1000, per_owner=5,
                                             per_address=5), frames)
    assert got[-1] == {"type": "websocket.disconnect", "code": 1008}
    assert 40 <= len(got) - 1 < 60, len(got)  # the burst, then 0.3 s at 20 a second
    texts = [m.get("text", "") for m in sent]
    assert "closed: over 20 messages a second" in texts[-2] and sent[-1] == {"type": "websocket.close", "code": 1008}


async def test_bad_frames_are_paced_like_good_ones():
    frames = ["not json"] * 30
    _got, sent, took = await run_guard(Limits(frames_per_s=10, owner_frames_per_s=1000, per_owner=5,
                                              per_address=5), frames)
    refusals = [m for m in sent if "not JSON" in m.get("text", "")]
    assert len(refusals) == 30 and took >= 0.9, took
