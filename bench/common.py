"""What the benchmarks share: the paced Ollama-wire LLM server and its scripted answers, independent owners,
the seed-style baseline that resends a whole message on every token, serving the app under test, the
machine's load, and printing tables."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

MODEL = "quanda-test"
DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TAG_RE = re.compile(r"\(bench ([\w.-]+)\)")


# == scripted answers ======================================================================================

def b36(n: int) -> str:
    s = ""
    while True:
        n, r = divmod(n, 36)
        s = DIGITS[r] + s
        if not n:
            return s


def mixed_chunks(n: int) -> list[str]:
    """A realistic markdown answer of n chunks, each one word `Q<base-36 index>` (letters and digits, which
    markdown never alters) with the whitespace/markdown before it: headings, paragraphs with inline code and
    bold spans, a tight bullet list, a fenced python block, a numbered list — repeated."""
    out: list[str] = []

    def tok(prefix: str) -> None:
        out.append(f"{prefix}Q{b36(len(out))}")

    def para(words: int, first_prefix: str) -> None:
        for k in range(words):
            if k == 0:
                p = first_prefix
            elif k % 23 == 7:
                p = " `"  # an inline code span over two words
            elif k % 23 == 9:
                p = "` "
            elif k % 31 == 12:
                p = " **"  # a bold span over three words
            elif k % 31 == 15:
                p = "** "
            elif k % 13 == 12:
                p = ". "
            elif k % 7 == 6:
                p = ", "
            else:
                p = " "
            tok(p)

    while len(out) < n:
        tok(("\n\n" if out else "") + "## ")
        for _ in range(3):
            tok(" ")
        para(70, "\n\n")
        for item in range(8):  # a tight bullet list
            for k in range(10):
                tok(("\n\n- " if item == 0 else "\n- ") if k == 0 else " ")
        para(50, "\n\n")
        seps = [" = ", "(", ", ", ", ", ")  # ", " "]
        for line in range(30):  # a fenced code block, ~1.2 kB
            for k in range(6):
                tok(("\n\n```python\n" if line == 0 else "\n") if k == 0 else seps[k - 1])
        tok(")\n```\n\n")
        para(59, " ")
        for item in range(6):  # a numbered list
            for k in range(12):
                tok((f"\n\n{item + 1}. " if item == 0 else f"\n{item + 1}. ") if k == 0 else " ")
        para(80, "\n\n")
    return out[:n]


def paragraph_chunks(n: int) -> list[str]:
    """One paragraph of n words on a single line (think: a long code line, or a model that never breaks
    lines), with a bold span now and then: the worst case for a renderer that re-reads the open block."""
    out: list[str] = []
    for k in range(n):
        p = " **" if k % 40 == 5 else "** " if k % 40 == 8 else "" if k == 0 else " "
        out.append(f"{p}Q{b36(k)}")
    return out


SCRIPTS: dict[str, Callable[[int], list[str]]] = {"mixed": mixed_chunks, "paragraph": paragraph_chunks}


def answer_chunks(n: int, kind: str = "mixed") -> list[str]:
    return SCRIPTS[kind](n)


# == the paced LLM server (run it in a subprocess: `llm_serve(port)`) ======================================

TOKEN_ID_RE = re.compile(rb"Q([0-9A-Z]+)")  # a scripted token's index in base 36 (answer_chunks)


def token_ids(raw: bytes) -> list[bytes]:
    """The indexes of the scripted tokens a frame holds. The whole frame is read: a frame may carry the newest
    text first and a finished block's HTML (older text) after it (reading only its end credited the newest
    tokens to the next frame, 16 ms late). A frame over 16 kB (the seed's full re-render, newest text last)
    is read from its last 2 kB only, so that this client keeps pace with it."""
    if len(raw) <= 16384:
        return TOKEN_ID_RE.findall(raw)
    return TOKEN_ID_RE.findall(raw, len(raw) - 2048) or TOKEN_ID_RE.findall(raw)


def answer_over_re(message_id: str) -> "re.Pattern[bytes]":
    """The frame that says an answer is over: its actions swapped in (as the answer's state changes; they hold
    its usage line and Regenerate since issue 20, nothing before)."""
    return re.compile(rb'<div(?=[^>]*id="msg-%s-actions")[^>]*hx-swap-oob="true"' % message_id.encode())


def answer_end_re(message_id: str) -> "re.Pattern[bytes]":
    """A frame that ends a streamed answer's tail: the tail replaced by an empty one, or settled into the body
    (app/components/compact.py) with, in the same frame, the marker that seals the message."""
    mid = message_id.encode()
    return re.compile(rb'<div[^>]*id="msg-%s-tail"[^>]*></div>|<span[^>]*data-ended[^>]*id="seq-%s"' % (mid, mid))


def llm_serve(port: int) -> None:
    """An Ollama-wire LLM server on 127.0.0.1:`port` (threaded `http.server`): `GET /api/tags` lists MODEL;
    `POST /api/chat` gets its headers at once, then waits for a plan from `GET /go?tokens&rate&kind&streams`
    (one plan per waiting request; `GET /waiting` counts the requests waiting) and streams the scripted answer as chunked NDJSON, one line per chunk,
    written as Ollama's Go encoder does (`<>&` escaped). Chunk i is due at start + i/rate (time.sleep, no
    busy wait; rate 0: no pacing, the lines written 100 at a time); the server records `time.monotonic_ns()` right before the line goes to the socket (the
    *send stamp*; CLOCK_MONOTONIC is shared by every process on the machine). A request is named by the
    tag `(bench <tag>)` in its last user message (else by its arrival number); `GET /stamps` serves
    {tag: {"sent": [...], "due": [...]}} of the streams since the last `GET /reset`."""
    import functools
    import http.server
    import queue
    import threading
    from urllib.parse import parse_qs, urlsplit

    plans: queue.Queue = queue.Queue()
    stamps: dict[str, dict[str, list[int]]] = {}
    lock = threading.Lock()
    counter = [0]
    waiting = [0]  # chat requests waiting for their plan
    now_text = "2025-01-01T00:00:00Z"

    def go_json(obj: dict) -> bytes:  # as Ollama's Go encoder writes it
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        for char in "<>&":
            text = text.replace(char, f"\\u{ord(char):04x}")
        return (text + "\n").encode()

    def http_chunk(data: bytes) -> bytes:
        return f"{len(data):X}\r\n".encode() + data + b"\r\n"

    @functools.lru_cache(maxsize=4)
    def unpaced_blocks(tokens: int, kind: str) -> list[tuple[bytes, int]]:
        """The answer's lines encoded once, 100 a block (so that writing them costs this server next to nothing)."""
        chunks = answer_chunks(tokens, kind)
        return [(b"".join(http_chunk(go_json({"model": MODEL, "created_at": now_text, "message": {
                    "role": "assistant", "content": text}, "done": False})) for text in chunks[at:at + 100]),
                 len(chunks[at:at + 100])) for at in range(0, len(chunks), 100)]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def reply_json(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            q = parse_qs(url.query)
            if url.path == "/api/tags":
                self.reply_json(200, {"models": [{"name": MODEL, "model": MODEL, "modified_at": now_text,
                                                  "size": 1}]})
            elif url.path == "/go":
                for _ in range(int(q.get("streams", ["1"])[0])):
                    plans.put((int(q["tokens"][0]), float(q["rate"][0]), q.get("kind", ["mixed"])[0]))
                self.reply_json(200, {"ok": True})
            elif url.path == "/waiting":
                self.reply_json(200, {"waiting": waiting[0]})
            elif url.path == "/stamps":
                with lock:
                    self.reply_json(200, stamps)
            elif url.path == "/reset":
                with lock:
                    stamps.clear()
                while not plans.empty():
                    plans.get_nowait()
                self.reply_json(200, {"ok": True})
            else:
                self.reply_json(404, {"error": f"no route {url.path}"})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if urlsplit(self.path).path != "/api/chat":
                self.reply_json(404, {"error": "no route"})
                return
            try:
                users = [m["content"] for m in json.loads(body)["messages"] if m.get("role") == "user"]
                m = TAG_RE.search(users[-1]) if users else None
            except (ValueError, KeyError, TypeError, IndexError):
                m = None
            with lock:
                counter[0] += 1
                tag = m.group(1) if m else f"#{counter[0]}"
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            with lock:
                waiting[0] += 1
            try:
                tokens, rate, kind = plans.get(timeout=120)
            except queue.Empty:
                self.wfile.write(http_chunk(go_json({"error": "bench: no /go"})) + b"0\r\n\r\n")
                return
            finally:
                with lock:
                    waiting[0] -= 1
            chunks = answer_chunks(tokens, kind)
            sent: list[int] = []
            due: list[int] = []
            try:
                start = time.monotonic_ns()
                if rate <= 0:  # unpaced (a saturation bench): the lines in blocks of 100, as fast as the socket takes them
                    for block, lines in unpaced_blocks(tokens, kind):
                        stamp = time.monotonic_ns()
                        self.wfile.write(block)
                        sent += [stamp] * lines
                    due = list(sent)
                for i, text in enumerate(chunks if rate > 0 else []):
                    due_ns = start + int(i * 1e9 / rate)
                    wait = due_ns - time.monotonic_ns()
                    if wait > 0:
                        time.sleep(wait / 1e9)
                    data = http_chunk(go_json({"model": MODEL, "created_at": now_text,
                                               "message": {"role": "assistant", "content": text}, "done": False}))
                    stamp = time.monotonic_ns()  # the send stamp: right before the line goes to the socket
                    self.wfile.write(data)
                    sent.append(stamp)
                    due.append(due_ns)
                with lock:  # before the final line: the bench reads them once the answer has ended
                    stamps[tag] = {"sent": sent, "due": due}
                final = {"model": MODEL, "created_at": now_text, "message": {"role": "assistant", "content": ""},
                         "done": True, "done_reason": "stop", "total_duration": 1000, "eval_count": len(chunks)}
                self.wfile.write(http_chunk(go_json(final)) + b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                with lock:
                    stamps[tag] = {"sent": sent, "due": due}

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 512  # the listen backlog: many answers start at once

    Server(("127.0.0.1", port), Handler).serve_forever()


# == owners ================================================================================================

BENCH_PASSWORD = "bench-password-not-secret"
# what a bench server that needs independent owners runs with (besides its store and LLM): accounts mode (one
# workspace per user; local mode has one workspace for the machine) and a signing key of its own
ACCOUNTS = {"auth": "accounts", "secret": "bench-" + "0" * 40}


async def new_owners(base: str, count: int, db_url: str | None = None) -> list[dict[str, str]]:
    """Headers (Cookie and Origin) that make HTTP requests and WebSockets act for `count` owners, each
    independent of every other and of any owner made before.

    With `db_url`, the server runs with QUANDA_AUTH=accounts (`ACCOUNTS`) on that store: each owner is a new user,
    created directly in the store (`app.accounts.Accounts.add`, what `python -m quanda users add` does) and logged in
    through the real `POST /login` form, so it has a workspace of its own. Without it (local mode) each owner is a
    fresh browser session of the machine's one workspace "local": N independent owners exist only in accounts
    mode. Logging in costs the server one scrypt hash (~50 ms of CPU) per owner: do it before measuring."""
    import secrets

    import httpx

    if db_url is None:
        owners = []
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(count):
                http.cookies.clear()
                (await http.get(base + "/")).raise_for_status()
                owners.append({"Cookie": "; ".join(f"{k}={v}" for k, v in http.cookies.items()), "Origin": base})
        return owners
    from quanda.accounts import Accounts
    from quanda.core import open_store

    names = [f"bench-{secrets.token_hex(6)}" for _ in range(count)]
    async with await open_store(db_url) as store:
        accounts = Accounts(store)
        for name in names:
            await accounts.add(name, BENCH_PASSWORD)
    owners = []
    for name in names:
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(base + "/login", data={"username": name, "password": BENCH_PASSWORD},
                                headers={"Origin": base})
            if r.status_code != 303 or r.headers.get("location") != "/":
                raise RuntimeError(f"logging in {name} failed: {r.status_code} {r.text[:200]!r}")
            owners.append({"Cookie": "; ".join(f"{k}={v}" for k, v in http.cookies.items()), "Origin": base})
    return owners


async def new_owner(base: str, db_url: str | None = None) -> dict[str, str]:
    """Headers for one new owner: see `new_owners` (this is the one place that decides what an owner is)."""
    return (await new_owners(base, 1, db_url))[0]


# == the seed's design, as a ws action =======================================================================

FullResend = Callable[[Any, str, int], Awaitable[None]]


def follow_full_handler(role: str, full_resend: FullResend):
    """A plugin ws action `{"action": ..., "tab": n, "streams": {id: seq}}` that streams each message of
    `role` the owner holds through `full_resend(h, message_id, seq)` (one frame per token, no coalescing),
    outside the hub's followers; the same ownership check as the hub's `follow`."""
    ClientError = served("context").ClientError  # (quanda.api re-exports it; older trees have no quanda.api)
    QuandaError = served("core").QuandaError

    tasks: dict[tuple[str, object, str], asyncio.Task] = {}

    async def on_follow_full(h, data: dict) -> None:
        streams = data.get("streams")
        if not isinstance(streams, dict):
            raise ClientError("follow_full needs {'streams': {message_id: seq}}")
        for message_id, seq in streams.items():
            try:
                record = await h.owned(message_id, roles=(role,))
            except QuandaError:
                raise ClientError(f"no {role} stream {str(message_id)[:40]!r} here") from None
            key = (h.owner, data.get("tab"), record.id)
            old = tasks.pop(key, None)
            if old is not None:
                old.cancel()
            task = tasks[key] = asyncio.create_task(full_resend(h, record.id, int(seq)))
            task.add_done_callback(lambda t, k=key: tasks.get(k) is t and tasks.pop(k))

    return on_follow_full


# == processes ================================================================================================

BEFORE_COMMIT = "e1594fc"  # the app before issue 10: the baseline server of the load benchmark


def served(name: str) -> Any:
    """The module `name` (e.g. "config", "core", "server") of the app a bench server runs: `quanda.<name>`, or in
    a server of an older tree (QUANDA_BENCH_APP_DIR, from before the package was installed as `quanda`) the same
    module under that tree's names (`app.<name>`, its core being `quanda.core`)."""
    import importlib

    if os.environ.get("QUANDA_BENCH_APP_DIR"):
        return importlib.import_module("app." + re.sub(r"^core\b", "quanda", name))
    return importlib.import_module("quanda." + name)


def is_package_tree(commit: str) -> bool:
    """Whether the tree of `commit` installs as the package `quanda` (its core in app/core, since 074598a)."""
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(["git", "-C", str(root), "cat-file", "-e", f"{commit}:app/core"],
                          capture_output=True).returncode == 0


def package_tree(commit: str, dest: Path) -> Path:
    """The package as of `commit` (app/ as quanda/, static/ inside it as quanda.static), importable from `dest`
    ahead of this tree's editable install (whose finder comes after sys.path's)."""
    import io
    import shutil
    import tarfile

    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", commit, "app", "static"], check=True,
                             capture_output=True).stdout
    raw = dest / "raw"
    raw.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(raw, filter="data")
    shutil.move(str(raw / "app"), str(dest / "quanda"))
    shutil.move(str(raw / "static"), str(dest / "quanda" / "static"))
    return dest


def checkout_before(dest: Path, commit: str = BEFORE_COMMIT) -> Path | None:
    """The app (`app/`, `static/`) as of `commit`, extracted from this repository's git history into `dest`
    (a bench script's server process loads it when QUANDA_BENCH_APP_DIR names it); None without git."""
    root = Path(__file__).resolve().parent.parent
    try:
        archive = subprocess.run(["git", "-C", str(root), "archive", commit, "app", "static"], check=True,
                                 capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    import io
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def serve_app(the_app: Any, port: int, profile: str | None = None, settings: Any = None) -> None:
    """Run the app under uvicorn on loopback with its tree's main.py options (uvicorn's defaults for the app before
    issue 10, served from its own tree, which had none); with `profile`, write cProfile stats there on SIGTERM."""
    import uvicorn

    options = {}
    if not os.environ.get("QUANDA_BENCH_APP_DIR"):  # this tree's app (not the app before issue 10)
        serve_module, config = served("serve"), served("config")
        options = serve_module.server_options(settings or config.Settings.from_env())
        serve_module.freeze_startup()
    if not profile:
        uvicorn.run(the_app, host="127.0.0.1", port=port, log_level="warning", **options)
        return
    import cProfile
    import signal

    profiler = cProfile.Profile()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    profiler.enable()
    try:
        uvicorn.run(the_app, host="127.0.0.1", port=port, log_level="warning", **options)
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat (10 ms ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (all cores), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class MachineLoad:
    """How many cores processes other than `pids` used between `start()` and `stop()` (the noise), and the
    load average when it started."""

    def __init__(self, pids: tuple[int, ...]):
        self.pids = pids
        self.others = float("nan")
        self.loadavg = "?"
        self.accounted = 0.0  # CPU of our processes that came and went meanwhile

    def account(self, *pids: int) -> None:
        """Count these processes (started after `start`, about to end) as ours: call it before they end."""
        for pid in pids:
            try:
                self.accounted += cpu_seconds(pid)
            except OSError:
                pass

    def _ours(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
        return total

    def start(self) -> "MachineLoad":
        self.loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        self._t0, self._busy0, self._ours0 = time.perf_counter(), machine_busy_seconds(), self._ours()
        return self

    def stop(self) -> float:
        wall = time.perf_counter() - self._t0
        ours = self._ours() - self._ours0 + self.accounted
        self.others = max(0.0, (machine_busy_seconds() - self._busy0 - ours) / wall)
        return self.others

    def describe(self) -> str:
        return (f"{os.cpu_count()} cores; load average {self.loadavg} at the start; other processes used "
                f"{self.others:.2f} cores on average during the measured runs (noise)")


async def wait_http(url: str, proc: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        while True:
            if proc.poll() is not None:
                raise RuntimeError("server exited:\n" + log.read_text(errors="replace"))
            try:
                if (await http.get(url, timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not start")
            await asyncio.sleep(0.05)  # waiting for a process to listen: no event to wait on


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# == numbers and tables ========================================================================================

def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `values`; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def row(cells: list[str], widths: list[int]) -> str:
    return "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([row(header, widths), sep, *(row(r, widths) for r in rows)])


def verdict(passed: bool, text: str) -> str:
    return f"{'PASS' if passed else 'FAIL'}  {text}"


class _NoMetric:
    """A metric that counts nothing (bench only: `metrics_off`)."""

    def labels(self, *args, **kwargs):
        return self

    def inc(self, *args, **kwargs) -> None:
        pass

    dec = observe = set = inc


def metrics_off() -> None:
    """Switch the app's metrics off in this process (bench only: `bench/chat_stream.py --metrics-off` compares
    per-token costs with and without them, in the same run). Call before create_app."""
    metrics = served("metrics")
    for name in ("TOKENS", "ANSWERS", "FIRST_TOKEN", "TOKEN_TO_FRAME", "OPEN_TABS", "WS_FRAMES", "FRAMES_IN",
                 "FRAMES_OUT", "STORE_SECONDS", "STORE_ERRORS", "LLM_REQUESTS", "LEASES_HELD", "LEASES_TAKEN_OVER",
                 "RATE_LIMITED"):
        setattr(metrics, name, _NoMetric())
    metrics.instrument_store = lambda store: store
