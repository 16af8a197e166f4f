"""Protocol abuse against the real server (accounts mode: the abuser and the others are different users).

- Bad WebSocket frames: not JSON, binary, nested too deep, 64 KiB + 1 byte, not an object, unknown actions,
  every field of every action with values of every wrong type, `follow` with thousands of stream ids or seqs
  that are negative, huge or not numbers. Each frame gets a clear, bounded answer (a notice) or, where the
  action legitimately says nothing, none; the connection stays up; the server logs no traceback.
- One connection flooding (1,000 frames/s for 10 s; 3 s in the short variant) and 500 connections opened at
  once by one client: the per-connection and per-owner frame rates and the connection caps hold (their
  numbers: app/config.py, README), the server's RSS stays bounded, and another user's round trips keep a p99
  within 2× of the same measurement with no abuse going on.
- The HTTP API: malformed, oversized, deeply nested bodies, wrong content types, every route with every wrong
  method: a status that says what is wrong, a short JSON error for the API, never a traceback.

Long variant: QUANDA_RELIABILITY_LONG=1 (the full flood, every wrong value for every field)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import re
import subprocess
import sys
import threading
import time
from typing import Any, Awaitable

import httpx
import pytest
import websockets

from quanda.serve import WS_MAX_SIZE
from tests.llm_server import LLMTestServer, Reply
from quanda.config import Settings
from quanda.ratelimit import BURST_S, HANDSHAKE_BURST_S, STRAINED_S
from tests.reliability.harness import LONG, percentile, rss_mb
from tests.servers import ACCOUNTS, ROOT, AppServer, add_user, login

pytestmark = pytest.mark.reliability
USERS = itertools.count()
ANSWER_TIMEOUT = 20
FLOOD_S = 10 if LONG else 3
PROBE_S = 10 if LONG else 3
NOTICE_LIMIT = 600  # characters a notice may have: what was sent is never echoed at length


@pytest.fixture(scope="module")
def llm():
    with LLMTestServer(Reply(chunks=["ok"])) as server:
        yield server


def start_server(tmp_path, llm, **env) -> AppServer:
    return AppServer(tmp_path, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test", **ACCOUNTS, **env).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory, llm):
    server = start_server(tmp_path_factory.mktemp("abuse"), llm)
    yield server
    server.stop()
    assert "Traceback" not in server.log_text(), server.log_text()[-6000:]


async def user(server) -> str:
    name = f"user{next(USERS)}"
    await asyncio.to_thread(add_user, server, name)
    return await login(server, name)


def ws_url(server) -> str:
    return server.url.replace("http", "ws") + "/ws"


class Socket:
    """A WebSocket whose every answer is read up to a probe: all a frame caused has arrived once the probe
    sent after it is answered (the server handles one frame of a socket at a time)."""

    probes = itertools.count()

    def __init__(self, ws):
        self.ws = ws

    async def answers_to(self, frame: str | bytes) -> list[str]:
        probe = f"probe-{next(self.probes)}"
        await self.ws.send(frame)
        await self.ws.send(json.dumps({"action": probe}))
        got: list[str] = []
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                while True:
                    answer = await self.ws.recv()
                    if f"unknown action '{probe}'" in answer:
                        return got
                    got.append(answer)
        except TimeoutError:
            raise AssertionError(f"no answer to the probe after {str(frame)[:80]!r} within {ANSWER_TIMEOUT} s; "
                                 f"got {[a[:100] for a in got]}") from None


def notices(answers: list[str]) -> list[str]:
    """What the frames said: the page's notice, and the notices plugins show by the form that was sent."""
    said = [re.sub(r"<[^>]+>", "", a) for a in answers if 'id="ws-notice"' in a]
    said += [re.sub(r"<[^>]+>", "", m) for a in answers for m in FIELD_NOTICE.findall(a)]
    return [s.strip() for s in said if s.strip()]


FIELD_NOTICE = re.compile(r'<div[^>]*class="field-notice"[^>]*>(.*?)</div>', re.S)


# -- bad frames -------------------------------------------------------------------------------------------------

def nested(depth: int) -> str:
    return '{"action": "view", "x": ' + "[" * depth + "]" * depth + "}"


BAD_FRAMES = [
    ("not JSON", "hello", r"malformed message \(not JSON\)"),
    ("truncated JSON", '{"action": "view"', r"malformed message \(not JSON\)"),
    ("binary", b"\x00\x01binary", r"binary frames are not accepted"),
    ("nested 33 deep", nested(33), r"nested more than 32"),
    ("nested 100,000 deep", "[" * 100_000, r"nested more than 32|too large"),
    ("64 KiB + 1 byte", None, r"message too large \(65537 bytes; at most 65536\)"),
    ("an array", "[1, 2, 3]", r"expected a JSON object"),
    ("a string", '"action"', r"expected a JSON object"),
    ("null", "null", r"expected a JSON object"),
    ("a number", "1e999", r"expected a JSON object|malformed"),
    ("no action", "{}", r"message without an action"),
    ("unknown action", '{"action": "launch_missiles"}', r"unknown action 'launch_missiles'"),
    ("huge unknown action", json.dumps({"action": "x" * 60_000}), r"unknown action 'x{40}'"),
    ("action a number", '{"action": 7}', r"unknown action|without an action"),
    ("action a list", '{"action": ["view"]}', r"unknown action|without an action"),
    ("action null", '{"action": null}', r"without an action"),
    ("lone surrogate", '{"action": "todo.add", "name": "\\ud800"}', r"."),
    ("NaN", '{"action": "follow", "streams": {"0123456789abcdef01234567": NaN}}', r"bad seq|malformed"),
    ("follow 10,000 ids", json.dumps({"action": "follow", "streams": {f"{i:024x}": 0 for i in range(10_000)}}),
     r"message too large"),
    ("follow 1,500 ids", json.dumps({"action": "follow", "streams": {f"{i:x}": 0 for i in range(1_500)}}),
     r"too many streams"),
    ("follow, seq negative", '{"action": "follow", "streams": {"0123456789abcdef01234567": -1}}', r"bad seq"),
    ("follow, seq huge", '{"action": "follow", "streams": {"0123456789abcdef01234567": 1e300}}', r"bad seq"),
    ("follow, seq 2**64", '{"action": "follow", "streams": {"0123456789abcdef01234567": 18446744073709551616}}',
     r"bad seq"),
    ("follow, seq text", '{"action": "follow", "streams": {"0123456789abcdef01234567": "7"}}', r"bad seq"),
    ("follow, seq a list", '{"action": "follow", "streams": {"0123456789abcdef01234567": [1]}}', r"bad seq"),
    ("follow, unknown id", '{"action": "follow", "streams": {"0123456789abcdef01234567": 0}}', r"no stream"),
    ("follow, id not hex", '{"action": "follow", "streams": {"<script>": 0}}', r"no stream"),
    ("follow, streams a list", '{"action": "follow", "streams": ["0123456789abcdef01234567"]}', r"follow needs"),
]

# every field of every action, with values of every wrong type
FIELDS = {
    "view": ["page", "streams", "fresh"],
    "follow": ["streams"],
    "chat.draft": ["text", "turn"],
    "chat.send": ["text", "turn", "model"],
    "chat.stop": ["message_id"],
    "chat.retry": ["message_id"],
    "todo.add": ["name"],
    "todo.toggle": ["id"],
    "todo.edit": ["id", "name"],
    "todo.delete": ["id"],
    "todo.move": ["id", "direction"],
    "sim.start": ["chunks", "delay_min", "delay_max"],
    "sim.stop": ["message_id"],
}
WRONG = [None, True, 0, -1, 1.5, 2 ** 70, "", "x" * 5000, [], [1, "a"], {}, {"a": {"b": 1}}, "\u202e\u0000",
         "0123456789abcdef01234567"]


def wrong_values() -> list:
    return WRONG if LONG else [None, True, -1, 2 ** 70, "x" * 5000, [1, "a"], {"a": {"b": 1}}]


async def test_bad_frames_get_a_clear_bounded_answer_and_the_socket_stays_up(server):
    async with websockets.connect(ws_url(server), additional_headers={"Cookie": await user(server)},
                                  max_size=None) as ws:
        sock = Socket(ws)
        for what, frame, expected in BAD_FRAMES:
            if frame is None:  # exactly one byte over the limit
                frame = json.dumps({"action": "view", "pad": ""})
                frame = frame[:-2] + "x" * (65537 - len(frame)) + '"}'
                assert len(frame.encode()) == 65537
            said = [n for n in notices(await sock.answers_to(frame)) if not n.startswith("slow down")]
            assert len(said) == 1 and re.search(expected, said[0]), f"{what}: {said}"
            assert len(said[0]) < NOTICE_LIMIT, f"{what}: a notice of {len(said[0])} characters"
        # beyond what the transport reads at all (quanda.serve.WS_MAX_SIZE), the socket is closed: 1009, message too big
        await ws.send(json.dumps({"action": "view", "pad": "x" * WS_MAX_SIZE}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_wrong_types_in_every_field_of_every_action(tmp_path, llm):
    server = start_server(tmp_path, llm, QUANDA_WS_FRAMES_PER_S="10000", QUANDA_WS_OWNER_FRAMES_PER_S="10000")
    checked = 0
    try:
        async with websockets.connect(ws_url(server), additional_headers={"Cookie": await user(server)},
                                      max_size=None) as ws:
            sock = Socket(ws)
            for action, fields in FIELDS.items():
                for field in fields:
                    for value in wrong_values():
                        frame = json.dumps({"action": action, field: value})
                        answers = await sock.answers_to(frame)
                        for said in notices(answers):
                            assert len(said) < NOTICE_LIMIT, f"{action} {field}={value!r:.40}: {said[:200]}…"
                        checked += 1
        log = server.log_text()
        assert "Traceback" not in log, log[log.index("Traceback") - 500:][:5000]
    finally:
        server.stop()
    print(f"\n[abuse] {checked} frames with a wrong type in a field: each answered, the socket up")


# -- floods: rate limits, memory, the others' round trips -------------------------------------------------------

class RSS:
    """The server's RSS sampled every 50 ms from /proc while it is watched."""

    def __init__(self, pid: int):
        self.pid, self.samples = pid, []
        self._stop = threading.Event()

    def __enter__(self) -> "RSS":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(rss_mb(self.pid))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> float:
        return max(self.samples, default=0.0)


class Others:
    """Other users' tabs, opened before any abuse starts (on loopback every client shares one address): each
    asks `rate` times a second for a small answer (an unknown action's notice); `measure` returns the round
    trips in seconds."""

    def __init__(self, server, cookies: list[str], tabs: int = 3, rate: float = 12.0):
        self.server, self.cookies, self.tabs, self.rate = server, cookies, tabs, rate

    async def __aenter__(self) -> "Others":
        self.sockets = [await websockets.connect(ws_url(self.server), additional_headers={"Cookie": cookie})
                        for cookie in self.cookies for _ in range(self.tabs)]
        return self

    async def __aexit__(self, *exc) -> None:
        for ws in self.sockets:
            await ws.close()

    async def measure(self, seconds: float) -> list[float]:
        return [latency for _at, latency in await self.timed(seconds)]

    async def timed(self, seconds: float) -> list[tuple[float, float]]:
        """(when it was asked, its round trip in seconds) for every probe."""
        samples: list[tuple[float, float]] = []

        async def tab(k: int, ws) -> None:
            start, n = time.monotonic(), 0
            while time.monotonic() - start < seconds:
                probe = f"rt-{k}-{n}"
                asked, sent = time.monotonic(), time.perf_counter()
                await ws.send(json.dumps({"action": probe}))
                try:
                    async with asyncio.timeout(ANSWER_TIMEOUT):
                        while probe not in await ws.recv():
                            pass
                except TimeoutError:
                    raise AssertionError(f"another user's probe unanswered within {ANSWER_TIMEOUT} s") from None
                samples.append((asked, time.perf_counter() - sent))
                n += 1
                await asyncio.sleep(max(0.0, start + n / self.rate - time.monotonic()))  # pacing the probes

        await asyncio.gather(*(tab(k, ws) for k, ws in enumerate(self.sockets)))
        return samples


class Abuse:
    """The abusive client in a process of its own, at the lowest CPU priority (on a machine of its own its work
    would not slow the server down, only what it sends would). `events[name]` is set when it says `name`."""

    def __init__(self, mode: str, server, cookie: str, *args: str):
        self.command = ("nice", "-n", "19", sys.executable, "-m", "tests.reliability.abuser", mode, server.url,
                        cookie, *args)
        self.events: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.said: dict[str, dict] = {}

    async def run(self) -> dict:
        proc = await asyncio.create_subprocess_exec(*self.command, cwd=ROOT, stdout=subprocess.PIPE)
        lines = []
        async with asyncio.timeout(120):
            while line := await proc.stdout.readline():
                lines.append(line.decode())
                said = json.loads(lines[-1])
                if "event" in said:
                    self.said[said["event"]] = said
                    self.events[said["event"]].set()
            assert await proc.wait() == 0, lines
        return json.loads(lines[-1])

    async def when(self, event: str, then: Awaitable) -> Any:
        """`then`, started once the abuser says `event`."""
        async with asyncio.timeout(60):
            await self.events[event].wait()
        return await then


def ms(values: list[float]) -> str:
    return f"p50 {percentile(values, 50) * 1000:.1f} ms, p99 {percentile(values, 99) * 1000:.1f} ms (n={len(values)})"


@pytest.fixture
async def others(server):
    """Two other users' tabs (opened before any abuse: on loopback every client shares one address)."""
    async with Others(server, [await user(server), await user(server)]) as tabs:
        await tabs.measure(1.0)  # warm up
        yield tabs


ATTEMPTS = 3


async def under_abuse(server, others: Others, memory_mb: float, mode: str, *args: str) -> list[dict]:
    """The others' round trips with no abuse, then while `abuser.py mode args` floods, and the server's RSS; the
    pair is measured again (up to ATTEMPTS times) while the p99 under abuse is over 2× the idle one — on a
    shared machine other processes' load comes and goes, a server slowed by the abuse is slow every time.
    Every attempt's figures are printed; the abuser's results are returned for the caller's checks."""
    results, figures = [], []
    for attempt in range(1, ATTEMPTS + 1):
        idle = await others.measure(PROBE_S)
        rss_idle = rss_mb(server.proc.pid)
        abuser = Abuse(mode, server, await user(server), *args)
        with RSS(server.proc.pid) as rss:
            result, during = await asyncio.gather(abuser.run(),
                                                  abuser.when("flooding", others.measure(min(PROBE_S, FLOOD_S))))
        results.append(result)
        figures.append(f"attempt {attempt}: others' round trips idle {ms(idle)}, during {ms(during)}; "
                       f"RSS idle {rss_idle:.0f} MB, peak {rss.peak:.0f} MB")
        print(f"\n[abuse] {mode} {' '.join(args)}: {result}\n[abuse] {figures[-1]}")
        assert rss.peak - rss_idle < memory_mb, figures[-1]
        if percentile(during, 99) <= 2 * percentile(idle, 99):
            return results
    raise AssertionError("others' p99 over 2× the idle one under abuse:\n" + "\n".join(figures))


async def test_one_connection_flooding_is_held_to_its_rate(server, others):
    rate = Settings().ws_frames_per_s
    for flooded in await under_abuse(server, others, 50, "flood", "--rate", "1000", "--seconds", str(FLOOD_S)):
        assert flooded["answered_during"] <= (BURST_S + flooded["seconds"]) * rate * 1.05 + 2, flooded
        assert flooded["slow_down"] >= 1, flooded  # the client was told
        assert flooded["largest_answer"] < 1000, flooded


async def test_one_owner_flooding_from_several_connections_is_held_to_the_owners_rate(server, others):
    per_socket, owner_rate = Settings().ws_frames_per_s * 0.95, Settings().ws_owner_frames_per_s
    sockets = 8  # each under its own rate, together far over the owner's
    assert sockets * per_socket > 2 * owner_rate
    for flooded in await under_abuse(server, others, 50, "flood", "--rate", str(per_socket), "--sockets",
                                     str(sockets), "--seconds", str(FLOOD_S)):
        assert flooded["answered_during"] <= (BURST_S + flooded["seconds"]) * owner_rate * 1.05 + sockets, flooded
        assert flooded["sent"] > flooded["answered_during"] * 1.3, flooded  # the owner's limit did hold them


async def test_a_tab_under_its_share_is_never_closed_for_its_workspaces_other_tabs_flooding(server):
    """Three tabs of one workspace flood (1,000 frames/s each) for longer than a tab may stay held back; a
    fourth tab of the same workspace, at 5 a second, is charged none of it: none of its frames is held back
    (it is never told to slow down), it is answered all along and never closed, while the flooders are held to
    the workspace's rate. (Before the workspace's rate was shared fairly, the gentle tab's frames waited
    behind the flood, and it could be the one closed.)"""
    cookie = await user(server)
    flood_s = STRAINED_S + 3

    async def gentle_tab(seconds: float) -> tuple[list[float], list[str]]:
        """A tab of the same workspace asking 5 times a second: its round trips, and what it was told."""
        trips, told = [], []
        async with websockets.connect(ws_url(server), additional_headers={"Cookie": cookie}) as ws:
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                probe, sent = f"gentle-{len(trips)}", time.perf_counter()
                await ws.send(json.dumps({"action": probe}))
                async with asyncio.timeout(ANSWER_TIMEOUT):
                    while probe not in (frame := await ws.recv()):
                        told.append(frame)
                trips.append(time.perf_counter() - sent)
                await asyncio.sleep(max(0.0, start + len(trips) / 5 - time.monotonic()))
        return trips, told

    abuser = Abuse("flood", server, cookie, "--rate", "1000", "--sockets", "3", "--seconds", str(flood_s))
    flooded, (during, told) = await asyncio.gather(abuser.run(), abuser.when("flooding", gentle_tab(flood_s)))
    print(f"\n[abuse] the gentle tab's round trips while its workspace's other tabs flood {ms(during)}; "
          f"the flood: {flooded}")
    assert not [t for t in told if "slow down" in t or "closed" in t], told[:3]  # never held back
    assert len(during) >= 5 * (flood_s - 1), len(during)  # answered all along, at its pace, and not closed
    owner_rate = Settings().ws_owner_frames_per_s  # the flooders are charged: held to the workspace's rate
    assert flooded["answered_during"] <= (BURST_S + flooded["seconds"]) * owner_rate * 1.05 + 3, flooded


async def test_500_connections_at_once_are_capped(server, others):
    """500 handshakes at once cost the server ~0.3 ms each in uvicorn and websockets before the app can refuse
    one (some 150-200 ms of its event loop, all told, on this machine): the others' round trips are held up
    by that much once, while the burst is handled — a figure, bounded here. While what was accepted stays
    open, their p99 is within 2× of idle (measured again while over, as for the floods)."""
    cap = Settings().ws_max_per_owner
    burst = Settings().ws_handshakes_per_s * HANDSHAKE_BURST_S
    figures = []
    for attempt in range(1, ATTEMPTS + 1):
        idle = await others.measure(PROBE_S)
        rss_idle = rss_mb(server.proc.pid)
        abuser = Abuse("connections", server, await user(server), "--count", "500", "--hold", str(PROBE_S))
        with RSS(server.proc.pid) as rss:
            opened, samples = await asyncio.gather(abuser.run(), abuser.when("connecting", others.timed(PROBE_S)))
        outcomes = opened["outcomes"]
        assert outcomes.get("open", 0) <= cap, opened
        assert outcomes.get("open", 0) + outcomes.get("closed 1013", 0) >= burst - 10, opened
        assert set(outcomes) <= {"open", "closed 1013", "refused at handshake: 429"}, opened  # each told, clearly
        assert sum(outcomes.values()) == 500
        assert all("too many" in reason for reason in opened["reasons"]), opened["reasons"]
        assert rss.peak - rss_idle < 100, (rss.peak, rss_idle)
        first = samples[0][0]
        over = first + abuser.said["settled"]["after_s"]  # every handshake answered
        during_burst = [latency for at, latency in samples if at <= over]
        while_held = [latency for at, latency in samples if at > over]
        figures.append(f"attempt {attempt}: {opened}; others' round trips idle {ms(idle)}, during the burst "
                       f"{ms(during_burst)} (max {max(during_burst) * 1000:.0f} ms), while {outcomes.get('open', 0)} "
                       f"stay open {ms(while_held)}; RSS idle {rss_idle:.0f} MB, peak {rss.peak:.0f} MB")
        print(f"\n[abuse] {figures[-1]}")
        assert max(during_burst) < 1.0, figures[-1]  # held up once, briefly: never stuck
        if len(while_held) >= 50 and percentile(while_held, 99) <= 2 * percentile(idle, 99):
            return
    raise AssertionError("others' p99 over 2× the idle one while the connections stay open:\n" + "\n".join(figures))


async def test_connections_per_owner_and_per_address_are_capped(tmp_path, llm):
    server = start_server(tmp_path, llm, QUANDA_WS_MAX_PER_OWNER="3", QUANDA_WS_MAX_PER_ADDRESS="5")
    try:
        alice, bob = await user(server), await user(server)

        async def connect(cookie):
            """The socket and its first frame: the answer to a hello, or the notice of a refusal."""
            ws = await websockets.connect(ws_url(server), additional_headers={"Cookie": cookie})
            with contextlib.suppress(websockets.ConnectionClosed):  # a refused one is closed already
                await ws.send(json.dumps({"action": "hello"}))
            return ws, await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT)

        async def refused(cookie, why):
            ws, said = await connect(cookie)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT)
            assert closed.value.rcvd.code == 1013 and re.search(why, said), said

        tabs = [await connect(alice) for _ in range(3)]
        assert all("unknown action 'hello'" in said for _ws, said in tabs)
        await refused(alice, r"too many open tabs \(3 at most\)")
        tabs += [await connect(bob) for _ in range(2)]
        await refused(bob, r"too many connections from your address \(5 at most\)")
        await tabs.pop(0)[0].close()  # one of alice's closes: a tab of hers connects again
        async with asyncio.timeout(ANSWER_TIMEOUT):
            while True:  # the server notices the close a moment later
                ws, said = await connect(alice)
                if "unknown action 'hello'" in said:
                    break
                await ws.close()
        tabs.append((ws, said))
        for ws, _said in tabs:
            await ws.close()
    finally:
        server.stop()


# -- the HTTP API -----------------------------------------------------------------------------------------------

ROUTES = {  # path: the methods it answers
    "/": {"GET", "HEAD"}, "/p/todo": {"GET", "HEAD"}, "/login": {"GET", "HEAD", "POST"}, "/logout": {"POST"},
    "/-/plugins": {"GET", "HEAD"}, "/-/health": {"GET", "HEAD"},
    "/api/messages": {"POST"}, "/api/messages/{id}": {"GET", "HEAD"}, "/api/messages/{id}/tokens": {"POST"},
    "/api/messages/{id}/immutable": {"POST"}, "/api/messages/{id}/events": {"GET", "HEAD"},
    "/api/messages/{id}/answer": {"POST"},
}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def test_every_route_with_every_wrong_method_and_bad_bodies(server):
    cookie = await user(server)
    async with httpx.AsyncClient(base_url=server.url, headers={"Cookie": cookie, "Origin": server.url},
                                 timeout=20) as client:
        mid = (await client.post("/api/messages", json={"role": "q", "content": "hi"})).json()["id"]
        for route, allowed in ROUTES.items():
            path = route.replace("{id}", mid)
            for method in METHODS:
                if method in allowed:
                    continue
                r = await client.request(method, path)
                assert r.status_code == 405, f"{method} {path}: {r.status_code} {r.text[:200]}"
                assert len(r.content) < 300 and "Traceback" not in r.text
                assert r.headers.get("allow"), (method, path)
                if path.startswith("/api/"):
                    assert r.headers["content-type"].startswith("application/json"), (method, path, r.text[:200])
                    assert method == "HEAD" or "error" in r.json(), r.text
        paths = ("/api/messages", f"/api/messages/{mid}/tokens", f"/api/messages/{mid}/answer")
        bodies = [  # (paths, content type, body, status, what the error says)
            (paths, "application/json", b"{not json", 400, "JSON"),
            (paths, "application/json", b"\xff\xfe\x00", 400, "UTF-8|JSON"),
            (paths, "application/json", b"[]", 400, "object"),
            (paths, "application/json", b'"role"', 400, "object"),
            (paths, "application/json", b"[" * 50 + b"]" * 50, 400, "nested"),
            (paths, "application/json", b"x" * ((2 << 20) + 1), 413, "over"),
            (paths, "text/plain", b'{"role": "q"}', 415, "JSON"),
            (paths, "application/x-www-form-urlencoded", b"role=q", 415, "JSON"),
            (paths, "multipart/form-data; boundary=x", b"--x\r\n\r\n--x--", 415, "JSON"),
            (paths, "application/json; charset=utf-16", '{"role": "q"}'.encode("utf-16"), 400, "UTF-8|JSON"),
            (paths[:1], "application/json", json.dumps({"role": 5}).encode(), 400, "role"),
            (paths[:1], "application/json", json.dumps({"role": "q", "content": ["x"]}).encode(), 400, "content"),
            (paths[1:2], "application/json", json.dumps({"kind": "chunk", "text": 5}).encode(), 400, "text"),
            (paths[1:2], "application/json", json.dumps({"kind": "immutable"}).encode(), 400, "kind"),
            (paths[2:], "application/json", json.dumps({"model": {"$ne": 1}}).encode(), 400, "model"),
        ]
        for on, content_type, body, status, says in bodies:
            for path in on:
                r = await client.post(path, content=body, headers={"Content-Type": content_type})
                assert r.status_code == status, f"{path} {content_type} {body[:40]!r}: {r.status_code} {r.text[:200]}"
                assert re.search(says, r.json()["error"]), r.text
                assert len(r.content) < 400
        # a declared length over the limit is refused before the body is read
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"POST /api/messages HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nCookie: {cookie}\r\n"
                     f"Origin: {server.url}\r\nContent-Type: application/json\r\nContent-Length: {3 << 20}\r\n\r\n"
                     "{".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n"), ANSWER_TIMEOUT)
        assert head.startswith(b"HTTP/1.1 413"), head
        writer.close()
        for bad_id in ("nope", "0" * 24, "<script>", "%00", "a" * 5000):
            r = await client.get(f"/api/messages/{bad_id}")
            assert r.status_code in (404, 414) and len(r.content) < 400, (bad_id[:20], r.status_code, r.text[:200])
        r = await client.get(f"/api/messages/{mid}/events", headers={"Last-Event-ID": "-1"})
        assert r.status_code == 400 and "Last-Event-ID" in r.json()["error"]
