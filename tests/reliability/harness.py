"""What the reliability suites share: the long/short switch, replayable seeds, readers that record every token
they were given, waits that fail with a message, the server's RSS, latency percentiles and the store checks
made on a database file while its server is dead.

Short variants run in the default `python -m pytest`; `QUANDA_RELIABILITY_LONG=1` runs the long ones.
`QUANDA_RELIABILITY_SEED=<n>` replays a randomised suite with the seed it printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import httpx
import websockets

from quanda.core import open_store, replay

FIELD_NOTICE = re.compile(r'<div[^>]*class="field-notice"[^>]*>(.*?)</div>', re.S)

LONG = os.environ.get("QUANDA_RELIABILITY_LONG", "") not in ("", "0")
TOKEN = "reliability-api-token"


def seeded(suite: str) -> random.Random:
    """A random generator whose seed is printed (and taken from QUANDA_RELIABILITY_SEED to replay a run)."""
    given = os.environ.get("QUANDA_RELIABILITY_SEED")
    seed = int(given) if given else random.SystemRandom().randrange(1 << 32)
    print(f"\n[{suite}] seed={seed} (replay: QUANDA_RELIABILITY_SEED={seed})", flush=True)
    return random.Random(seed)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; AssertionError naming `what` after `timeout` s.
    (For states with no event to wait on — a health endpoint, a file; everything else waits on its event.)"""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last seen: {last!r})")
        await asyncio.sleep(every)


def rss_mb(pid: int) -> float:
    """The process's resident set size, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def api_client(url: str, **kw: Any) -> httpx.AsyncClient:
    """The HTTP API as a script uses it (Bearer token: the local workspace)."""
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20, **kw)


async def browser_cookie(url: str) -> str:
    """A browser session's cookie (local mode: the machine's one workspace)."""
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:
        await client.get("/")
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


class Tab:
    """A browser tab's WebSocket (local mode: the machine's workspace) collecting every frame it gets."""

    def __init__(self, url: str, cookie: str, page: str | None = "simulator"):
        self.url, self.cookie, self.page = url, cookie, page
        self.frames: list[str] = []
        self.arrived = asyncio.Event()

    async def __aenter__(self) -> "Tab":
        self.ws = await websockets.connect(self.url.replace("http", "ws") + "/ws",
                                           additional_headers={"Cookie": self.cookie}, max_size=None)
        await self.send("view", page=self.page, streams={}, fresh=[])
        self.task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2)

    async def _collect(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed, OSError):
            async for frame in self.ws:
                self.frames.append(frame)
                self.arrived.set()

    async def send(self, action: str, **data) -> None:
        await self.ws.send(json.dumps({"action": action, **data}))

    def notices(self) -> list[str]:
        """What the frames said: the page's notice, and the notices shown by the form that was sent."""
        said = [re.sub(r"<[^>]+>", "", f) for f in self.frames if 'id="ws-notice"' in f]
        said += [re.sub(r"<[^>]+>", "", m) for f in self.frames for m in FIELD_NOTICE.findall(f)]
        return [s.strip() for s in said if s.strip()]

    async def wait_frame(self, pattern: str, timeout: float, what: str) -> re.Match:
        start = 0
        deadline = time.monotonic() + timeout
        while True:
            for i in range(start, len(self.frames)):
                if m := re.search(pattern, self.frames[i]):
                    return m
            start = len(self.frames)
            self.arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{what}: no frame within {timeout:g} s; notices: {self.notices()[-3:]}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)


# -- readers that record what they were given -------------------------------------------------------------------

@dataclass
class Ack:
    kind: str
    text: str
    estimate: str | None


@dataclass
class Acks:
    """Every token acknowledged to a client, per message: given to a reader, or returned to a writer."""

    tokens: dict[str, dict[int, Ack]] = field(default_factory=dict)
    count: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    problems: list[str] = field(default_factory=list)

    def add(self, message_id: str, seq: int, ack: Ack) -> None:
        known = self.tokens.setdefault(message_id, {})
        if seq in known and known[seq] != ack:
            self.problems.append(f"{message_id} seq {seq} acknowledged twice with different tokens: "
                                 f"{known[seq]} then {ack}")
        known[seq] = ack
        self.count += 1
        self.changed.set()

    def last(self, message_id: str) -> int:
        return max(self.tokens.get(message_id, {0: None}))

    async def wait_count(self, count: int, timeout: float) -> bool:
        """Until `count` acknowledgements in all; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.count < count:
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                return False
        return True


class SSEReader:
    """Follows a message's event stream from the last seq already acknowledged, recording each token; the
    stream must give consecutive seqs. Ends when the message is sealed, the server dies, or it is stopped."""

    def __init__(self, client: httpx.AsyncClient, message_id: str, acks: Acks):
        self.client, self.message_id, self.acks = client, message_id, acks
        self.sealed = False
        self.tokens: list[dict] = []
        self.task = asyncio.create_task(self._run(), name=f"sse-{message_id}")

    async def _run(self) -> None:
        after = self.acks.last(self.message_id)
        expected = after + 1
        try:
            async with self.client.stream("GET", f"/api/messages/{self.message_id}/events",
                                          headers={"Last-Event-ID": str(after)}, timeout=None) as stream:
                if stream.status_code != 200:
                    self.acks.problems.append(f"events of {self.message_id}: HTTP {stream.status_code}")
                    return
                async for line in stream.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    token = json.loads(line[6:])
                    if token["seq"] != expected:
                        self.acks.problems.append(f"{self.message_id}: the stream gave seq {token['seq']} "
                                                  f"after {expected - 1}")
                    expected = token["seq"] + 1
                    self.tokens.append(token)
                    self.acks.add(self.message_id, token["seq"], Ack(token["kind"], token["text"],
                                                                     token["estimate"]))
                    if token["kind"] == "immutable":
                        self.sealed = True
        except (httpx.HTTPError, OSError):
            pass  # the server went away: what was read stays acknowledged

    async def wait(self, timeout: float, what: str = "") -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except TimeoutError:
            raise AssertionError(f"{what or 'stream'} {self.message_id} did not end within {timeout:g} s; last "
                                 f"tokens: {self.tokens[-3:]}") from None

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def wait_token(client: httpx.AsyncClient, message_id: str, test: Callable[[dict, dict], bool],
                     timeout: float, what: str) -> dict:
    """The message's state once a token passing `test(token, state)` is in its log (checked on the current
    state first, then on every token as it comes)."""
    try:
        async with asyncio.timeout(timeout):
            state = (await client.get(f"/api/messages/{message_id}")).json()
            if test({}, state):
                return state
            async with client.stream("GET", f"/api/messages/{message_id}/events",
                                     headers={"Last-Event-ID": str(state["last_seq"])}, timeout=None) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        token = json.loads(line[6:])
                        state = _advance(state, token)
                        if test(token, state):
                            return state
    except TimeoutError:
        pass
    state = (await client.get(f"/api/messages/{message_id}")).json()
    raise AssertionError(f"{what} ({message_id}): not within {timeout:g} s; state {short(state)}")


def _advance(state: dict, token: dict) -> dict:
    kind, text = token["kind"], token["text"]
    state = {**state, "last_seq": token["seq"]}
    if kind == "chunk":
        return {**state, "content": state["content"] + text, "estimate": token["estimate"]}
    if kind == "override":
        return {**state, "content": text, "estimate": None}
    if kind == "warning":
        return {**state, "warning": text}
    return {**state, "immutable": True, "warning": "", "estimate": None}


def short(state: dict) -> dict:
    return {**state, "content": (state.get("content") or "")[-80:]}


# -- the database file, checked while no server runs ----------------------------------------------------------

def integrity(db_path: str) -> str:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


async def all_tokens(store: Any, message_id: str) -> list:
    tokens, after = [], 0
    while True:
        page = await store.select_tokens(message_id, gt=after, limit=5000)
        if not page:
            return tokens
        tokens += page
        after = page[-1].seq


async def check_store(db_url: str, acks: Acks) -> dict:
    """Every message's stored state equals `replay` of its log, seqs are 1..n without a gap, and every token
    acknowledged to a client is in the log at its seq. Returns {message id: its tokens}."""
    store = await open_store(db_url)
    logs: dict[str, list] = {}
    problems: list[str] = []
    try:
        for record in await store.select_messages(limit=100_000):
            tokens = await all_tokens(store, record.id)
            logs[record.id] = tokens
            seqs = [t.seq for t in tokens]
            if seqs != list(range(1, len(seqs) + 1)):
                problems.append(f"{record.id}: seqs are not 1..n: {seqs[:5]}…{seqs[-5:]}")
            state = replay(tokens)
            stored = (record.content, record.estimate, record.warning, record.immutable, record.last_seq)
            replayed = (state.content, state.estimate, state.warning, state.immutable, state.last_seq)
            if stored != replayed:
                problems.append(f"{record.id} ({record.role}): stored state {stored!r:.200} differs from the "
                                f"replay of its log {replayed!r:.200}")
        for message_id, acked in acks.tokens.items():
            log = {t.seq: t for t in logs.get(message_id, [])}
            for seq, ack in sorted(acked.items()):
                token = log.get(seq)
                if token is None or (token.kind, token.text, token.estimate) != (ack.kind, ack.text, ack.estimate):
                    problems.append(f"{message_id}: acknowledged seq {seq} {ack} is "
                                    f"{'lost' if token is None else f'now {token}'}")
                    break
    finally:
        await store.close()
    assert not problems, "\n".join(problems[:20])
    return logs
