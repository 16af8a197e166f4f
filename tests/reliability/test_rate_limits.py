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


# -- fair within a workspace ------------------------------------------------------------------------------------

def paced(limits: Limits, tabs: dict[str, float], seconds: float, owner: str = "alice") -> dict[str, dict]:
    """Tabs of one owner, each sending as fast as it is let up to its rate (frames per second; inf: a flood),
    simulated on a clock: per tab, the frames handled and the longest a frame waited (for its own pace, and for
    its owner's beyond its share)."""
    paces = {name: limits.connection_pace() for name in tabs}
    for _ in tabs:
        limits.admit(owner, "1.2.3.4")
    due = {name: 0.0 for name in tabs}
    seen = {name: {"frames": 0, "own_wait": 0.0, "share_wait": 0.0} for name in tabs}
    while min(due.values()) < seconds:
        name = min(due, key=due.get)
        now = due[name]
        own, share = limits.frame_waits(paces[name], owner, now)
        stats = seen[name]
        stats["frames"] += 1
        stats["own_wait"], stats["share_wait"] = max(stats["own_wait"], own), max(stats["share_wait"], share)
        handled = now + max(own, share)  # the socket is not read meanwhile
        due[name] = max(handled, now + 1 / tabs[name]) if tabs[name] != float("inf") else handled
    return seen


def test_a_tab_within_its_share_never_waits_for_another_tabs_flood():
    limits = Limits(frames_per_s=20, owner_frames_per_s=50, per_owner=10, per_address=10)
    seen = paced(limits, {"flood": float("inf"), "flood2": float("inf"), "gentle": 5.0}, seconds=30)
    assert seen["gentle"]["own_wait"] == seen["gentle"]["share_wait"] == 0  # never held back
    assert seen["gentle"]["frames"] >= 30 * 5
    assert seen["flood"]["own_wait"] > 0 and seen["flood2"]["own_wait"] > 0  # the floods are charged
    total = sum(s["frames"] for s in seen.values())
    assert total <= 50 * (30 + 2 * 2) + 3, total  # the workspace's rate (and burst) still holds


def test_tabs_each_under_their_rate_are_held_to_the_workspaces_rate_by_their_shares():
    limits = Limits(frames_per_s=20, owner_frames_per_s=50, per_owner=10, per_address=10)
    seen = paced(limits, {f"tab{k}": 19.0 for k in range(8)}, seconds=30)
    assert all(s["own_wait"] == 0 for s in seen.values())  # none over its own rate
    assert all(s["share_wait"] > 0 for s in seen.values())  # all over their shares: they wait
    total = sum(s["frames"] for s in seen.values())
    assert 50 * 30 <= total <= 50 * (30 + 2 * 2) + 8, total


async def test_a_tab_within_its_share_is_never_closed_while_another_of_its_owners_is(monkeypatch):
    monkeypatch.setattr(quanda.ws, "STRAINED_S", 0.5)
    limits = Limits(frames_per_s=1000, owner_frames_per_s=20, per_owner=5, per_address=5)
    loop = asyncio.get_running_loop()

    async def tab(frames: list[str], every_s: float):
        """A tab of alice's behind FrameGuard, sending a frame every `every_s` (0: as fast as it is read)."""
        incoming = [{"type": "websocket.receive", "text": f} for f in frames] + [{"type": "websocket.disconnect"}]
        sent, got = [], []

        async def receive():
            await asyncio.sleep(every_s)
            return incoming.pop(0)

        async def send(message):
            sent.append(message)

        async def app_(scope, receive_, send_):
            while (message := await receive_())["type"] == "websocket.receive":
                got.append(message["text"])
            got.append(message)

        limits.admit("alice", "1.2.3.4")
        await FrameGuard(app_, limits=limits)({"type": "websocket", OWNER_SCOPE: "alice"}, receive, send)
        return got, sent

    began = loop.time()
    (flooded, told_flood), (gentle, told_gentle) = await asyncio.gather(
        tab([json.dumps({"action": f"f{i}"}) for i in range(500)], 0.0),
        tab([json.dumps({"action": f"g{i}"}) for i in range(12)], 0.2))  # 5 a second: within its share of 10
    assert flooded[-1] == {"type": "websocket.disconnect", "code": 1008}  # the flood: held back, then closed
    assert told_flood[-1] == {"type": "websocket.close", "code": 1008}
    assert gentle[-1] == {"type": "websocket.disconnect"} and len(gentle) == 13  # every frame, not closed
    assert not [m for m in told_gentle if "slow down" in m.get("text", "")]  # never even held back
    assert loop.time() - began < 5
