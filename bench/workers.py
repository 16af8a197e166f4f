"""Tokens/s at saturation with 1 and with N server processes on one port (`quanda serve --workers N`).

    python bench/workers.py [--workers 1,2] [--answers 40] [--chunks 10000] [--rate 0] [--repeat 3] [--postgres URL]

Per run: the paced Ollama-wire LLM server (`bench.common.llm_serve`, its own process), the app served by
`python -m quanda serve --workers N` (SQLite in a temporary folder, the API token set), and this client, all on
127.0.0.1. The client asks `--answers` questions through the HTTP API and follows each answer over SSE (a bare
socket each, as bench/load.py does); the connections land on the workers as the kernel spreads them
(SO_REUSEPORT), so an answer often runs on one worker and is followed from another, through the store. Then
`/go`: every answer streams `--chunks` chunks as fast as the LLM server writes them (100 lines a write: a paced
line per write would make the Python LLM server, not the app, the bottleneck; `--rate` paces them instead), far
more than one process can take in, so the figure is what the server side gets through: tokens written and delivered
per second of wall time, from /go to the last completion. Every SSE stream and stored answer is checked whole.

On SQLite the workers share one database file, whose writes take turns under one lock; with `--postgres URL`
the same runs on a scratch schema of PostgreSQL, where they do not.

Cores: the workers' CPU (utime + stime, all threads) over the wall time; and the LLM server's and this client's,
which share the same cores. On this 2-core machine the LLM server and the client take a good part of the second
core, so 2 workers cannot double 1; the figure says how close they come.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import MODEL, MachineLoad, answer_chunks, cpu_seconds, free_port, table, verdict, wait_http  # noqa: E402
from bench.cross_server import drop_schema, scratch_schema  # noqa: E402
from bench.load import TOKEN, follow, sse_text  # noqa: E402


def workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


async def one_run(count: int, args: argparse.Namespace, tmp: Path, run: int, store: str) -> dict:
    import httpx

    app_port, llm_port = free_port(), free_port()
    base, llm_base = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{llm_port}"
    name = f"w{count}-{run}-{store}"
    db_url = scratch_schema(args.postgres) if store == "PostgreSQL" else f"sqlite:///{tmp}/{name}.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QUANDA_PORT": str(app_port), "QUANDA_DB_URL": db_url, "OLLAMA_HOST": llm_base, "OLLAMA_MODEL": MODEL,
           "QUANDA_API_TOKEN": TOKEN, "QUANDA_WORKERS": str(count)}
    logs = [open(tmp / f"{name}-llm.log", "wb"), open(tmp / f"{name}-server.log", "wb")]
    llm = subprocess.Popen([sys.executable, str(ROOT / "bench" / "load.py"), "--llm-serve", str(llm_port)], cwd=tmp,
                           stdout=logs[0], stderr=subprocess.STDOUT, env=env)
    server = subprocess.Popen([sys.executable, "-m", "quanda", "serve"], cwd=tmp, stdout=logs[1],
                              stderr=subprocess.STDOUT, env=env)
    try:
        await wait_http(llm_base + "/api/tags", llm, tmp / f"{name}-llm.log")
        await wait_http(base + "/-/plugins", server, tmp / f"{name}-server.log")
        deadline = time.monotonic() + 60
        while sum(1 for line in Path("/proc/net/tcp").read_text().splitlines()[1:]  # every worker listening
                  if int(line.split()[1].split(":")[1], 16) == app_port and line.split()[3] == "0A") < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not all start")
            await asyncio.sleep(0.05)  # other processes starting: no event to wait on
        pids = workers_of(server.pid) if count > 1 else [server.pid]
        limits = httpx.Limits(max_connections=4 * args.answers, max_keepalive_connections=4 * args.answers)
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
                                     limits=limits) as http, httpx.AsyncClient(base_url=llm_base) as llm_http:
            answers = []
            for k in range(args.answers):  # each answer asked on a connection of its own: the kernel picks its worker
                async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"},
                                             timeout=60) as asker:
                    r = await asker.post("/api/messages", json={"role": "q", "content": f"Question {k} (bench q{k})."})
                    r.raise_for_status()
                    r = await asker.post(f"/api/messages/{r.json()['id']}/answer", json={})
                    r.raise_for_status()
                    answers.append(r.json()["answer_id"])
            started = [asyncio.Event() for _ in answers]
            followers = [asyncio.create_task(follow("127.0.0.1", app_port, a, e)) for a, e in zip(answers, started)]
            deadline = time.monotonic() + 60
            while (await llm_http.get("/waiting")).json()["waiting"] < args.answers:
                if time.monotonic() > deadline:
                    raise RuntimeError("the answers' LLM requests did not all arrive")
                await asyncio.sleep(0.05)  # another process's progress: no event to wait on
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 60)
            cpu0 = {pid: cpu_seconds(pid) for pid in pids}
            llm0, me0, t0 = cpu_seconds(llm.pid), sum(os.times()[:2]), time.perf_counter()
            (await llm_http.get(f"/go?tokens={args.chunks}&rate={args.rate}&streams={args.answers}")).raise_for_status()
            bodies = await asyncio.wait_for(asyncio.gather(*followers), timeout=600)
            wall = time.perf_counter() - t0
            cpu = {pid: cpu_seconds(pid) - cpu0[pid] for pid in pids}
            llm_cpu, me_cpu = cpu_seconds(llm.pid) - llm0, sum(os.times()[:2]) - me0
            stored = [(await http.get(f"/api/messages/{a}")).json() for a in answers]
    finally:
        for process in (server, llm):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        for log in logs:
            log.close()
        if store == "PostgreSQL":
            await drop_schema(db_url)
    script = "".join(answer_chunks(args.chunks))
    whole = sum(sse_text(b) == script for b in bodies)
    stored_whole = sum(r["content"] == script and r["immutable"] for r in stored)
    tokens = args.answers * args.chunks
    return {"store": store, "workers": count, "run": run, "wall": wall, "tokens": tokens, "rate": tokens / wall,
            "cores": sum(cpu.values()) / wall, "per_worker": [c / wall for c in cpu.values()],
            "llm_cores": llm_cpu / wall, "client_cores": me_cpu / wall, "whole": whole, "stored": stored_whole,
            "us_per_token": sum(cpu.values()) * 1e6 / tokens}


async def main(args: argparse.Namespace) -> int:
    counts = [int(c) for c in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    load = MachineLoad((os.getpid(),)).start()
    rows = []
    try:
        stores = ["SQLite"] + (["PostgreSQL"] if args.postgres else [])
        for store in stores:
            for run in range(args.repeat):  # interleaved: 1, 2, 1, 2 … so that the machine's moods fall on both
                for count in counts:
                    rows.append(await one_run(count, args, tmp, run, store))
                    print(f"  {store}, {count} worker(s), run {run + 1}: {rows[-1]['rate']:,.0f} tokens/s", flush=True)
        load.stop()
    except BaseException:
        print(f"logs kept in {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    offered = (f"offered at {args.rate:,.0f}/s ({args.answers * args.rate:,.0f}/s in all)" if args.rate > 0 else
               "sent unpaced, 100 lines a write")
    print(f"\nTokens/s at saturation: {args.answers} answers at once through the HTTP API, each {args.chunks:,} chunks "
          f"{offered}, followed over SSE; "
          f"`quanda serve --workers N`.\nMachine: {os.cpu_count()} cores; load average {load.loadavg} at the "
          f"start. Rerun on a quiet machine before quoting.\n")
    print(table(["store", "workers", "run", "tokens", "wall s", "tokens/s", "workers' cores", "each worker", "CPU µs/token",
                 "LLM server cores", "client cores", "whole (SSE / stored)"],
                [[r["store"], str(r["workers"]), str(r["run"] + 1), f"{r['tokens']:,}", f"{r['wall']:.2f}", f"{r['rate']:,.0f}",
                  f"{r['cores']:.2f}", " / ".join(f"{c:.2f}" for c in r["per_worker"]), f"{r['us_per_token']:.0f}",
                  f"{r['llm_cores']:.2f}", f"{r['client_cores']:.2f}",
                  f"{r['whole']} / {r['stored']} of {args.answers}"] for r in rows]))
    print()
    ok = all(r["whole"] == args.answers and r["stored"] == args.answers for r in rows)
    print(verdict(ok, "every SSE stream and stored answer whole, every run"))
    for store in stores:
        best = {c: max(r["rate"] for r in rows if r["workers"] == c and r["store"] == store) for c in counts}
        cores = {c: max(r["cores"] for r in rows if r["workers"] == c and r["store"] == store) for c in counts}
        for c in counts:
            if c > 1 and 1 in best:
                print(f"info  {store}: {c} workers / 1: {best[c] / best[1]:.2f}x tokens/s (best run of each: "
                      f"{best[c]:,.0f} / {best[1]:,.0f}; the workers' cores at most {cores[c]:.2f} / {cores[1]:.2f})")
    return 0 if ok else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--answers", type=int, default=40)
    parser.add_argument("--chunks", type=int, default=10000, help="chunks per answer")
    parser.add_argument("--rate", type=float, default=0.0, help="chunks/s offered per answer (0: as fast as the LLM server writes, 100 lines a write)")
    parser.add_argument("--postgres", default=os.environ.get("QUANDA_BENCH_POSTGRES_URL", ""),
                        help="also on PostgreSQL (a scratch schema of this database)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per worker count, interleaved")
    return parser.parse_args()


if __name__ == "__main__":
    import uvloop

    sys.exit(uvloop.run(main(parse_args())))
