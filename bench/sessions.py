"""Browser-like WebSocket sessions for the benchmarks: what a tab of the page does, without a browser.

A session is one tab of one owner (`bench.common.new_owners`): it connects to /ws with the owner's Cookie and
Origin (permessage-deflate negotiated, as browsers do), says which page it shows (`view`, what static/quanda.js
sends when the socket opens) and, whenever a frame brings a stream marker to follow (`data-follow`: a new answer
bubble, a simulator run), says `view` again with it as quanda.js does, so the server follows the stream from
the marker's seq. Actions go as the page's forms send them (`chat.send`, `todo.add`, `sim.start` …). Every
frame is kept with its arrival time (CLOCK_MONOTONIC, the clock of the LLM server's send stamps).

Errors a session counts: the page notice (`#ws-notice`, kind error), a form's notice with text in it
(`.field-notice`: a refused action), a socket that closes under it, and an awaited result that does not come.

- `ChatSession` asks a question and records, for its answer, when each token (`Q<base-36 index>`, see
  `bench.common.mixed_chunks`) first reached it (`deliveries`); `rebuilt_answer` replays its frames with
  htmx's swaps (`bench.page`) to show what the page holds at the end.
- `TodoSession` adds, toggles, edits and deletes todos at a steady rate, timing each action until the frame
  that shows its result.
- `SimSession` starts a stream-simulator run and waits for it to finish.
- `ping_plugin()` adds the ws action `bench.ping` to a bench's server: a round trip, handled after every frame
  the tab sent before it (Starlette takes one frame per socket at a time), so a bench knows a `view` was done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

from bench.common import answer_end_re, answer_over_re, token_ids
from bench.page import MessageFrames

# (FT writes an element's attributes in no order to rely on: every pattern looks ahead for each one)
MARKER_RE = re.compile(rb'<span(?=[^>]*data-follow)(?=[^>]*data-stream="([0-9a-f]+)")(?=[^>]*data-seq="(\d+)")')
ERROR_NOTICE_RE = re.compile(rb'<div(?=[^>]*id="ws-notice")(?=[^>]*class="notice error")[^>]*><span[^>]*>(.*?)</span>',
                             re.S)
ANSWER_RE = re.compile(rb'<li(?=[^>]*class="msg assistant")(?=[^>]*id="msg-([0-9a-f]+)")')
FIELD_NOTICE_RE = re.compile(rb'<div[^>]*class="field-notice"[^>]*>([^<]+)</div>')
PONG = b'id="bench-pong"'


def ping_plugin():
    """A plugin with one ws action, `bench.ping`: answers `<div id="bench-pong">`."""
    from fasthtml.common import Div

    from quanda.api import Plugin

    async def on_ping(h, data: dict) -> None:
        await h.send(Div(id="bench-pong"))

    return Plugin(name="bench", label="Bench", order=999, ws_handlers={"bench.ping": on_ping})


class Session:
    """One tab: a WebSocket showing `page`, following the streams its frames bring, keeping every frame."""

    def __init__(self, base: str, headers: dict[str, str], page: str = "todo", deflate: bool = True):
        self.base, self.headers, self.page, self.deflate = base, headers, page, deflate
        self.frames: list[tuple[int, bytes]] = []  # (arrival ns, payload)
        self.errors: list[str] = []
        self.streams: dict[str, int] = {}  # the stream markers the page got: {message id: seq}
        self.arrived = asyncio.Event()
        self.closed = False
        self._reader: asyncio.Task | None = None

    async def open(self) -> "Session":
        import websockets

        self.ws = await websockets.connect(self.base.replace("http", "ws", 1) + "/ws", additional_headers=self.headers,
                                           max_size=None, open_timeout=30,
                                           **({} if self.deflate else {"compression": None}))
        self._reader = asyncio.create_task(self._read())
        await self.send("view", page=self.page, streams={}, fresh=[])
        return self

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self.closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)

    async def __aenter__(self) -> "Session":
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def send(self, action: str, **data: Any) -> None:
        await self.ws.send(json.dumps({"action": action, **data}))

    async def _read(self) -> None:
        import websockets

        try:
            while True:
                raw = await self.ws.recv(decode=False)
                now = time.monotonic_ns()
                self.frames.append((now, raw))
                if b"notice" in raw:
                    self.errors += [f"notice: {m.decode(errors='replace')[:200]}" for m in ERROR_NOTICE_RE.findall(raw)]
                    self.errors += [f"refused: {m.decode(errors='replace').strip()[:200]}"
                                    for m in FIELD_NOTICE_RE.findall(raw) if m.strip()]
                fresh = {m.group(1).decode(): int(m.group(2)) for m in MARKER_RE.finditer(raw)} \
                    if b"data-follow" in raw else {}
                self.on_frame(raw, now)
                if fresh:  # what quanda.js does after a swap that brought streams to follow
                    self.streams.update(fresh)
                    await self.send("view", page=self.page, streams=self.streams, fresh=list(fresh))
                    self.on_followed(fresh)
                self.arrived.set()
        except websockets.ConnectionClosed as exc:
            if not self.closed:
                self.errors.append(f"the socket closed: {exc}")
            self.closed = True
            self.arrived.set()

    def on_frame(self, raw: bytes, now: int) -> None:
        """Called for every frame, before its streams are followed."""

    def on_followed(self, fresh: dict[str, int]) -> None:
        """Called once the page has asked to follow these streams."""

    async def wait_frame(self, pattern: re.Pattern, start: int, timeout: float, what: str) -> re.Match:
        """The first match of `pattern` in a frame that arrived after the first `start` ones."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(start, len(self.frames)):
                if m := pattern.search(self.frames[i][1]):
                    return m
            start = len(self.frames)
            if self.closed:
                raise TimeoutError(f"{what}: the socket closed first")
            self.arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{what}: no frame within {timeout:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    async def ping(self, timeout: float = 30) -> None:
        """A round trip through the server's `bench.ping` (see `ping_plugin`)."""
        start = len(self.frames)
        await self.send("bench.ping")
        await self.wait_frame(re.compile(re.escape(PONG)), start, timeout, "bench.ping")


class ChatSession(Session):
    """A tab that asks one question at a time and follows the answer like the page does."""

    def __init__(self, base: str, headers: dict[str, str], page: str = "todo", deflate: bool = True):
        super().__init__(base, headers, page, deflate)
        self.answer_id: str | None = None
        self.followed = asyncio.Event()  # the page asked to follow the answer
        self.done = asyncio.Event()  # the answer ended (tail emptied, actions shown)
        self.tokens = 0
        self.top = -1  # the highest token index seen in the answer's frames
        self.deliveries: list[tuple[int, int, int]] = []  # (first index, last index, arrival ns)
        self.first_frame = 0  # index in `frames` of the answer's bubble

    async def ask(self, text: str, tokens: int) -> None:
        """Send a question as the chat form does; its answer is expected to hold `tokens` tokens."""
        self.answer_id, self.tokens, self.top, self.deliveries = None, tokens, -1, []
        self.followed.clear()
        self.done.clear()
        self._tail_done = self._actions_done = False
        await self.send("chat.send", turn="0", text=text)

    def on_frame(self, raw: bytes, now: int) -> None:
        if self.answer_id is None:
            if b'class="msg assistant"' not in raw:
                return
            following = {m.group(1) for m in MARKER_RE.finditer(raw)}  # a new answer; not an old one redrawn
            found = [m.group(1) for m in ANSWER_RE.finditer(raw) if m.group(1) in following]
            if not found:
                return
            self.answer_id = found[-1].decode()
            self.first_frame = len(self.frames) - 1
            self._about = MessageFrames(self.answer_id)
            self._empty_tail = answer_end_re(self.answer_id)
            self._empty_actions = answer_over_re(self.answer_id)
            return
        if self.done.is_set() or not self._about(raw):
            return
        found = token_ids(raw)
        if found:
            top = max(int(x, 36) for x in found)
            if top > self.top:
                self.deliveries.append((self.top + 1, top, now))
                self.top = top
        if self.top == self.tokens - 1 and self._empty_tail.search(raw):
            self._tail_done = True
        if self._empty_actions.search(raw):
            self._actions_done = True
        if self._tail_done and self._actions_done:
            self.done.set()

    def on_followed(self, fresh: dict[str, int]) -> None:
        if self.answer_id in fresh:
            self.followed.set()

    async def answer(self, timeout: float) -> None:
        """Wait for the answer's end (or an error)."""
        deadline = time.monotonic() + timeout
        while not self.done.is_set():
            if self.closed:
                raise RuntimeError(f"answer {self.answer_id}: the socket closed first")
            self.arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"answer {self.answer_id}: not ended within {timeout:g} s (token {self.top} "
                                   f"of {self.tokens})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    def rebuilt_answer(self, first_page: str) -> tuple[str, str]:
        """(body, tail) of the answer's bubble on the page after every frame, as htmx would swap them."""
        from quanda.components import ids
        from bench.page import Page, body_of

        page = Page(body_of(first_page))
        for _, raw in self.frames:
            page.apply(raw.decode())
        body = page.inner(ids.msg_body_id(self.answer_id)) if page.find(ids.msg_body_id(self.answer_id)) else ""
        tail = page.inner(ids.msg_tail_id(self.answer_id)) if page.find(ids.msg_tail_id(self.answer_id)) else "?"
        return body, tail


class TodoSession(Session):
    """A tab on the todo page doing add, toggle, edit, delete in turn, one action every 1/rate s on a schedule
    (a late result delays the next action, never bunches them), each timed from its send to the frame that
    shows its result."""

    KEEP_FRAMES = 200  # todo frames are only waited for: the recent ones are enough

    def __init__(self, base: str, headers: dict[str, str], label: str, deflate: bool = True):
        super().__init__(base, headers, "todo", deflate)
        self.label = label
        self.latencies: list[float] = []  # ms
        self._due = 0.0

    async def act(self, action: str, result: re.Pattern, what: str, rate: float, stop: asyncio.Event,
                  timeout: float, **data: Any) -> re.Match:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, self._due - time.perf_counter()))
        if stop.is_set():
            raise _Stopped
        self._due = max(self._due, time.perf_counter()) + 1 / rate
        if len(self.frames) > self.KEEP_FRAMES:
            del self.frames[:-self.KEEP_FRAMES]
        start = len(self.frames)
        t0 = time.perf_counter()
        await self.send(action, **data)
        m = await self.wait_frame(result, start, timeout, what)
        self.latencies.append((time.perf_counter() - t0) * 1000)
        return m

    async def run(self, rate: float, stop: asyncio.Event, timeout: float = 10) -> None:
        """Until `stop` is set, todos live their lives: each added, toggled done, renamed, deleted. A result
        that does not come within `timeout` is an error, and the next todo starts."""
        self._due = time.perf_counter()
        n = 0
        while not stop.is_set():
            n += 1
            name = f"Bench {self.label} todo {n}"
            try:
                m = await self.act("todo.add", re.compile(rb'<li[^>]*\bid="todo-(\d+)"[^>]*>(?:(?!</li>).)*?'
                                                          + name.encode() + b"<", re.S),
                                   f"{self.label}: todo.add", rate, stop, timeout, name=name)
                tid = m.group(1).decode()
                row = rb'<li(?=[^>]*\bid="todo-%s")' % tid.encode()
                await self.act("todo.toggle", re.compile(row + rb'(?=[^>]*data-done="1")'),
                               f"{self.label}: todo.toggle {tid}", rate, stop, timeout, id=tid)
                renamed = f"{name} renamed"
                await self.act("todo.edit", re.compile(rb'<li[^>]*\bid="todo-%s"[^>]*>(?:(?!</li>).)*?%s<'
                                                       % (tid.encode(), renamed.encode()), re.S),
                               f"{self.label}: todo.edit {tid}", rate, stop, timeout, id=tid, name=renamed)
                await self.act("todo.delete", re.compile(row + rb'(?=[^>]*hx-swap-oob="delete")'),
                               f"{self.label}: todo.delete {tid}", rate, stop, timeout, id=tid)
            except TimeoutError as exc:
                self.errors.append(str(exc))
                if self.closed:
                    return
            except _Stopped:  # the todo of the moment is left as it is
                return


class _Stopped(Exception):
    pass


class SimSession(Session):
    """A tab on the stream simulator's page that starts runs."""

    def __init__(self, base: str, headers: dict[str, str], deflate: bool = True):
        super().__init__(base, headers, "simulator", deflate)

    async def run(self, chunks: int, delay_min_ms: int, delay_max_ms: int, timeout: float) -> None:
        start = len(self.frames)
        await self.send("sim.start", chunks=str(chunks), delay_min=str(delay_min_ms), delay_max=str(delay_max_ms))
        await self.wait_frame(re.compile(rb'class="sim-status finished"'), start, timeout, "a simulator run")


# == the servers a sessions bench runs ==========================================================================

# All of a bench's sessions come from 127.0.0.1, where the shipped per-address limits (QUANDA_WS_MAX_PER_ADDRESS
# 200 tabs, QUANDA_WS_HANDSHAKES_PER_S 20) are meant for one person's browser: the bench's server raises them.
WS_LIMITS = {"ws_max_per_address": 2000, "ws_handshakes_per_s": 500.0}
LIMITS_NOTE = ("the server runs with QUANDA_AUTH=accounts (a user per session) and, as every session comes from "
               f"127.0.0.1, QUANDA_WS_MAX_PER_ADDRESS={WS_LIMITS['ws_max_per_address']} and "
               f"QUANDA_WS_HANDSHAKES_PER_S={WS_LIMITS['ws_handshakes_per_s']:g} (shipped: 200 and 20); "
               "the per-tab and per-owner limits are as shipped")
WORKERS_ENV = "QUANDA_BENCH_WORKERS"  # the server runs this many worker processes (`quanda serve --workers`)
TRACEMALLOC_ENV = "QUANDA_BENCH_TRACEMALLOC"  # a directory: the server traces allocations, dumps on SIGUSR1


def serve(port: int, db_url: str, llm_url: str) -> None:
    """The app as shipped (every built-in plugin) plus `ping_plugin`, in accounts mode with `WS_LIMITS`, on a
    SQLite file. With QUANDA_BENCH_TRACEMALLOC=DIR it traces allocations (10 frames) and writes a snapshot
    DIR/snapshot-<n>.pickle on each SIGUSR1."""
    import logging
    import os
    import signal

    from quanda.config import Settings
    from bench.common import ACCOUNTS, MODEL, serve_app

    logging.basicConfig(level=logging.WARNING)
    trace_dir = os.environ.get(TRACEMALLOC_ENV)
    if trace_dir:
        import tracemalloc

        tracemalloc.start(10)
        dumps = [0]

        def dump(*_: Any) -> None:
            dumps[0] += 1
            tracemalloc.take_snapshot().dump(f"{trace_dir}/snapshot-{dumps[0]}.pickle")
            with open(f"{trace_dir}/snapshot-{dumps[0]}.done", "w"):
                pass

        signal.signal(signal.SIGUSR1, dump)
    settings = Settings(db_url=db_url, port=port, ollama_host=llm_url, ollama_model=MODEL, **ACCOUNTS, **WS_LIMITS,
                        workers=int(os.environ.get(WORKERS_ENV) or 1))
    if settings.workers > 1:
        from quanda.workers import serve_workers

        serve_workers(settings, {}, make_app=bench_app)
        return
    serve_app(bench_app(settings), port, settings=settings)


def bench_app(settings: Any) -> Any:
    """The app as the bench serves it (a function of the module: each worker of `--workers` imports it)."""
    from quanda.server import create_app

    return create_app(settings, entry_point_group=None, extra_plugins=[ping_plugin()])


def server_pids(pid: int) -> list[int]:
    """The server's processes: itself, and its workers when it runs several (`quanda.workers`)."""
    from pathlib import Path

    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid] + [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


class Servers:
    """`async with Servers(tmp) as s:` the paced LLM server (`bench.common.llm_serve`) and the app (`serve`), each
    a subprocess of `python -m bench.sessions`, on free ports of 127.0.0.1; `s.base`, `s.llm_base`, `s.db_url`,
    `s.server` (its Popen). Their logs stay in `tmp`."""

    def __init__(self, tmp: Any, trace_dir: str | None = None):
        from pathlib import Path

        self.tmp, self.trace_dir = Path(tmp), trace_dir

    async def __aenter__(self) -> "Servers":
        import os
        import subprocess
        import sys
        from pathlib import Path

        from bench.common import free_port, wait_http

        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": str(root)}
        if self.trace_dir:
            env[TRACEMALLOC_ENV] = self.trace_dir
        app_port, llm_port = free_port(), free_port()
        self.base, self.llm_base = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{llm_port}"
        self.db_url = f"sqlite:///{self.tmp}/sessions.db"
        self._logs = [open(self.tmp / "llm.log", "wb"), open(self.tmp / "server.log", "wb")]
        self.llm = subprocess.Popen([sys.executable, "-m", "bench.sessions", "llm", str(llm_port)], cwd=self.tmp,
                                    stdout=self._logs[0], stderr=subprocess.STDOUT, env=env)
        self.server = subprocess.Popen([sys.executable, "-m", "bench.sessions", "serve", str(app_port), self.db_url,
                                        self.llm_base], cwd=self.tmp, stdout=self._logs[1], stderr=subprocess.STDOUT,
                                       env=env)
        try:
            await wait_http(self.llm_base + "/api/tags", self.llm, self.tmp / "llm.log")
            await wait_http(self.base + "/-/health", self.server, self.tmp / "server.log")
            await self._every_worker_listening(app_port, int(os.environ.get(WORKERS_ENV) or 1))
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _every_worker_listening(self, port: int, workers: int) -> None:
        import asyncio
        import time
        from pathlib import Path

        deadline = time.monotonic() + 60
        while sum(1 for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                  if int(line.split()[1].split(":")[1], 16) == port and line.split()[3] == "0A") < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers did not all listen within 60 s")
            await asyncio.sleep(0.05)  # other processes starting: no event to wait on

    async def __aexit__(self, *exc: Any) -> None:
        from bench.common import stop_process

        stop_process(self.server)
        stop_process(self.llm)
        for log in self._logs:
            log.close()

    async def go(self, tokens: int, rate: float, streams: int = 1) -> None:
        """Plans for the next `streams` chat requests: `tokens` mixed-markdown chunks at `rate` a second."""
        import httpx

        async with httpx.AsyncClient(timeout=30) as http:
            (await http.get(f"{self.llm_base}/go?tokens={tokens}&rate={rate}&streams={streams}")).raise_for_status()


def rss_mb(pid: int) -> float:
    """A process's resident set (VmRSS in /proc/<pid>/status), in MB (10^6 bytes)."""
    from pathlib import Path

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for {pid}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["llm"]:
        from bench.common import llm_serve

        llm_serve(int(sys.argv[2]))
    elif sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        sys.exit("usage: python -m bench.sessions llm PORT | serve PORT DB_URL LLM_URL (what the benches start)")
