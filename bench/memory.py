"""Memory: the server's RSS idle, with many sessions streaming, and over a soak of continuous use (issue 15).

    python bench/memory.py [--minutes 10] [--every 10] [--sessions 50] [--stream-seconds 10] [--rate 200]
                           [--workers 8] [--tracemalloc] [--smoke]

Exit status 1 when a target is missed. Two processes besides this one run on 127.0.0.1 (`bench.sessions.Servers`):
the paced LLM server and the app as shipped (uvicorn, every built-in plugin, SQLite, accounts mode with the
per-address WebSocket limits raised: every session comes from 127.0.0.1). RSS is VmRSS of the app's process.

1. idle: RSS once the server answers /-/health and has been left alone for a few seconds.
2. soak, `--minutes` long: `--workers` people (each a user of their own) use the app without a pause, each in
   turn: opens a tab, asks a question whose answer (400 tokens at 200 tokens/s, ~2 s) streams into it while a
   second tab of theirs opens and closes; opens a tab on the stream simulator and runs it (60 chunks, 10-40 ms
   apart) to its end; opens a tab on the todos and adds, toggles, renames and deletes for ~3 s; each tab closes
   when its task is done. RSS sampled every `--every` s; the growth is from the sample at minute 2 (the nearest)
   to the last one.
3. `--sessions` sessions connected and streaming: that many browser-like sessions (bench/sessions.py), each its
   own owner (a user logged in through POST /login), each streaming an answer at `--rate` tokens/s for
   `--stream-seconds`; RSS sampled every 0.25 s, the peak reported. This phase comes after the soak: run first,
   the memory its peak takes and frees would stay in the process for reuse (CPython and malloc keep it) and a
   soak that fits in it would hide a slow leak (the first runs, in that order, showed a flat line at the peak).

`--tracemalloc` runs the server with tracemalloc on (`bench.sessions.TRACEMALLOC_ENV`: it writes a snapshot on
SIGUSR1): the bench takes one at minute 2 and one at the end and prints the allocation sites that changed most
between them, and the total traced at each (tracemalloc costs CPU and memory: its RSS figures are not the
target's). `--smoke`: a few seconds of each phase, to check the script works.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import MachineLoad, new_owners, table, verdict  # noqa: E402
from bench.sessions import LIMITS_NOTE, ChatSession, Servers, Session, SimSession, TodoSession, rss_mb  # noqa: E402

IDLE_TARGET_MB = 150.0
SESSIONS_TARGET_MB = 300.0
GROWTH_TARGET = 0.05
SOAK_ANSWER_TOKENS, SOAK_RATE = 400, 200.0


class Soak:
    """The soak's people and what they did."""

    def __init__(self, servers: Servers, owners: list[dict], until: float):
        self.s, self.owners, self.until = servers, owners, until
        self.counts = {"tabs": 0, "answers": 0, "simulator runs": 0, "todo actions": 0}
        self.errors: list[str] = []

    async def tab(self, session: Session) -> Session:
        self.counts["tabs"] += 1
        return await session.open()

    async def done_with(self, *sessions: Session) -> None:
        for session in sessions:
            await session.close()
            self.errors += session.errors

    async def answer(self, owner: dict, n: int) -> None:
        chat = await self.tab(ChatSession(self.s.base, owner))
        other = None
        try:
            await chat.ask(f"Question {n}, please answer (bench soak).", SOAK_ANSWER_TOKENS)
            await self.s.go(SOAK_ANSWER_TOKENS, SOAK_RATE)
            other = await self.tab(Session(self.s.base, owner, page="todo"))  # a second tab comes and goes
            await other.close()
            await chat.answer(60)
            self.counts["answers"] += 1
        except (TimeoutError, RuntimeError) as exc:
            self.errors.append(str(exc))
        finally:
            await self.done_with(chat, *([other] if other else []))

    async def simulate(self, owner: dict) -> None:
        sim = await self.tab(SimSession(self.s.base, owner))
        try:
            await sim.run(60, 10, 40, 60)
            self.counts["simulator runs"] += 1
        except TimeoutError as exc:
            self.errors.append(str(exc))
        finally:
            await self.done_with(sim)

    async def todos(self, owner: dict, n: int) -> None:
        todo = await self.tab(TodoSession(self.s.base, owner, f"w{n}"))
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(3.0, stop.set)  # a few seconds of use: a workload, not a wait
        try:
            await todo.run(4.0, stop)
            self.counts["todo actions"] += len(todo.latencies)
        finally:
            await self.done_with(todo)

    async def person(self, k: int) -> None:
        owner = self.owners[k]
        tasks = itertools.cycle(["answer", "simulate", "todos"][k % 3:] + ["answer", "simulate", "todos"][:k % 3])
        for n in itertools.count():
            if time.monotonic() >= self.until:
                return
            task = next(tasks)
            try:
                if task == "answer":
                    await self.answer(owner, n)
                elif task == "simulate":
                    await self.simulate(owner)
                else:
                    await self.todos(owner, k)
            except OSError as exc:  # a refused connection
                self.errors.append(f"{task}: {exc!r}")


async def streaming_peak(s: Servers, owners: list[dict], args: argparse.Namespace) -> tuple[float, float, int]:
    """(RSS with every session connected before the answers start, peak RSS while they stream, tokens seen)."""
    import httpx

    tokens = int(args.rate * args.stream_seconds)
    chats = [ChatSession(s.base, o) for o in owners]
    peak = 0.0
    try:
        for k, chat in enumerate(chats):
            await chat.open()
            await chat.ask(f"Explain it at length (bench m{k}).", tokens)
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient(timeout=30) as http:
            while (await http.get(s.llm_base + "/waiting")).json()["waiting"] < len(chats):
                if time.monotonic() > deadline:
                    raise RuntimeError("the answers' LLM requests did not all arrive within 120 s")
                await asyncio.sleep(0.05)  # another process's progress: no event to wait on
        connected = rss_mb(s.server.pid)
        await s.go(tokens, args.rate, len(chats))
        answers = asyncio.gather(*(c.answer(120 + 3 * args.stream_seconds) for c in chats))
        while not answers.done():
            peak = max(peak, rss_mb(s.server.pid))
            await asyncio.wait([answers], timeout=0.25)
        answers.result()
        errors = [e for c in chats for e in c.errors]
        if errors:
            raise RuntimeError(f"{len(errors)} session errors, first: {errors[0]}")
        return connected, max(peak, rss_mb(s.server.pid)), sum(c.top + 1 for c in chats)
    finally:
        for chat in chats:
            await chat.close()


async def snapshot(s: Servers, trace_dir: Path, n: int) -> Path:
    """Ask the traced server for snapshot n and wait until it is written."""
    os.kill(s.server.pid, signal.SIGUSR1)
    done = trace_dir / f"snapshot-{n}.done"
    deadline = time.monotonic() + 120
    while not done.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server wrote no snapshot {n} within 120 s")
        await asyncio.sleep(0.1)  # another process's file: no event to wait on
    return trace_dir / f"snapshot-{n}.pickle"


async def main(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="quanda-memory-"))
    trace_dir = tmp / "trace" if args.tracemalloc else None
    if trace_dir:
        trace_dir.mkdir()
    load = MachineLoad(())
    snapshots: list[Path] = []
    try:
        async with Servers(tmp, str(trace_dir) if trace_dir else None) as s:
            pid = s.server.pid
            load.pids = (pid, s.llm.pid, os.getpid())
            load.start()
            await asyncio.sleep(args.settle)  # the server left alone: what idle means
            idle = rss_mb(pid)
            owners = await new_owners(s.base, args.sessions + args.workers, s.db_url)
            soak = Soak(s, owners[args.sessions:], time.monotonic() + args.minutes * 60)
            samples: list[tuple[float, float]] = []
            t0 = time.monotonic()
            people = [asyncio.create_task(soak.person(k)) for k in range(args.workers)]
            mark = min(120.0, args.minutes * 60 / 5)  # minute 2 (a fifth of the soak when it is shorter)
            while True:
                elapsed = time.monotonic() - t0
                samples.append((elapsed, rss_mb(pid)))
                if trace_dir and not snapshots and elapsed >= mark:
                    snapshots.append(await snapshot(s, trace_dir, 1))
                if elapsed >= args.minutes * 60:
                    break
                await asyncio.sleep(max(0.0, t0 + len(samples) * args.every - time.monotonic()))  # the sampling clock
            await asyncio.wait_for(asyncio.gather(*people), 120)
            samples.append((time.monotonic() - t0, rss_mb(pid)))
            if trace_dir:
                snapshots.append(await snapshot(s, trace_dir, 2))
            # after the soak: at its start, the heap these sessions grow would hide a slow leak (freed
            # memory Python keeps for reuse), and the soak must show one
            connected, peak, streamed = await streaming_peak(s, owners[:args.sessions], args)
            load.stop()
            report_top(snapshots)
    except BaseException:
        print(f"logs kept in {tmp}", file=sys.stderr)
        raise
    status = report(args, idle, connected, peak, streamed, samples, mark, soak, load)
    shutil.rmtree(tmp, ignore_errors=True)
    return status


def report_top(snapshots: list[Path], top: int = 15) -> None:
    if len(snapshots) < 2:
        return
    import tracemalloc

    first, last = (tracemalloc.Snapshot.load(str(p)) for p in snapshots)
    totals = [sum(stat.size for stat in snap.statistics("filename")) / 1e6 for snap in (first, last)]
    print(f"tracemalloc: Python allocations {totals[0]:.2f} MB at the first snapshot, {totals[1]:.2f} MB at the last; "
          f"the {top} allocation sites that changed most between them")
    for stat in last.compare_to(first, "lineno")[:top]:
        print(f"  {stat.size_diff / 1e3:+10.1f} kB {stat.count_diff:+8d} blocks  {stat.traceback[0]}")
    print()


def report(args, idle, connected, peak, streamed, samples, mark, soak, load) -> int:
    at_mark = min(samples, key=lambda s: abs(s[0] - mark))
    end = samples[-1]
    growth = (end[1] - at_mark[1]) / at_mark[1]
    print(f"Memory of the app's process (VmRSS, MB = 10^6 bytes): uvicorn, the shipped plugins, SQLite; "
          f"{LIMITS_NOTE}.\nMachine: {load.describe()}" + (" — TRACEMALLOC ON: diagnosis, not the target's figures"
                                                           if args.tracemalloc else "") + ".\n")
    print(table(["phase", "RSS MB", "target"],
                [["idle after start", f"{idle:.1f}", f"< {IDLE_TARGET_MB:.0f}"],
                 [f"soak at {at_mark[0] / 60:.1f} min", f"{at_mark[1]:.1f}", ""],
                 [f"soak at {end[0] / 60:.1f} min (end)", f"{end[1]:.1f}", f"growth < {GROWTH_TARGET:.0%}"],
                 [f"then {args.sessions} sessions connected (answers not started)", f"{connected:.1f}", ""],
                 [f"{args.sessions} sessions streaming ({args.rate:,.0f} tokens/s for {args.stream_seconds:g} s each), "
                  "peak", f"{peak:.1f}", f"< {SESSIONS_TARGET_MB:.0f}"]]))
    per_row = max(1, min(6, round(60 / args.every)))
    print(f"\nsoak ({args.workers} people, each its own user; {args.minutes:g} min): RSS MB every {args.every:g} s, "
          f"six a row")
    rows = [samples[i:i + per_row] for i in range(0, len(samples), per_row)]
    print(table(["from", *[f"+{k * args.every:g} s" for k in range(per_row)]],
                [[f"{r[0][0] / 60:.1f} min", *[f"{x[1]:.1f}" for x in r], *[""] * (per_row - len(r))] for r in rows]))
    print("\nwhat the soak did: " + ", ".join(f"{v:,} {k}" for k, v in soak.counts.items())
          + f"; then {streamed:,} tokens streamed to the {args.sessions} sessions")
    for e in soak.errors[:10]:
        print(f"error  {e}")
    checks = [(idle < IDLE_TARGET_MB, f"idle RSS < {IDLE_TARGET_MB:.0f} MB: {idle:.1f} MB"),
              (peak < SESSIONS_TARGET_MB, f"RSS with {args.sessions} sessions connected and streaming < "
                                          f"{SESSIONS_TARGET_MB:.0f} MB: peak {peak:.1f} MB"),
              (growth < GROWTH_TARGET, f"soak growth from {at_mark[0] / 60:.1f} min to {end[0] / 60:.1f} min < "
                                       f"{GROWTH_TARGET:.0%}: {growth:+.1%} ({at_mark[1]:.1f} -> {end[1]:.1f} MB)"),
              (not soak.errors, f"the soak went without errors: {len(soak.errors)}")]
    for passed, text in checks:
        print(verdict(passed, text))
    return 0 if all(c[0] for c in checks) else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between RSS samples in the soak")
    parser.add_argument("--sessions", type=int, default=50, help="sessions connected and streaming at once")
    parser.add_argument("--stream-seconds", type=float, default=10.0, help="how long each of their answers streams")
    parser.add_argument("--rate", type=float, default=200.0, help="tokens/s of each of their answers")
    parser.add_argument("--workers", type=int, default=8, help="people using the app during the soak")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds the server is left alone before idle")
    parser.add_argument("--tracemalloc", action="store_true", help="trace the server's allocations (diagnosis)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds of each phase: does the script work")
    args = parser.parse_args()
    if args.smoke:
        args.minutes, args.every, args.sessions, args.stream_seconds, args.workers, args.settle = 0.1, 1, 3, 1, 3, 0.5
    return args


if __name__ == "__main__":
    arguments = parse_args()
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(main(arguments)))
    sys.exit(uvloop.run(main(arguments)))
