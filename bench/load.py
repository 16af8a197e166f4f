"""Load: many answers at once through the HTTP API (issue 10), or many browser sessions at once (issue 15).

    python bench/load.py [--mode api] [--answers 50] [--chunks 530] [--rate 200] [--variants ours,before]
                         [--py-spy PATH]
    python bench/load.py --mode ws [--sessions 50] [--rate 200] [--seconds 30] [--todo-sessions 5]
                         [--todo-rate 2] [--no-rebuild] [--window 3] [--workers N]

Exit status 1 when a target is missed.

`--mode ws` (bench/load_ws.py): `--sessions` browser-like WebSocket sessions (bench/sessions.py), each its own
owner (a user of their own, the server in accounts mode), each streaming an answer of `--rate` x `--seconds`
tokens from the paced LLM server, while `--todo-sessions` more sessions use the todo app; see that module.

`--mode api` (the default). Per variant three processes run on 127.0.0.1: the paced Ollama-wire LLM
server (`bench.common.llm_serve`), the app (uvicorn, `create_app` with the shipped plugins, a temporary SQLite
file, `QUANDA_API_TOKEN` set) and this client. "ours" is this tree; "before" is the same app as of commit
e1594fc (extracted from git history by `bench.common.checkout_before`), the code issue 10 started from.

The client does what an API user does, with `Authorization: Bearer <token>`: `POST /api/messages`
{"role": "q"} for each question, `POST /api/messages/{id}/answer` for each (the chat plugin starts the
answers at once, each a request to the LLM server), then follows every answer with `GET
/api/messages/{id}/events` (server-sent events: the snapshot, every delta, the completion). Once the LLM server
holds every request (`GET /waiting`), the bench says `/go`: each answer streams `--chunks` chunks paced at
`--rate` chunks/s (the mixed markdown of bench/chat_stream.py, ~5 characters a chunk).

Measured from /go to the last stream's completion: wall time against the LLM's own pacing (chunks / rate:
the server keeps pace when the two are close); the server's CPU (utime + stime, all threads) per chunk
written; and every stream whole: the text rebuilt from each SSE stream and the stored answer both equal the
script. The SSE client is a bare socket per stream that keeps the body and parses it after the run (an
httpx client parsing 10,000 events a second would need a core of its own on this machine and slow the
measurement down). Profile: `--py-spy PATH` samples the ours server (all threads; `python bench/stacks.py PATH`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if os.environ.get("QUANDA_BENCH_APP_DIR"):  # a server of another version of the app (bench.common.checkout_before)
    sys.path.insert(0, os.environ["QUANDA_BENCH_APP_DIR"])

from bench.common import (BEFORE_COMMIT, MODEL, MachineLoad, answer_chunks, checkout_before,  # noqa: E402
                          cpu_seconds, free_port, llm_serve, pct, serve_app, served, stop_process, table, verdict,
                          wait_http)

TOKEN = "bench-load-token"
KEEP_PACE = 1.5  # wall time at most this times the LLM's own pacing


def serve(port: int, db_url: str, llm_url: str) -> None:
    import logging

    Settings, create_app = served("config").Settings, served("server").create_app
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("quanda.bench").warning("serving the app from %s", Path(served("server").__file__).parent)
    settings = Settings(db_url=db_url, port=port, ollama_host=llm_url, ollama_model=MODEL, api_token=TOKEN)
    serve_app(create_app(settings, entry_point_group=None), port)


def sse_text(body: bytes) -> str | None:
    """The answer's text as an SSE client rebuilds it from the response body (chunked transfer encoding): the
    snapshot, then every delta; None unless it ends with the completion."""
    raw, pos = bytearray(), 0
    while True:  # de-chunk (the body was kept up to the completion; the final empty chunk may not be in it)
        eol = body.find(b"\r\n", pos)
        size = int(body[pos:eol], 16) if eol > pos else 0
        if size == 0:
            break
        raw += body[eol + 2:eol + 2 + size]
        pos = eol + 4 + size
    text, done = "", False
    for line in raw.decode().split("\n"):
        if line.startswith("data: "):
            data = json.loads(line[6:])
            if data["kind"] == "override":
                text = data["text"]
            elif data["kind"] == "chunk":
                text += data["text"]
            elif data["kind"] == "immutable":
                done = True
    return text if done else None


async def follow(host: str, port: int, answer_id: str, started: asyncio.Event) -> bytes:
    """Follow an answer over SSE with the leanest client there is (a socket; the body kept, parsed later), so
    that the client's own CPU does not slow the measurement: returns the response body once it holds the
    completion event."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /api/messages/{answer_id}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 f"Authorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"events of {answer_id}: {head[:100]!r}")
    parts: list[bytes] = []
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                raise RuntimeError(f"the events of {answer_id} ended before the answer did")
            parts.append(data)
            started.set()
            if b"thread.run.completed" in data or b"thread.run.completed" in b"".join(parts[-2:]):
                return b"".join(parts)
    finally:
        writer.close()


async def one_variant(name: str, args: argparse.Namespace, tmp: Path, py_spy: str | None,
                      load: MachineLoad) -> dict:
    import httpx

    app_port, llm_port = free_port(), free_port()
    base, llm_base = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{llm_port}"
    me = str(Path(__file__).resolve())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if name == "before":
        before = checkout_before(tmp / "before")
        if before is None:
            raise RuntimeError("git is needed to extract the app before issue 10")
        env["QUANDA_BENCH_APP_DIR"] = str(before)
    logs = [open(tmp / f"{name}-llm.log", "wb"), open(tmp / f"{name}-server.log", "wb")]
    llm = subprocess.Popen([sys.executable, me, "--llm-serve", str(llm_port)], cwd=tmp, stdout=logs[0],
                           stderr=subprocess.STDOUT, env=env)
    server = subprocess.Popen([sys.executable, me, "--serve", str(app_port), f"sqlite:///{tmp}/{name}.db", llm_base],
                              cwd=tmp, stdout=logs[1], stderr=subprocess.STDOUT, env=env)
    sampler = None
    try:
        await wait_http(llm_base + "/api/tags", llm, tmp / f"{name}-llm.log")
        await wait_http(base + "/-/plugins", server, tmp / f"{name}-server.log")
        limits = httpx.Limits(max_connections=4 * args.answers, max_keepalive_connections=4 * args.answers)
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
                                     limits=limits) as http, httpx.AsyncClient(base_url=llm_base) as llm_http:
            questions = []
            for k in range(args.answers):
                r = await http.post("/api/messages", json={"role": "q", "content": f"Question {k} (bench q{k})."})
                r.raise_for_status()
                questions.append(r.json()["id"])
            answers = []
            for qid in questions:  # the chat starts each answer at once: its LLM request waits for /go
                r = await http.post(f"/api/messages/{qid}/answer", json={})
                r.raise_for_status()
                answers.append(r.json()["answer_id"])
            started = [asyncio.Event() for _ in answers]
            followers = [asyncio.create_task(follow("127.0.0.1", app_port, a, e)) for a, e in zip(answers, started)]
            deadline = time.monotonic() + 60
            while (await llm_http.get("/waiting")).json()["waiting"] < args.answers:
                if time.monotonic() > deadline:
                    raise RuntimeError("the answers' LLM requests did not all arrive")
                await asyncio.sleep(0.05)  # another process's progress: no event to wait on
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 60)  # every snapshot is in
            if py_spy:
                sampler = subprocess.Popen(["py-spy", "record", "--format", "raw", "--rate", "250", "--native",
                                            "-o", py_spy, "--pid", str(server.pid)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
            (await llm_http.get(f"/go?tokens={args.chunks}&rate={args.rate}&streams={args.answers}")).raise_for_status()
            bodies = await asyncio.wait_for(asyncio.gather(*followers), timeout=120 + 10 * args.chunks / args.rate)
            wall, cpu = time.perf_counter() - t0, cpu_seconds(server.pid) - cpu0
            load.account(server.pid, llm.pid)
            stamps = (await llm_http.get("/stamps")).json()
            stored = [(await http.get(f"/api/messages/{a}")).json() for a in answers]
    finally:
        if sampler is not None:
            sampler.send_signal(2)
            sampler.wait(30)
        stop_process(server)
        stop_process(llm)
        for log in logs:
            log.close()
    script = "".join(answer_chunks(args.chunks))
    texts = [sse_text(body) for body in bodies]
    spans = [(s["sent"][-1] - s["sent"][0]) / 1e9 for s in stamps.values() if s["sent"]]
    lags = [(a - d) / 1e6 for s in stamps.values() for a, d in zip(s["sent"], s["due"])]
    return {"name": name, "wall": wall, "cpu": cpu, "chunks": args.answers * args.chunks,
            "whole": sum(t == script for t in texts), "stored": sum(r["content"] == script and r["immutable"]
                                                                   for r in stored),
            "llm_span": max(spans, default=float("nan")), "llm_lag_p99": pct(lags, 99),
            "streams": len(stamps)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("api", "ws"), default="api",
                        help="api: answers through the HTTP API over SSE (issue 10); ws: browser-like WebSocket "
                             "sessions (issue 15, bench/load_ws.py)")
    parser.add_argument("--answers", type=int, default=50)
    parser.add_argument("--chunks", type=int, default=530, help="chunks per answer")
    parser.add_argument("--rate", type=float, default=200.0, help="chunks (tokens)/s of each answer")
    parser.add_argument("--sessions", type=int, default=50, help="ws: sessions streaming an answer each")
    parser.add_argument("--seconds", type=float, default=30.0, help="ws: seconds each answer streams")
    parser.add_argument("--todo-sessions", type=int, default=5, help="ws: more sessions using the todo app")
    parser.add_argument("--todo-rate", type=float, default=2.0, help="ws: todo actions/s of each todo session")
    parser.add_argument("--no-rebuild", action="store_true",
                        help="ws: skip rebuilding each page from its frames after the run")
    parser.add_argument("--workers", type=int, default=1,
                        help="ws: server processes on the port (quanda serve --workers; CPU and RSS summed)")
    parser.add_argument("--window", type=float, default=3.0,
                        help="ws: seconds of the server's before and after windows (CPU, RSS)")
    parser.add_argument("--variants", default="ours,before", help="ours (this tree), before (commit e1594fc)")
    parser.add_argument("--py-spy", metavar="PATH", help="sample the ours server with py-spy into PATH")
    parser.add_argument("--serve", nargs=3, metavar=("PORT", "DB_URL", "LLM_URL"), help=argparse.SUPPRESS)
    parser.add_argument("--llm-serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args()


async def main(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="quanda-loadbench-"))
    if args.mode == "ws":
        from bench.load_ws import run
        from bench.sessions import WORKERS_ENV

        os.environ[WORKERS_ENV] = str(args.workers)  # read by the server bench.sessions starts

        try:
            status = await run(args, tmp)
        except BaseException:
            print(f"logs kept in {tmp}", file=sys.stderr)
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return status
    load = MachineLoad((os.getpid(),))
    results = []
    try:
        load.start()
        for name in args.variants.split(","):
            results.append(await one_variant(name, args, tmp, str(Path(args.py_spy).resolve())
                                             if args.py_spy and name == "ours" else None, load))
        load.stop()
    except BaseException:
        print(f"logs kept in {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    pacing = args.chunks / args.rate
    print(f"Load: {args.answers} answers at once through the HTTP API (POST /api/messages, POST …/answer), each "
          f"{args.chunks} chunks paced at {args.rate:,.0f} chunks/s by the LLM server ({pacing:.2f} s), followed "
          f"over SSE.\nours = this tree; before = the app as of {BEFORE_COMMIT} (before issue 10). Server CPU = "
          f"utime + stime of the app process, all threads.\nMachine: {load.describe()} (this process, the LLM server "
          f"and the app count as ours).\n")
    print(table(["app", "streams whole (SSE / stored)", "chunks", "wall s", "wall / pacing", "LLM send span s",
                 "LLM lag p99 ms", "server CPU s", "CPU µs/chunk", "server cores"],
                [[r["name"], f"{r['whole']} / {r['stored']} of {args.answers}", f"{r['chunks']:,}",
                  f"{r['wall']:.2f}", f"{r['wall'] / pacing:.2f}x", f"{r['llm_span']:.2f}", f"{r['llm_lag_p99']:.1f}",
                  f"{r['cpu']:.2f}", f"{r['cpu'] * 1e6 / r['chunks']:,.0f}", f"{r['cpu'] / r['wall']:.2f}"]
                 for r in results]))
    print("\n(LLM send span: first to last chunk of the slowest stream as the LLM server sent them; when it is "
          "much over the pacing, the machine could not run the LLM server on time either.)\n")
    ok = True
    by = {r["name"]: r for r in results}
    ours = by.get("ours")
    if ours:
        before = by.get("before")
        checks = [
            (ours["whole"] == args.answers and ours["stored"] == args.answers,
             f"every stream whole: {ours['whole']} SSE streams and {ours['stored']} stored answers of "
             f"{args.answers} equal the script"),
            (ours["wall"] <= KEEP_PACE * pacing,
             f"the server keeps pace: wall {ours['wall']:.2f} s <= {KEEP_PACE} x the LLM's pacing ({pacing:.2f} s): "
             f"{ours['wall'] / pacing:.2f}x" + (f" (before: {before['wall']:.2f} s, {before['wall'] / pacing:.2f}x)"
                                                if before else "")),
        ]
        for passed, text in checks:
            ok &= passed
            print(verdict(passed, text))
        print(f"info  server CPU per chunk: {ours['cpu'] * 1e6 / ours['chunks']:,.0f} µs"
              + (f" (before: {before['cpu'] * 1e6 / before['chunks']:,.0f} µs, "
                 f"{(before['cpu'] / before['chunks']) / (ours['cpu'] / ours['chunks']):.1f}x more)" if before else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.llm_serve:
        llm_serve(arguments.llm_serve)
    elif arguments.serve:
        serve(int(arguments.serve[0]), arguments.serve[1], arguments.serve[2])
    else:
        try:
            import uvloop  # the client's own loop: the leaner, the less it competes with the server it measures
        except ImportError:
            sys.exit(asyncio.run(main(arguments)))
        sys.exit(uvloop.run(main(arguments)))
