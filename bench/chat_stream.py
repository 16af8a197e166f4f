"""Chat: LLM chunk → WebSocket frame latency, bytes per answer and server CPU per token, against the seed's design.

    python bench/chat_stream.py [--tokens 1800] [--slow-tokens 300] [--rates 50,500,2000] [--fanout 20]
                                [--repeat 3] [--paragraph-words 400,4000] [--concurrent 50]
                                [--concurrent-tokens 300] [--no-deflate] [--only-ours] [--before [--before-commit C]]
                                [--frame-interval S] [--profile PATH] [--py-spy PATH] [--metrics-off]

Exit status 1 when a target of issue 10 / SPEC §10 is missed (each printed as PASS or FAIL below the tables).
Nothing is mocked between the LLM's socket and the client's socket; three processes run:

- a paced LLM server (`bench.common.llm_serve`, a subprocess) speaking Ollama's `/api/tags` and `/api/chat`
  (chunked NDJSON, one line per chunk). A chat request gets its headers at once and then waits for the
  bench's `GET /go`, so every tab follows before the first chunk; chunk i is due at start + i/rate and the
  server records its *send stamp* (CLOCK_MONOTONIC, shared by every process on the machine) right before
  the line goes to the socket. Each request is named by the `(bench <tag>)` in its question.
- the app (a subprocess: uvicorn running `create_app(...)` with the shipped plugins, a temporary SQLite file,
  OLLAMA_HOST pointing at the LLM server) plus a bench plugin with two ws actions: `bench.ping` (a round trip,
  so the bench knows its follow was processed) and `bench.follow_full`, the baseline.
- this process: the tabs (WebSocket clients, the `websockets` library, permessage-deflate negotiated as
  browsers do). Owners come from `bench.common.new_owners`: the server runs with QUANDA_AUTH=accounts and each
  owner is a user of its own, logged in through POST /login (in local mode every browser shares the one
  workspace, so the row of 50 answers at once would be one owner's; "before" predates accounts: there an owner
  is a fresh browser session, which then had a workspace of its own). Tab 0 of
  each owner sends `{"action": "chat.send", ...}` like the page's form; every tab learns the answer's id
  from its bubble (the `data-stream` marker) and follows it, then the bench says /go.

The answer is the real path: the chat plugin reads the Ollama stream through the shipped driver and writes
each delta with `QuandaWriter.chunk(text)`; the hub's follower (app/follow.py) renders it with the chat's
`ChatView` once per frame.

- "ours": the page's own `follow` action.
- "before" (with --before): the same as ours against a second server running the app as of commit e1594fc
  (extracted from git history by `bench.common.checkout_before`), the code issue 10 started from.
- "metrics off" (with --metrics-off): the same as ours against a second server whose metrics (app/metrics.py)
  are switched off (`bench.common.metrics_off`: every counter a no-op, the store not timed), to see what
  counting costs per token in the same run.
- "baseline" (the seed's design, SPEC §5 "full re-render and full resend per token"): `bench.follow_full`,
  the same ownership check, a task per tab that reads the answer with a QuandaReader and on EVERY token
  renders the whole content with `render_markdown` and sends it as one `<div id="msg-<id>-body"
  hx-swap-oob="true">` frame. No coalescing.

Answers (`bench.common`): "mixed" markdown (headings, paragraphs with inline code and bold, lists, fenced
code) of ~5-character chunks, and "paragraph": one paragraph of N words on a single line. Every chunk ends
with a word `Q<base-36 index>`: a token's latency is (arrival of the first frame holding it) − (its send
stamp), once per tab (tokens come in order, so a frame whose highest index is k delivers every token up to
k). It includes the driver, the store commit, the reader wake-up, the view, coalescing, rendering, the
socket, permessage-deflate and this client's own event loop. "first" is the first token's latency.

Bytes are payload bytes (UTF-8 text, before permessage-deflate) of the frames about the answer (`msg-<id>`
in them, or the alias a compact append defined for its tail: `bench.page.MessageFrames`), per tab; "wire" is
what the tab's socket read (compressed frames with their headers) from /go to its end. The final HTML is what
the page's answer holds at the end (ours: `render_blocks(content)`, the baseline: `render_markdown(content)`).
After each run every tab's page is rebuilt from all its frames by `bench.page` (htmx 2's out-of-band swaps,
from the page GET / served) and its answer must equal the final HTML. Server CPU is utime+stime of the app
process (all threads, 10 ms ticks) from /go to the last tab's end, divided by the answer's tokens (all answers'
tokens in the concurrent row).

Profile: `python bench/chat_stream.py --only-ours --rates 2000 --repeat 1 --profile /tmp/chat.prof` then
`python -c "import pstats; pstats.Stats('/tmp/chat.prof').sort_stats('cumtime').print_stats(40)"`; or
sample the server's every thread with py-spy: `python bench/chat_stream.py --only-ours --py-spy /tmp/chat.txt`
(collapsed stacks; `python bench/stacks.py /tmp/chat.txt` sums them by function).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if os.environ.get("QUANDA_BENCH_APP_DIR"):  # a server of another version of the app (bench.common.checkout_before)
    sys.path.insert(0, os.environ["QUANDA_BENCH_APP_DIR"])

from bench.common import (BEFORE_COMMIT, MODEL, MachineLoad, answer_chunks, answer_end_re, answer_over_re, checkout_before,  # noqa: E402
                          is_package_tree, package_tree,
                          cpu_seconds, free_port, llm_serve, new_owners, pct, stop_process, table, token_ids,
                          verdict, wait_http)
from bench.page import MessageFrames  # noqa: E402

P99_TARGET_MS = 33.0
CONCURRENT_P99_TARGET_MS = 50.0
BYTES_TARGET = 3.0
CPU_TARGET_US = 100.0
LONG_OVER_SHORT = 1.5
# the warm-up answer covers every kind of block of the mixed answer, the fenced code included (its tokens 204-385),
# so that one-time costs (Pygments compiling its lexer's regexes: ~0.1 s) fall outside the measured runs
WARM_UP_TOKENS = 400
TARGET_RATE = 2000.0


# == the app server (runs in its own subprocess) =========================================================

def bench_plugin():
    from fasthtml.common import Div, NotStr

    from bench.common import follow_full_handler, served

    ids, Notice = served("components.ids"), served("components.layout").Notice
    Plugin = getattr(served("plugins"), "Plugin", None) or served("api").Plugin  # older trees: app.plugins
    core, render_markdown = served("core"), served("render").render_markdown
    QuandaError, QuandaMessage, QuandaReader = core.QuandaError, core.QuandaMessage, core.QuandaReader

    async def on_ping(h, data: dict) -> None:
        await h.send(Div(id="bench-pong"))

    async def full_resend(h, message_id: str, after_seq: int) -> None:
        """The seed's design: on every token, re-render the whole content and send it, one frame per token."""
        try:
            message = await QuandaMessage.from_id(h.store, message_id)
            content = ""
            async for token in QuandaReader(message, after_seq=after_seq):
                if token.kind in ("chunk", "override"):
                    content = content + token.text if token.kind == "chunk" else token.text
                    await h.send(Div(NotStr(render_markdown(content)), id=ids.msg_body_id(message_id), cls="md",
                                     hx_swap_oob="true"))
                elif token.kind == "immutable":
                    await h.send(Div(NotStr(render_markdown(content)), id=ids.msg_body_id(message_id), cls="md",
                                     hx_swap_oob="true"),
                                 Div(NotStr(""), id=ids.msg_tail_id(message_id), cls="md tail", hx_swap_oob="true"))
        except QuandaError as exc:
            await h.send(Notice(str(exc)))

    return Plugin(name="bench", label="Bench", order=999,
                  ws_handlers={"bench.ping": on_ping, "bench.follow_full": follow_full_handler("assistant", full_resend)})


def serve(port: int, db_url: str, llm_url: str, frame_interval: float | None, profile: str | None) -> None:
    import logging

    from dataclasses import fields

    from bench.common import ACCOUNTS, serve_app, served

    Settings, create_app = served("config").Settings, served("server").create_app
    logging.basicConfig(level=logging.WARNING)
    if os.environ.get("QUANDA_BENCH_NO_METRICS"):  # the --metrics-off server
        from bench.common import metrics_off
        metrics_off()
    if frame_interval is not None:  # an experiment knob; by default the app as shipped
        served("follow").FRAME_INTERVAL_S = frame_interval
    accounts = ACCOUNTS if "auth" in {f.name for f in fields(Settings)} else {}  # "before" has no accounts
    settings = Settings(db_url=db_url, port=port, ollama_host=llm_url, ollama_model=MODEL, **accounts)
    the_app = create_app(settings, entry_point_group=None, extra_plugins=[bench_plugin()])
    serve_app(the_app, port, profile, settings)


# == the client side ======================================================================================

@dataclass
class Spec:
    """One row: `owners` answers at once, each followed by `tabs` tabs of its owner."""

    variant: str  # "ours" or "baseline"
    label: str
    owners: int
    tabs: int
    tokens: int
    rate: float
    kind: str = "mixed"
    runs: int = 1


def _counting_connection():
    from websockets.asyncio.client import ClientConnection

    class CountingConnection(ClientConnection):
        """Counts the bytes read from the socket: compressed frames with their WebSocket headers."""

        wire = 0

        def data_received(self, data: bytes) -> None:
            self.wire += len(data)
            super().data_received(data)

    return CountingConnection


class Tab:
    """One WebSocket connection: learns its owner's answer id, follows it, records every frame."""

    def __init__(self, ws, owner: int, index: int, tokens: int):
        self.ws, self.owner, self.index, self.tokens = ws, owner, index, tokens
        self.mid: str | None = None
        self.ready = asyncio.Event()
        self.frames: list[tuple[int, bytes]] = []  # (arrival ns, payload) of every frame, for the page rebuild
        self.answer_frames = self.answer_bytes = 0
        self.top = -1  # the highest token index seen so far
        self.deliveries: list[tuple[int, int, int]] = []  # (first index, last index, arrival ns)

    async def run(self, answer_id: asyncio.Future, follow_action: str) -> None:
        ws = self.ws
        tail_done = actions_done = False
        about = empty_tail = empty_actions = None
        while not (tail_done and actions_done):
            raw = await ws.recv(decode=False)
            now = time.monotonic_ns()
            self.frames.append((now, raw))
            if b'id="ws-notice"' in raw:
                raise RuntimeError(f"server notice: {raw[:300]!r}")
            if self.mid is None:
                if b'class="msg assistant"' not in raw:
                    continue  # the question's bubble, the input form
                self.mid = re.search(rb'data-stream="([0-9a-f]+)"', raw).group(1).decode()
                seq = int(re.search(rb'data-stream="[0-9a-f]+" data-seq="(\d+)"', raw).group(1))
                if not answer_id.done():
                    answer_id.set_result(self.mid)
                about = MessageFrames(self.mid)
                empty_tail = answer_end_re(self.mid)
                empty_actions = answer_over_re(self.mid)
                self.answer_frames += 1
                self.answer_bytes += len(raw)
                await ws.send(json.dumps({"action": follow_action, "tab": self.index, "streams": {self.mid: seq}}))
                await ws.send(json.dumps({"action": "bench.ping"}))  # handled after the follow: a round trip
                continue
            if b'id="bench-pong"' in raw:
                self.ready.set()
                continue
            if not about(raw):
                continue
            self.answer_frames += 1
            self.answer_bytes += len(raw)
            found = token_ids(raw)
            if found:
                top = max(int(x, 36) for x in found)
                if top > self.top:
                    self.deliveries.append((self.top + 1, top, now))
                    self.top = top
            if self.top == self.tokens - 1 and empty_tail.search(raw):
                tail_done = True
            if empty_actions.search(raw):
                actions_done = True


def rebuild(first_page: str, tab: Tab) -> "object":
    """The tab's page after every frame it received, as htmx would have swapped them."""
    from bench.page import Page, body_of

    page = Page(body_of(first_page))
    for _, raw in tab.frames:
        page.apply(raw.decode())
    return page


#: `--py-spy`: where each measured window's samples go (one file per run, joined at the end)
SAMPLES: list[Path] = []


def start_sampler(pid: int, path: Path) -> subprocess.Popen:
    SAMPLES.append(path)
    return subprocess.Popen(["py-spy", "record", "--format", "raw", "--rate", "250", "--native", "-o", str(path),
                             "--pid", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_sampler(sampler: subprocess.Popen | None) -> None:
    if sampler is not None:
        sampler.send_signal(2)  # SIGINT: py-spy writes its file and exits
        sampler.wait(30)


async def one_run(base: str, llm_base: str, spec: Spec, deflate: bool, server_pid: int, run_no: int,
                  db_url: str | None, sample_to: Path | None = None) -> dict:
    import httpx
    import websockets

    CountingConnection = _counting_connection()
    from quanda.components import ids
    from quanda.render import render_blocks, render_markdown
    from bench.page import normalize

    full = spec.variant == "baseline"
    sampler = None
    action = "bench.follow_full" if full else "follow"
    owners = await new_owners(base, spec.owners, db_url)  # db_url: the server's store, in accounts mode
    tags = [f"r{run_no}-o{k}" for k in range(spec.owners)]
    extra = {} if deflate else {"compression": None}
    url = base.replace("http", "ws") + "/ws"
    async with httpx.AsyncClient(timeout=60) as http:
        (await http.get(llm_base + "/reset")).raise_for_status()
        first_pages = [(await http.get(base + "/", headers=o)).text for o in owners]
        tabs: list[Tab] = []
        for k, headers in enumerate(owners):
            for i in range(spec.tabs):
                ws = await websockets.connect(url, additional_headers=headers, max_size=None, open_timeout=30,
                                              create_connection=CountingConnection, **extra)
                tabs.append(Tab(ws, k, i, spec.tokens))
        lags: list[float] = []

        async def probe() -> None:  # how late this (client) event loop runs: part of every measured latency
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.002)
                lags.append((time.perf_counter() - t - 0.002) * 1000)

        prober = asyncio.create_task(probe())
        answer_ids = [asyncio.get_running_loop().create_future() for _ in owners]
        runners = [asyncio.create_task(t.run(answer_ids[t.owner], action)) for t in tabs]
        try:
            for t in tabs:  # what quanda.js says when the socket opens
                await t.ws.send(json.dumps({"action": "view", "page": "todo", "streams": {}, "fresh": []}))
            for k in range(spec.owners):
                first = next(t for t in tabs if t.owner == k)
                await first.ws.send(json.dumps({"action": "chat.send", "turn": "0",
                                                "text": f"Explain it at length (bench {tags[k]})."}))
            waiting = asyncio.gather(*(t.ready.wait() for t in tabs))
            done, _ = await asyncio.wait([waiting, *runners], timeout=60, return_when=asyncio.FIRST_COMPLETED)
            if waiting not in done:
                for r in runners:
                    if r.done():
                        r.result()  # raises the tab's error
                raise RuntimeError("the tabs did not all follow their answer")
            if sample_to is not None:
                sampler = start_sampler(server_pid, sample_to)
            await asyncio.sleep(0.1)  # let each follower's reader subscribe (and py-spy attach)
            cpu0, t0 = cpu_seconds(server_pid), time.perf_counter()
            wire0 = [t.ws.wire for t in tabs]
            (await http.get(llm_base + f"/go?tokens={spec.tokens}&rate={spec.rate}&kind={spec.kind}"
                                       f"&streams={spec.owners}")).raise_for_status()
            await asyncio.wait_for(asyncio.gather(*runners), timeout=120 + 3 * spec.tokens / spec.rate)
            wall, cpu = time.perf_counter() - t0, cpu_seconds(server_pid) - cpu0
            stop_sampler(sampler)
            sampler = None
            wire = sum(t.ws.wire - w for t, w in zip(tabs, wire0)) / len(tabs)
        finally:
            stop_sampler(sampler)
            prober.cancel()
            for r in runners:
                r.cancel()
            for t in tabs:
                await t.ws.close()
        stamps = (await http.get(llm_base + "/stamps")).json()
        records = [(await http.get(f"{base}/api/messages/{answer_ids[k].result()}", headers=owners[k])).json()
                   for k in range(spec.owners)]
    script = "".join(answer_chunks(spec.tokens, spec.kind))
    latencies, firsts, send_lag, page_ok, page_diff = [], [], [], True, 0
    finals: list[int] = []
    for k, record in enumerate(records):
        if record["content"] != script or not record["immutable"]:
            raise RuntimeError(f"the stored answer {k} is not the scripted one")
        sent, due = stamps[tags[k]]["sent"], stamps[tags[k]]["due"]
        if len(sent) != spec.tokens:
            raise RuntimeError(f"the LLM server sent {len(sent)} of {spec.tokens} tokens")
        send_lag += [(s - d) / 1e6 for s, d in zip(sent, due)]
        final_html = render_markdown(script) if full else render_blocks(script)
        finals.append(len(final_html.encode()))
        expected = normalize(final_html)
        for t in (t for t in tabs if t.owner == k):
            latencies += [(arrival - sent[i]) / 1e6 for first, last, arrival in t.deliveries
                          for i in range(first, last + 1)]
            firsts.append((t.deliveries[0][2] - sent[0]) / 1e6 if t.deliveries else float("nan"))
            page = rebuild(first_pages[k], t)
            shown = page.inner(ids.msg_body_id(t.mid)) if page.find(ids.msg_body_id(t.mid)) else ""
            tail = page.inner(ids.msg_tail_id(t.mid)) if page.find(ids.msg_tail_id(t.mid)) else "?"
            if shown != expected or tail != "":
                page_ok = False
                page_diff = page_diff or (len(shown.encode()) - len(expected.encode()))
    return {"latencies": latencies, "firsts": firsts, "send_lag": send_lag, "client_lags": lags,
            "frames": sum(t.answer_frames for t in tabs) / len(tabs),
            "bytes": sum(t.answer_bytes for t in tabs) / len(tabs), "final": sum(finals) / len(finals),
            "wire": wire, "page_ok": page_ok, "page_diff": page_diff,
            "complete": all(t.top == spec.tokens - 1 for t in tabs), "wall": wall, "cpu": cpu,
            "answer_tokens": spec.tokens * spec.owners}


def combine(spec: Spec, runs: list[dict]) -> dict:
    """Repeated runs of one row: latencies pooled, sizes and costs averaged."""
    latencies = [x for r in runs for x in r["latencies"]]
    mean = lambda key: sum(r[key] for r in runs) / len(runs)  # noqa: E731
    return {"spec": spec, "runs": len(runs),
            "p50": pct(latencies, 50), "p99": pct(latencies, 99), "max": max(latencies, default=float("nan")),
            "run_p99s": [pct(r["latencies"], 99) for r in runs],
            "first_p50": pct([x for r in runs for x in r["firsts"]], 50),
            "first_max": max((x for r in runs for x in r["firsts"]), default=float("nan")),
            "send_lag_p99": pct([x for r in runs for x in r["send_lag"]], 99),
            "client_lag_p99": pct([x for r in runs for x in r["client_lags"]], 99),
            "frames": mean("frames"), "bytes": mean("bytes"), "final": mean("final"), "wire": mean("wire"),
            "cpu_us": sum(r["cpu"] for r in runs) * 1e6 / sum(r["answer_tokens"] for r in runs),
            "wall": mean("wall"), "page_ok": all(r["page_ok"] for r in runs),
            "page_diff": next((r["page_diff"] for r in runs if not r["page_ok"]), 0),
            "complete": all(r["complete"] for r in runs)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1800, help="tokens per answer (except at 50 tokens/s)")
    parser.add_argument("--slow-tokens", type=int, default=300, help="tokens per answer at rates below 100/s")
    parser.add_argument("--rates", default="50,500,2000", help="tokens/s the LLM server sends at")
    parser.add_argument("--fanout", type=int, default=20, help="tabs in the fan-out row at 2,000 tokens/s (0: none)")
    parser.add_argument("--fanout-baseline-tokens", type=int, default=300,
                        help="tokens of the baseline's fan-out row (full resend x tabs is quadratic)")
    parser.add_argument("--paragraph-words", default="400,4000",
                        help="single-paragraph answers at 2,000 tokens/s, 1 tab (empty: none)")
    parser.add_argument("--paragraph-baseline-words", type=int, default=400,
                        help="the longest paragraph the baseline streams (its cost per token grows with it)")
    parser.add_argument("--concurrent", type=int, default=50,
                        help="answers at once at --concurrent-rate, one owner and one tab each (0: none)")
    parser.add_argument("--concurrent-rate", type=float, default=50.0)
    parser.add_argument("--concurrent-tokens", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours at 2,000 tokens/s (latencies pooled)")
    parser.add_argument("--no-deflate", action="store_true", help="turn permessage-deflate off")
    parser.add_argument("--only-ours", action="store_true", help="skip the baseline rows")
    parser.add_argument("--before", action="store_true",
                        help="add rows for the app before issue 10 (commit e1594fc, from git history), as ours")
    parser.add_argument("--before-commit", default=BEFORE_COMMIT, metavar="COMMIT",
                        help="with --before: the commit whose app the 'before' rows run (default: %(default)s)")
    parser.add_argument("--frame-interval", type=float, default=None,
                        help="experiment: override quanda.follow.FRAME_INTERVAL_S in the server (default: as shipped)")
    parser.add_argument("--metrics-off", action="store_true",
                        help="add rows for the same app with its metrics switched off (what counting costs)")
    parser.add_argument("--profile", metavar="PATH", help="experiment: cProfile the app server into PATH")
    parser.add_argument("--py-spy", metavar="PATH", help="sample the app server (all threads) with py-spy into PATH, from /go to the last tab's end of each run of ours "
                                                         "(collapsed stacks; `pip install py-spy`)")
    parser.add_argument("--serve", nargs=3, metavar=("PORT", "DB_URL", "LLM_URL"), help=argparse.SUPPRESS)
    parser.add_argument("--llm-serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args()


def plan_rows(args: argparse.Namespace) -> list[Spec]:
    rates = [float(x) for x in args.rates.split(",") if x]
    plan: list[Spec] = []

    def both(spec: Spec, baseline_tokens: int | None = None) -> None:
        plan.append(spec)
        if args.metrics_off:
            plan.append(Spec("no-metrics", spec.label, spec.owners, spec.tabs, spec.tokens, spec.rate, spec.kind,
                             spec.runs))
        if args.before:
            plan.append(Spec("before", spec.label, spec.owners, spec.tabs, spec.tokens, spec.rate, spec.kind,
                             spec.runs))
        if not args.only_ours and (baseline_tokens is None or baseline_tokens > 0):
            plan.append(Spec("baseline", spec.label, spec.owners, spec.tabs, baseline_tokens or spec.tokens,
                             spec.rate, spec.kind, 1))

    for rate in rates:
        tokens = args.slow_tokens if rate < 100 else args.tokens
        both(Spec("ours", "mixed", 1, 1, tokens, rate, "mixed", args.repeat if rate == TARGET_RATE else 1))
    if args.fanout:
        both(Spec("ours", "mixed", 1, args.fanout, args.tokens, TARGET_RATE, "mixed", args.repeat),
             args.fanout_baseline_tokens)
    for words in [int(x) for x in args.paragraph_words.split(",") if x]:
        both(Spec("ours", f"paragraph {words:,} words", 1, 1, words, TARGET_RATE, "paragraph", args.repeat),
             words if words <= args.paragraph_baseline_words else 0)
    if args.concurrent:
        both(Spec("ours", f"{args.concurrent} answers at once", args.concurrent, 1, args.concurrent_tokens,
                  args.concurrent_rate, "mixed", 1))
    return plan


async def main(args: argparse.Namespace) -> int:
    import quanda.follow

    tmp = Path(tempfile.mkdtemp(prefix="quanda-chatbench-"))
    app_port, llm_port = free_port(), free_port()
    base, llm_base = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{llm_port}"
    started = time.perf_counter()
    me = str(Path(__file__).resolve())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    llm_log, app_log = open(tmp / "llm.log", "wb"), open(tmp / "server.log", "wb")
    knobs = (["--frame-interval", str(args.frame_interval)] if args.frame_interval is not None else []) + (
        ["--profile", str(Path(args.profile).resolve())] if args.profile else [])
    llm = subprocess.Popen([sys.executable, me, "--llm-serve", str(llm_port)], cwd=tmp, stdout=llm_log,
                           stderr=subprocess.STDOUT, env=env)
    server = subprocess.Popen([sys.executable, me, "--serve", str(app_port), f"sqlite:///{tmp}/bench.db", llm_base,
                               *knobs], cwd=tmp, stdout=app_log, stderr=subprocess.STDOUT, env=env)
    servers = {"ours": (base, server), "baseline": (base, server)}
    owner_dbs = {"ours": f"sqlite:///{tmp}/bench.db", "baseline": f"sqlite:///{tmp}/bench.db",
                 "before": None if args.before_commit == BEFORE_COMMIT else f"sqlite:///{tmp}/before.db"}  # accounts since
    if args.before:  # the app as it was before issue 10, on a port of its own
        if is_package_tree(args.before_commit):  # installed as `quanda` already: that tree's package goes first
            before_env = {**env, "PYTHONPATH": os.pathsep.join(
                [str(package_tree(args.before_commit, tmp / "before")), env.get("PYTHONPATH", "")])}
        else:
            before_dir = checkout_before(tmp / "before", args.before_commit)
            if before_dir is None:
                raise SystemExit("--before needs git (the app is extracted from the repository's history)")
            before_env = {**env, "QUANDA_BENCH_APP_DIR": str(before_dir)}
        before_port = free_port()
        before_log = open(tmp / "before-server.log", "wb")  # closed with the process (it holds a copy)
        before = subprocess.Popen(
            [sys.executable, me, "--serve", str(before_port), f"sqlite:///{tmp}/before.db", llm_base, *knobs],
            cwd=tmp, stdout=before_log, stderr=subprocess.STDOUT, env=before_env)
        before_log.close()
        servers["before"] = (f"http://127.0.0.1:{before_port}", before)
    if args.metrics_off:  # the same app with its metrics switched off, on a port of its own
        off_port = free_port()
        off_log = open(tmp / "no-metrics-server.log", "wb")
        off = subprocess.Popen(
            [sys.executable, me, "--serve", str(off_port), f"sqlite:///{tmp}/no-metrics.db", llm_base, *knobs],
            cwd=tmp, stdout=off_log, stderr=subprocess.STDOUT, env={**env, "QUANDA_BENCH_NO_METRICS": "1"})
        off_log.close()
        servers["no-metrics"] = (f"http://127.0.0.1:{off_port}", off)
        owner_dbs["no-metrics"] = f"sqlite:///{tmp}/no-metrics.db"
    deflate = not args.no_deflate
    results: list[dict] = []
    load = MachineLoad(tuple({p.pid for _, p in servers.values()} | {llm.pid, os.getpid()}))
    run_no = 0
    try:
        await wait_http(llm_base + "/api/tags", llm, tmp / "llm.log")
        await wait_http(base + "/-/plugins", server, tmp / "server.log")
        await one_run(base, llm_base, Spec("ours", "warm-up", 1, 1, WARM_UP_TOKENS, TARGET_RATE), deflate, server.pid, run_no,
                      owner_dbs["ours"])
        if "no-metrics" in servers:
            await wait_http(servers["no-metrics"][0] + "/-/plugins", servers["no-metrics"][1],
                            tmp / "no-metrics-server.log")
            await one_run(servers["no-metrics"][0], llm_base, Spec("no-metrics", "warm-up", 1, 1, WARM_UP_TOKENS,
                                                                   TARGET_RATE), deflate,
                          servers["no-metrics"][1].pid, run_no, owner_dbs["no-metrics"])
        if "before" in servers:
            await wait_http(servers["before"][0] + "/-/plugins", servers["before"][1], tmp / "before-server.log")
            await one_run(servers["before"][0], llm_base, Spec("before", "warm-up", 1, 1, WARM_UP_TOKENS, TARGET_RATE), deflate,
                          servers["before"][1].pid, run_no, owner_dbs["before"])
        load.start()
        for spec in plan_rows(args):
            runs = []
            for _ in range(spec.runs):
                run_no += 1
                url, proc = servers[spec.variant]
                sample_to = (Path(args.py_spy).resolve().with_suffix(f".run{run_no}")
                             if args.py_spy and spec.variant == "ours" else None)
                runs.append(await one_run(url, llm_base, spec, deflate, proc.pid, run_no, owner_dbs[spec.variant],
                                          sample_to))
            results.append(combine(spec, runs))
        load.stop()
    except BaseException:
        print(f"logs kept in {tmp}", file=sys.stderr)
        raise
    finally:
        if args.py_spy:  # the measured windows' samples, in one file
            Path(args.py_spy).write_text("".join(p.read_text() for p in SAMPLES if p.exists()))
            for p in SAMPLES:
                p.unlink(missing_ok=True)
        for _, proc in servers.values():
            stop_process(proc)
        stop_process(llm)
        llm_log.close()
        app_log.close()
    shutil.rmtree(tmp, ignore_errors=True)  # reached only when the run worked; a failure keeps the logs
    return report(args, results, load, quanda.follow.FRAME_INTERVAL_S, time.perf_counter() - started)


def report(args: argparse.Namespace, results: list[dict], load: MachineLoad, shipped_interval: float,
           total: float) -> int:
    names = {"ours": "ours (ChatView, coalesced)", "no-metrics": "ours, metrics off (bench only)",
             "baseline": "baseline (full re-render + resend per token)",
             "before": f"before issue 10 ({BEFORE_COMMIT})" if args.before_commit == BEFORE_COMMIT
             else f"before ({args.before_commit})"}
    interval = args.frame_interval if args.frame_interval is not None else shipped_interval
    knobs_text = "".join([f"; EXPERIMENT: FRAME_INTERVAL_S={args.frame_interval}"
                          if args.frame_interval is not None else "", "; EXPERIMENT: profiled" if args.profile else "",
                          "; sampled by py-spy" if args.py_spy else ""])
    print(f"Chat: LLM chunk -> WebSocket frame. Paced Ollama-wire LLM server -> app (uvicorn, chat plugin, SQLite) "
          f"-> tabs, all on 127.0.0.1.\nAnswers: 'mixed' markdown (headings, paragraphs, lists, fenced code), "
          f"~5 chars/token; 'paragraph': one line of N words. Latency = first frame holding the token - the LLM "
          f"server's send stamp.\nFrames and bytes per tab: payload (UTF-8, before permessage-deflate, which the "
          f"client {'offers' if not args.no_deflate else 'does not offer'}: ours declines it as shipped, "
          f"QUANDA_WS_DEFLATE=0, the app before issue 10 accepts it); wire = what the socket read.\nOurs at "
          f"{TARGET_RATE:,.0f} tokens/s (mixed, paragraphs): {args.repeat} run(s) per row, latencies pooled, CPU "
          f"summed (a 400-word answer takes 0.2 s, a few of the kernel's 10-ms CPU ticks); other rows 1 run. "
          f"Frame interval {interval * 1000:.1f} ms{knobs_text}.\nMachine: {load.describe()}.\n")
    header = ["view", "answer", "answers x tabs", "tokens/s", "tokens", "p50 ms", "p99 ms", "first ms",
              "frames", "bytes sent", "final HTML", "bytes/final", "wire/final", "CPU µs/token"]
    print(table(header, [[names[r["spec"].variant], r["spec"].label, f"{r['spec'].owners} x {r['spec'].tabs}",
                          f"{r['spec'].rate:,.0f}", f"{r['spec'].tokens:,}", f"{r['p50']:.1f}", f"{r['p99']:.1f}",
                          f"{r['first_p50']:.1f}", f"{r['frames']:,.0f}", f"{r['bytes']:,.0f}", f"{r['final']:,.0f}",
                          f"{r['bytes'] / r['final']:.2f}x", f"{r['wire'] / r['final']:.2f}x", f"{r['cpu_us']:,.0f}"]
                         for r in results]))
    print("\nwhere the time goes: max latency; p99 per run; first max = the slowest first token; LLM send lag = "
          "send stamp - due time (p99, the pacer's own jitter);\nclient loop lag p99 = how late this bench's "
          "event loop ran; wall s = /go to the last tab's end; per-frame bytes = payload bytes per frame.\n")
    print(table(["view", "answer", "answers x tabs", "tokens/s", "max ms", "p99 per run", "first max ms",
                 "LLM send lag ms", "client loop lag ms", "wall s", "bytes/frame"],
                [[names[r["spec"].variant], r["spec"].label, f"{r['spec'].owners} x {r['spec'].tabs}",
                  f"{r['spec'].rate:,.0f}", f"{r['max']:.1f}", " / ".join(f"{x:.1f}" for x in r["run_p99s"]),
                  f"{r['first_max']:.1f}", f"{r['send_lag_p99']:.2f}", f"{r['client_lag_p99']:.2f}",
                  f"{r['wall']:.2f}", f"{r['bytes'] / max(r['frames'], 1):,.0f}"] for r in results]))
    print()
    ok = True

    def check(passed: bool, text: str) -> None:
        nonlocal ok
        ok &= passed
        print(verdict(passed, text))

    incomplete = [f"{r['spec'].variant}/{r['spec'].label}" for r in results if not r["complete"]]
    check(not incomplete, "every tab saw every token" + (f" (missing in {', '.join(incomplete)})" if incomplete else ""))
    wrong = [f"{r['spec'].variant}/{r['spec'].label}/{r['spec'].owners}x{r['spec'].tabs}/{r['spec'].rate:.0f} "
             f"({r['page_diff']:+,} bytes)" for r in results if not r["page_ok"]]
    check(not wrong, "every tab's page, rebuilt from its frames (bench/page.py), shows the final HTML in every row"
          + (": differs in " + "; ".join(wrong) if wrong else ""))
    ours = [r for r in results if r["spec"].variant == "ours"]
    base = {(r["spec"].label, r["spec"].owners, r["spec"].tabs, r["spec"].rate): r for r in results
            if r["spec"].variant == "baseline"}

    befores = {(r["spec"].label, r["spec"].owners, r["spec"].tabs, r["spec"].rate): r for r in results
               if r["spec"].variant == "before"}

    def with_base(r: dict, key: str, fmt: str) -> str:
        where = (r["spec"].label, r["spec"].owners, r["spec"].tabs, r["spec"].rate)
        b, old = base.get(where), befores.get(where)
        return "".join([f" (before: {fmt.format(old[key])})" if old else "",
                        f" (baseline {fmt.format(b[key])})" if b else ""])

    for r in ours:
        s = r["spec"]
        where = f"{s.label}, {s.owners} x {s.tabs}, {s.rate:,.0f} tokens/s"
        ratio = r["bytes"] / r["final"]
        b = base.get((s.label, s.owners, s.tabs, s.rate))
        old = befores.get((s.label, s.owners, s.tabs, s.rate))
        check(ratio <= BYTES_TARGET, f"bytes <= {BYTES_TARGET:.0f}x final HTML, {where}: raw {ratio:.2f}x, wire "
              f"{r['wire'] / r['final']:.2f}x, {r['bytes'] / max(r['frames'], 1):.0f} B per frame"
              + (f" (before: raw {old['bytes'] / old['final']:.2f}x)" if old else "")
              + (f" (baseline raw {b['bytes'] / b['final']:.1f}x)" if b else ""))
        if s.rate == TARGET_RATE and s.kind == "mixed":
            check(r["p99"] <= P99_TARGET_MS, f"p99 token->frame <= {P99_TARGET_MS:.0f} ms, {where}: {r['p99']:.1f} ms "
                  f"(runs {' / '.join(f'{x:.1f}' for x in r['run_p99s'])})" + with_base(r, "p99", "{:.0f} ms"))
        if s.rate == TARGET_RATE and (s.tabs > 1 or s.kind == "paragraph"):
            check(r["cpu_us"] <= CPU_TARGET_US, f"server CPU <= {CPU_TARGET_US:.0f} µs/token, {where}: "
                  f"{r['cpu_us']:.0f} µs" + with_base(r, "cpu_us", "{:.0f} µs"))
        if s.owners > 1:
            check(r["p99"] <= CONCURRENT_P99_TARGET_MS, f"p99 token->frame <= {CONCURRENT_P99_TARGET_MS:.0f} ms, "
                  f"{where}: {r['p99']:.1f} ms" + with_base(r, "p99", "{:.0f} ms"))
    paragraphs = sorted((r for r in ours if r["spec"].kind == "paragraph"), key=lambda r: r["spec"].tokens)
    if len(paragraphs) >= 2:
        short, long = paragraphs[0], paragraphs[-1]
        growth = long["cpu_us"] / short["cpu_us"]
        check(growth <= LONG_OVER_SHORT, f"CPU per token of a {long['spec'].tokens:,}-word paragraph within "
              f"{LONG_OVER_SHORT}x of a {short['spec'].tokens:,}-word one: {growth:.2f}x")
    frame_ms = 1000 / 60
    firsts = [r["first_p50"] for r in ours]
    check(max(firsts) <= frame_ms, f"first token on screen within one frame ({frame_ms:.1f} ms) of its arrival "
          f"(median per row, worst row): {max(firsts):.1f} ms; slowest single first token "
          f"{max(r['first_max'] for r in ours):.1f} ms")
    print(f"\nwhole run: {total:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.llm_serve:
        llm_serve(arguments.llm_serve)
    elif arguments.serve:
        serve(int(arguments.serve[0]), arguments.serve[1], arguments.serve[2], arguments.frame_interval,
              arguments.profile)
    else:
        try:
            import uvloop  # the client's own loop: the leaner, the less it competes with the server it measures
        except ImportError:
            sys.exit(asyncio.run(main(arguments)))
        sys.exit(uvloop.run(main(arguments)))
