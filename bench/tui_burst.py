"""The terminal client under a burst of tokens: does its UI loop keep up, and at what frame rate does it draw?

    python bench/tui_burst.py [--tokens 4000] [--rate 2000] [--fps 30] [--no-server]

The client (app/tui) runs headless (Textual's `run_test`, a 120×50 screen: the compositor and the markdown
widgets do their real work). Rows:

- **throttled, in-process**: SSE bytes are fed at `--rate` tokens/s through the client's parser into its
  model, exactly as a reader does; the frame loop draws at most `--fps` times a second, each frame appending
  what came since the last. The command line freezes the garbage collector's view of what exists once the
  app is up (`gc.freeze()`); the first row runs without that, to show why.
- **per-token redraw (baseline)**: the seed's design without its throttle — the reader queues every token for
  the UI, which appends each one to the widget as it comes.
- **throttled, end to end**: the scripted LLM (a process, `--rate` tokens/s) → the app server (a process) →
  SSE → the client, asked through the API.

Columns: the token rate achieved, frames drawn per second while tokens came, tokens per frame, the UI loop's
lag (a 5 ms timer's lateness: how long the loop was busy; p50/p99/max), the most text received but not yet
in the widget, how long after the last token the widget held the whole text, and whether it is exact.
Answers have a paragraph break every 40 tokens, as LLM answers do; `--one-paragraph` makes it one block (the
widget's worst case: it reparses the open block on every append).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from quanda.tui.app import QuandaTUI  # noqa: E402
from quanda.tui.sse import SSEParser  # noqa: E402
from quanda.tui.widgets import MessageMarkdown  # noqa: E402
from bench.common import pct  # noqa: E402

SIZE = (120, 50)
PROBE_S = 0.005
ANSWER_ID, QUESTION_ID = "a" * 24, "b" * 24


def tokens_of(n: int, one_paragraph: bool) -> list[str]:
    out = []
    for i in range(n):
        word = f"tok{i}"
        if i % 40 == 39 and not one_paragraph:
            out.append(word + ".\n\n")
        elif i % 7 == 3:
            out.append(f"**{word}** ")
        else:
            out.append(word + " ")
    return out


def sse_bytes(tokens: list[str]) -> list[bytes]:
    return [f"id: {i}\nevent: thread.message.delta\ndata: {json.dumps({'seq': i, 'kind': 'chunk', 'text': t})}\n\n"
            .encode() for i, t in enumerate(tokens, 1)]


class Probe:
    """The UI loop's lag: how late a 5 ms timer fires (the loop was busy for that long)."""

    def __init__(self):
        self.lags: list[float] = []
        self.backlog = 0
        self.task: asyncio.Task | None = None

    async def run(self, sample=lambda: 0) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(PROBE_S)
            self.lags.append((loop.time() - before - PROBE_S) * 1000)
            self.backlog = max(self.backlog, sample())


class OfflineTUI(QuandaTUI):
    """The client without a server: the benchmark feeds its model."""

    async def follow_conversation(self) -> None:
        return


def seed_conversation(app: QuandaTUI) -> None:
    app.conv.reset({"entries": [
        {"key": "1", "type": "q", "message": {"id": QUESTION_ID, "role": "q", "content": "burst", "immutable": True}},
        {"key": "2", "type": "assistant", "status": "generating",
         "message": {"id": ANSWER_ID, "role": "assistant", "content": "", "last_seq": 0}}],
        "status": {"ok": True, "text": "benchmark"}})


def widget_ready(app: QuandaTUI) -> bool:
    entry = app.conv.last_answer()
    view = entry and app.entry_view(entry)
    return bool(view and view.is_mounted and any(md.ready for md in view.query(MessageMarkdown)))


def answer_widget(app: QuandaTUI) -> MessageMarkdown:
    entry = app.conv.last_answer()
    return next(md for md in app.entry_view(entry).query(MessageMarkdown) if md.state is entry.message)


async def paced(chunks: list, rate: float, each) -> tuple[float, float]:
    """Call `each(chunk)` for every chunk at `rate` a second (in 5 ms batches); (first, last) times."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    done = 0
    while done < len(chunks):
        due = min(len(chunks), int((loop.time() - start) * rate) + 1)
        while done < due:
            await each(chunks[done])
            done += 1
        await asyncio.sleep(PROBE_S)
    return start, loop.time()


async def caught_up(app: QuandaTUI, md: MessageMarkdown, text: str, last: float) -> float:
    """Seconds from `last` until the widget holds the whole text and has laid it out."""
    async with app.frame_done:
        await asyncio.wait_for(app.frame_done.wait_for(lambda: md.source == text), 120)
    async with md.lock:  # the append in flight, if any, has mounted its blocks
        pass
    return asyncio.get_running_loop().time() - last


async def throttled_in_process(tokens: list[str], rate: float, fps: int, freeze_gc: bool = True) -> dict:
    app = OfflineTUI("http://127.0.0.1:9", fps=fps, freeze_gc=freeze_gc)  # frozen: as the command line runs it
    async with app.run_test(size=SIZE, headless=True) as pilot:
        seed_conversation(app)
        await app.until(lambda: widget_ready(app), 30, "the widgets")
        md, state = answer_widget(app), app.conv.last_answer().message
        parser = SSEParser()
        probe = Probe()
        probe.task = asyncio.create_task(probe.run(lambda: len(state.content) - len(md.source)))
        frames_before = app.frames

        async def feed(chunk: bytes) -> None:
            for event in parser.feed(chunk):
                if state.apply(event.event, json.loads(event.data)):
                    app.conv.touch(state)

        first, last = await paced(sse_bytes(tokens), rate, feed)
        frames = app.frames - frames_before
        after = await caught_up(app, md, "".join(tokens), last)
        probe.task.cancel()
        exact = md.source == "".join(tokens)
        await pilot.press("ctrl+q")
    return row(len(tokens), last - first, frames, probe, after, exact)


async def per_token_in_process(tokens: list[str], rate: float) -> dict:
    app = OfflineTUI("http://127.0.0.1:9", freeze_gc=True)
    async with app.run_test(size=SIZE, headless=True) as pilot:
        seed_conversation(app)
        await app.until(lambda: widget_ready(app), 30, "the widgets")
        md, state = answer_widget(app), app.conv.last_answer().message
        queue: asyncio.Queue = asyncio.Queue()  # the seed's queue to the UI thread, one item per token
        async def ui() -> None:
            while True:
                text = await queue.get()
                await md.append(text)  # one redraw per token
                queue.task_done()

        ui_task = asyncio.create_task(ui())
        parser = SSEParser()
        probe = Probe()
        probe.task = asyncio.create_task(probe.run(lambda: len(state.content) - len(md.source)))

        async def feed(chunk: bytes) -> None:
            for event in parser.feed(chunk):
                data = json.loads(event.data)
                state.content += data["text"]
                await queue.put(data["text"])

        first, last = await paced(sse_bytes(tokens), rate, feed)
        await queue.join()
        after = asyncio.get_running_loop().time() - last
        probe.task.cancel()
        ui_task.cancel()
        exact = md.source == "".join(tokens)
        await pilot.press("ctrl+q")
    # one widget update per token, over the time from the first token to the last one drawn
    return row(len(tokens), last - first, len(tokens), probe, after, exact, drawing_s=last - first + after)


LLM_PROCESS = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from tests.llm_server import LLMTestServer, Reply
tokens = json.loads(sys.stdin.readline())
async def main():
    async with LLMTestServer(Reply(chunks=tokens, delay=float(sys.argv[2]))) as srv:
        print(srv.url, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


async def throttled_end_to_end(tokens: list[str], rate: float, fps: int) -> dict:
    from tests.servers import AppServer

    root = str(Path(__file__).resolve().parent.parent)
    llm = subprocess.Popen([sys.executable, "-c", LLM_PROCESS, root, str(1 / rate)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    llm.stdin.write(json.dumps(tokens) + "\n")
    llm.stdin.flush()
    llm_url = llm.stdout.readline().strip()
    server = AppServer(Path(tempfile.mkdtemp()), OLLAMA_HOST=llm_url, OLLAMA_MODEL="quanda-test").start()
    try:
        app = QuandaTUI(server.url, fps=fps, freeze_gc=True)
        async with app.run_test(size=SIZE, headless=True) as pilot:
            await app.until(lambda: app.connected and app.conv.status, 30, "the client to connect")
            await app.client.ask("burst")
            await app.until(lambda: widget_ready(app), 30, "the answer's widget")
            entry = app.conv.last_answer()
            md, state = answer_widget(app), entry.message
            loop = asyncio.get_running_loop()
            probe = Probe()
            probe.task = asyncio.create_task(probe.run(lambda: len(state.content) - len(md.source)))
            times: list[float] = []
            frames_before = app.frames
            seen = [0]

            def stamp() -> bool:  # each frame: when the tokens applied since the last one came (roughly)
                if state.last_seq != seen[0]:
                    seen[0] = state.last_seq
                    times.append(loop.time())
                return state.immutable

            await app.until(stamp, 120, "the whole answer")
            last = loop.time()
            frames = app.frames - frames_before
            after = await caught_up(app, md, state.content, last)
            probe.task.cancel()
            exact = state.content == "".join(tokens)
            await pilot.press("ctrl+q")
    finally:
        server.stop()
        llm.terminate()
        llm.wait(10)
    return row(len(tokens), (times[-1] - times[0]) if len(times) > 1 else float("nan"), frames, probe, after,
               exact)


def row(n: int, seconds: float, frames: int, probe: Probe, after: float, exact: bool,
        drawing_s: float | None = None) -> dict:
    drawing_s = drawing_s or seconds
    return {"rate": n / seconds if seconds else float("nan"),
            "fps": frames / drawing_s if drawing_s else float("nan"),
            "per_frame": n / frames if frames else float("nan"), "lag50": pct(probe.lags, 50),
            "lag99": pct(probe.lags, 99), "lagmax": max(probe.lags, default=float("nan")),
            "backlog": probe.backlog, "after": after * 1000, "exact": exact}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=2000.0, help="tokens per second (default 2000)")
    parser.add_argument("--fps", type=int, default=30, help="the client's frame limit (default 30)")
    parser.add_argument("--baseline-tokens", type=int, default=1000, help="tokens for the per-token baseline "
                        "(it falls so far behind that the full burst would take minutes)")
    parser.add_argument("--one-paragraph", action="store_true")
    parser.add_argument("--no-server", action="store_true", help="skip the end-to-end row")
    args = parser.parse_args()
    tokens = tokens_of(args.tokens, args.one_paragraph)
    rows = [  # first: gc.freeze() is for the whole process, and the other rows run as the command line does
        ("throttled, in-process, GC not frozen", args.tokens,
         await throttled_in_process(tokens, args.rate, args.fps, freeze_gc=False)),
        ("throttled, in-process", args.tokens, await throttled_in_process(tokens, args.rate, args.fps)),
            ("per-token redraw (baseline)", args.baseline_tokens,
             await per_token_in_process(tokens[:args.baseline_tokens], args.rate))]
    if not args.no_server:
        rows.append(("throttled, end to end", args.tokens, await throttled_end_to_end(tokens, args.rate, args.fps)))
    print(f"Terminal client, a burst of {args.rate:,.0f} tokens/s, frame limit {args.fps}/s, "
          f"{'one paragraph' if args.one_paragraph else 'a paragraph every 40 tokens'}, {SIZE[0]}x{SIZE[1]} screen; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (lags include waiting for a core)\n")
    head = ["", "tokens", "tok/s", "frames/s", "tok/frame", "loop lag p50", "p99", "max (ms)", "backlog (chars)",
            "whole text after (ms)", "exact"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("-" * (len(h) + 2) for h in head) + "|")
    for name, n, r in rows:
        cells = [name, f"{n:,}", f"{r['rate']:,.0f}", f"{r['fps']:.1f}", f"{r['per_frame']:.1f}",
                 f"{r['lag50']:.1f}", f"{r['lag99']:.1f}", f"{r['lagmax']:.1f}", f"{r['backlog']:,}",
                 f"{r['after']:,.0f}", "yes" if r["exact"] else "NO"]
        print("| " + " | ".join(cells) + " |")
    print("\n(frames/s: frames drawn while tokens came — for the baseline, widget updates while it caught up; "
          "loop lag: how late a 5 ms timer fired on the UI loop; backlog: text received but not yet in the widget; "
          "whole text after: from the last token to the widget holding all of it)")


if __name__ == "__main__":
    asyncio.run(main())
