"""Load through the page's own transport (issue 15): `python bench/load.py --mode ws`.

`--sessions` (50) browser-like sessions (bench/sessions.py), each its own owner: a user created in the store and
logged in through `POST /login` (`bench.common.new_owners`; the server runs with QUANDA_AUTH=accounts), each with
one WebSocket tab that sends its question as the chat form does (`chat.send`) and follows the answer as the
page does. The answers come from the paced LLM server (`bench.common.llm_serve`): once every session's answer
bubble is on its page and followed (a `bench.ping` round trip after the `view`), the bench says `/go`, and each
answer streams `--rate` (200) tokens/s for `--seconds` (30) s of mixed markdown. Meanwhile `--todo-sessions` (5)
more sessions, each its own owner on the todo page, add, toggle, rename and delete todos at `--todo-rate` (2)
actions/s each, every action timed until the frame that shows its result.

As every session comes from 127.0.0.1 the server's per-address WebSocket limits are raised (see
`bench.sessions.WS_LIMITS`; the run prints them); the per-tab and per-owner limits are as shipped.

Measured:
- tokens/s delivered: the answers' tokens that reached their session, over the time from /go to the last
  answer's end;
- token → frame latency: a token's arrival in the first frame that holds it minus the LLM server's send stamp
  (CLOCK_MONOTONIC, shared by the processes), as in bench/chat_stream.py;
- errors: page notices, refused actions, closed sockets, results that did not come (each session's);
- lost or duplicated tokens: the stored answer (GET /api/messages/{id}, as its owner) must equal the script,
  every session must have seen every token index, and the page rebuilt from all its frames with htmx's swaps
  (bench/page.py; `--no-rebuild` skips it) must show exactly the final HTML;
- the server's CPU (utime + stime, all threads) and RSS (VmRSS) before /go (sessions connected, answers
  waiting), during the answers, and after (every session gone).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from bench.common import MachineLoad, answer_chunks, cpu_seconds, new_owners, pct, table, verdict
from bench.sessions import LIMITS_NOTE, ChatSession, Servers, TodoSession, server_pids
from bench.sessions import rss_mb as process_rss_mb

P99_TARGET_MS = 100.0
nan = float("nan")


def rss_mb(pid: int) -> float:
    """The server's RSS: summed over its workers with --workers."""
    return sum(process_rss_mb(p) for p in server_pids(pid))


def server_cpu(pid: int) -> float:
    """The server's CPU seconds: summed over its workers with --workers."""
    return sum(cpu_seconds(p) for p in server_pids(pid))


async def server_window(pid: int, seconds: float) -> dict:
    """The server's CPU (cores) and RSS over a quiet window."""
    cpu0, t0 = server_cpu(pid), time.perf_counter()
    await asyncio.sleep(seconds)  # a measurement window, not a synchronisation
    wall = time.perf_counter() - t0
    rss = rss_mb(pid)
    return {"wall": wall, "cpu": server_cpu(pid) - cpu0, "rss": rss, "rss_peak": rss}


async def run(args: argparse.Namespace, tmp: Path) -> int:
    import httpx

    tokens = int(args.rate * args.seconds)
    load = MachineLoad(())
    async with Servers(tmp) as s:
        pid = s.server.pid
        load.pids = (*server_pids(pid), s.llm.pid)
        owners = await new_owners(s.base, args.sessions + args.todo_sessions, s.db_url)
        chat_owners, todo_owners = owners[:args.sessions], owners[args.sessions:]
        async with httpx.AsyncClient(timeout=60) as http:
            (await http.get(s.llm_base + "/reset")).raise_for_status()
            first_pages = [(await http.get(s.base + "/", headers=o)).text for o in chat_owners]
        chats = [ChatSession(s.base, o) for o in chat_owners]
        todos = [TodoSession(s.base, o, f"t{k}") for k, o in enumerate(todo_owners)]
        lags: list[float] = []
        samples: list[float] = []

        async def probe() -> None:  # how late this (client) event loop runs: part of every measured latency
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.002)
                lags.append((time.perf_counter() - t - 0.002) * 1000)

        async def sample_rss() -> None:
            while True:
                samples.append(rss_mb(pid))
                await asyncio.sleep(0.5)

        try:
            for session in [*chats, *todos]:
                await session.open()
            for k, chat in enumerate(chats):
                await chat.ask(f"Explain it at length (bench s{k}).", tokens)
            deadline = time.monotonic() + 120
            async with httpx.AsyncClient(timeout=30) as http:
                while (await http.get(s.llm_base + "/waiting")).json()["waiting"] < args.sessions:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the answers' LLM requests did not all arrive within 120 s")
                    await asyncio.sleep(0.05)  # another process's progress: no event to wait on
            await asyncio.wait_for(asyncio.gather(*(c.followed.wait() for c in chats)), 60)
            await asyncio.gather(*(c.ping() for c in chats))  # each view (the follow) is done
            before = await server_window(pid, args.window)
            load.start()
            prober = asyncio.create_task(probe())
            sampler = asyncio.create_task(sample_rss())
            stop = asyncio.Event()
            todo_tasks = [asyncio.create_task(t.run(args.todo_rate, stop)) for t in todos]
            cpu0, t0 = server_cpu(pid), time.perf_counter()
            others0 = cpu_seconds(os.getpid()), cpu_seconds(s.llm.pid)
            await s.go(tokens, args.rate, args.sessions)
            answered = await asyncio.gather(*(c.answer(120 + 3 * args.seconds) for c in chats), return_exceptions=True)
            wall, cpu = time.perf_counter() - t0, server_cpu(pid) - cpu0
            ours = [(cpu_seconds(p) - c) / wall for p, c in zip((os.getpid(), s.llm.pid), others0)]
            stop.set()
            await asyncio.wait_for(asyncio.gather(*todo_tasks), 30)
            prober.cancel()
            sampler.cancel()
            during = {"wall": wall, "cpu": cpu, "rss": rss_mb(pid), "rss_peak": max(samples, default=float("nan"))}
            load.stop()
            async with httpx.AsyncClient(timeout=60) as http:
                stamps = (await http.get(s.llm_base + "/stamps")).json()
                stored = [(await http.get(f"{s.base}/api/messages/{c.answer_id}", headers=o)).json()
                          if c.answer_id else {} for c, o in zip(chats, chat_owners)]
        finally:
            for session in [*chats, *todos]:
                await session.close()
        after = await server_window(pid, args.window)
    failures = [f"session {k}: {r}" for k, r in enumerate(answered) if isinstance(r, BaseException)]
    during["others"] = ours
    return report(args, tokens, chats, todos, first_pages, stamps, stored, failures, before, during, after, lags, load)


def report(args, tokens, chats, todos, first_pages, stamps, stored, failures, before, during, after, lags,
           load) -> int:
    from quanda.render import render_blocks
    from bench.page import normalize

    script = "".join(answer_chunks(tokens))
    latencies, firsts, send_lag = [], [], []
    for k, chat in enumerate(chats):
        sent = stamps.get(f"s{k}", {}).get("sent", [])
        send_lag += [(a - d) / 1e6 for a, d in zip(sent, stamps.get(f"s{k}", {}).get("due", []))]
        if len(sent) != tokens:
            failures.append(f"session {k}: the LLM server sent {len(sent)} of {tokens} tokens")
            continue
        latencies += [(arrival - sent[i]) / 1e6 for first, last, arrival in chat.deliveries
                      for i in range(first, last + 1)]
        if chat.deliveries:
            firsts.append((chat.deliveries[0][2] - sent[0]) / 1e6)
    delivered = sum(c.top + 1 for c in chats)
    whole_stored = sum(r.get("content") == script and r.get("immutable") is True for r in stored)
    whole_seen = sum(c.top == tokens - 1 for c in chats)
    rebuilt = None
    if not args.no_rebuild:
        t = time.perf_counter()
        expected = normalize(render_blocks(script))
        rebuilt = sum(c.rebuilt_answer(page) == (expected, "") for c, page in zip(chats, first_pages)
                      if c.answer_id)
        rebuild_s = time.perf_counter() - t
    errors = [f"chat {k}: {e}" for k, c in enumerate(chats) for e in c.errors] + \
             [f"todo {t.label}: {e}" for t in todos for e in t.errors] + failures
    todo_ms = [x for t in todos for x in t.latencies]
    n = args.sessions
    print(f"Load through the page's transport: {n} sessions (each its own owner, one WebSocket tab) each streaming "
          f"an answer of {tokens:,} tokens at {args.rate:,.0f} tokens/s ({args.seconds:g} s) from the paced LLM "
          f"server, while {len(todos)} more sessions use the todo app at {args.todo_rate:g} actions/s each.\n"
          f"Latency = first frame holding the token - the LLM server's send stamp. Server: uvicorn, the shipped "
          f"plugins, SQLite, {getattr(args, 'workers', 1)} process(es) (--workers; CPU and RSS summed over them); "
          f"{LIMITS_NOTE}.\nMachine: {load.describe()} (this process, the LLM server and the app "
          f"count as ours).\n")
    print(table(["sessions", "tokens delivered", "tokens/s delivered", "p50 ms", "p99 ms", "max ms", "first p50 ms",
                 "whole: stored / seen / page", "errors"],
                [[f"{n} answering", f"{delivered:,} of {n * tokens:,}", f"{delivered / during['wall']:,.0f}",
                  f"{pct(latencies, 50):.1f}", f"{pct(latencies, 99):.1f}", f"{max(latencies, default=nan):.1f}",
                  f"{pct(firsts, 50):.1f}", f"{whole_stored} / {whole_seen} / {'-' if rebuilt is None else rebuilt} "
                                            f"of {n}",
                  str(sum(len(c.errors) for c in chats) + len(failures))],
                 [f"{len(todos)} on todos", f"{len(todo_ms):,} actions",
                  f"{len(todo_ms) / during['wall']:.1f} actions/s",
                  f"{pct(todo_ms, 50):.1f}", f"{pct(todo_ms, 99):.1f}", f"{max(todo_ms, default=nan):.1f}",
                  "", "(round trip: action -> its result's frame)", str(sum(len(t.errors) for t in todos))]]))
    print(f"\nwhere the time goes: LLM send lag p99 {pct(send_lag, 99):.1f} ms (the pacer's own lateness); client loop "
          f"lag p99 {pct(lags, 99):.1f} ms (how late this bench's event loop ran); wall from /go to the last answer's "
          f"end {during['wall']:.1f} s (pacing {args.seconds:g} s); meanwhile this bench's client used "
          f"{during['others'][0]:.2f} cores and the LLM server {during['others'][1]:.2f}; server CPU "
          f"{during['cpu'] * 1e6 / max(delivered, 1):.0f} µs per token delivered"
          + (f"; pages rebuilt in {rebuild_s:.1f} s after the run" if rebuilt is not None else "") + ".\n")
    print(table(["server", "window s", "CPU s", "cores", "RSS MB", "peak RSS MB"],
                [[name, f"{w['wall']:.1f}", f"{w['cpu']:.2f}", f"{w['cpu'] / w['wall']:.2f}", f"{w['rss']:.0f}",
                  f"{w['rss_peak']:.0f}"]
                 for name, w in [("before /go (sessions connected, answers waiting)", before),
                                 ("during the answers", during), ("after (every session gone)", after)]]))
    print()
    for e in errors[:10]:
        print(f"error  {e}")
    p99 = pct(latencies, 99)
    lost = n - min(whole_stored, whole_seen, rebuilt if rebuilt is not None else n)
    checks = [(p99 <= P99_TARGET_MS, f"p99 token->frame <= {P99_TARGET_MS:.0f} ms with {n} sessions at "
                                     f"{args.rate:,.0f} tokens/s: {p99:.1f} ms"),
              (not errors, f"zero errors: {len(errors)}"),
              (lost == 0, f"zero lost or duplicated tokens: {whole_stored} stored answers equal the script, "
                          f"{whole_seen} sessions saw every token"
               + (f", {rebuilt} rebuilt pages show exactly the final HTML" if rebuilt is not None
                  else " (pages not rebuilt)") + f", of {n}")]
    for passed, text in checks:
        print(verdict(passed, text))
    print(f"info  todo round trip p50 / p99: {pct(todo_ms, 50):.1f} / {pct(todo_ms, 99):.1f} ms over "
          f"{len(todo_ms):,} actions")
    return 0 if all(c[0] for c in checks) else 1
