"""Writer → reader latency and write throughput of the Quanda core, against the seed's design, in one run.

    python bench/quanda_fanout.py [--tokens 2000] [--readers 10] [--db-dir DIR] [--postgres URL]

Ours: the SQLite store (group commit on a writer thread, readers woken directly in-process, `PRAGMA
data_version` polling across processes). Baseline (the seed's design): readers poll every 0.2 s; each
chunk takes a lock, then `$inc`s last_seq, reads and rewrites the content, and inserts the token, as
separate database operations. Both run on SQLite files with the same WAL settings, on this machine.
With `--postgres postgresql://user@host:port/db`
(or QUANDA_BENCH_POSTGRES_URL) the same measurements run on the PostgreSQL store too, in a scratch schema
dropped afterwards, and fill a PostgreSQL column.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app.quanda import QuandaMessage, QuandaReader, QuandaWriter, open_store  # noqa: E402
from bench.common import pct  # noqa: E402

RATE = 1000  # tokens/s the writer is paced at in latency runs (a fast LLM)


def stamp() -> str:
    return str(time.monotonic_ns())  # CLOCK_MONOTONIC: comparable across processes on one machine



# -- the seed's design ---------------------------------------------------------------------------------

class SeedBaseline:
    """Seed-style store: three round trips per chunk under a lock; readers poll every 0.2 s."""

    POLL_S = 0.2

    def __init__(self, path: str):
        self.path = path
        conn = self._connect()
        conn.executescript("CREATE TABLE IF NOT EXISTS msg (id TEXT PRIMARY KEY, content TEXT, last_seq INT);"
                           "CREATE TABLE IF NOT EXISTS tok (mid TEXT, seq INT, text TEXT);"
                           "CREATE INDEX IF NOT EXISTS tok_mid ON tok(mid, seq);")
        conn.close()
        self.locks: dict[str, asyncio.Lock] = {}

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    async def create(self, mid: str) -> None:
        self.conn = getattr(self, "conn", None) or self._connect()
        await asyncio.to_thread(self.conn.execute, "INSERT INTO msg VALUES (?, '', 0)", (mid,))

    async def chunk(self, mid: str, text: str) -> None:
        lock = self.locks.setdefault(mid, asyncio.Lock())
        async with lock:
            run = asyncio.to_thread
            seq = (await run(lambda: self.conn.execute(
                "UPDATE msg SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq", (mid,)).fetchone()))[0]
            content = (await run(lambda: self.conn.execute("SELECT content FROM msg WHERE id = ?",
                                                           (mid,)).fetchone()))[0]
            await run(self.conn.execute, "UPDATE msg SET content = ? WHERE id = ?", (content + text, mid))
            await run(self.conn.execute, "INSERT INTO tok VALUES (?, ?, ?)", (mid, seq, text))

    async def read(self, mid: str, count: int, latencies: list[float]) -> None:
        conn, seen = self._connect(), 0
        while seen < count:
            rows = await asyncio.to_thread(lambda: conn.execute(
                "SELECT seq, text FROM tok WHERE mid = ? AND seq > ? ORDER BY seq", (mid, seen)).fetchall())
            now = time.monotonic_ns()
            for seq, text in rows:
                latencies.append((now - int(text)) / 1e6)
                seen = seq
            if seen < count:
                await asyncio.sleep(self.POLL_S)
        conn.close()


# -- measurements --------------------------------------------------------------------------------------

async def paced(tokens: int, write) -> None:
    start = time.perf_counter()
    for i in range(tokens):
        delay = start + i / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await write(stamp())


def start_readers(msg: QuandaMessage, readers: int, latencies: list[float]) -> list[asyncio.Task]:
    """Readers that record, for every chunk, now minus the stamp the chunk carries."""
    async def read() -> None:
        async for token in QuandaReader(msg):
            if token.kind == "chunk":
                latencies.append((time.monotonic_ns() - int(token.text)) / 1e6)
    return [asyncio.create_task(read()) for _ in range(readers)]


async def ours_in_process(url: str, readers: int, tokens: int) -> list[float]:
    async with await open_store(url) as store:
        msg = await QuandaMessage.create(store, role="bench")
        latencies: list[float] = []
        tasks = start_readers(msg, readers, latencies)
        await asyncio.sleep(0.05)
        w = QuandaWriter(msg)
        await paced(tokens, w.chunk)
        await w.make_immutable()
        await asyncio.gather(*tasks)
        return latencies


WRITER_PROCESS = """
import asyncio, sys, time
sys.path.insert(0, sys.argv[4])
from app.quanda import QuandaWriter, open_store
async def main(url, mid, tokens):
    async with await open_store(url) as store:
        w = await QuandaWriter.from_id(store, mid)
        print("ready", flush=True); sys.stdin.readline()
        start = time.perf_counter()
        for i in range(tokens):
            delay = start + i / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await w.chunk(str(time.monotonic_ns()))
        await w.make_immutable()
RATE = %d
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""" % RATE


async def ours_cross_process(url: str, readers: int, tokens: int) -> list[float]:
    async with await open_store(url) as store:
        msg = await QuandaMessage.create(store, role="bench")
        latencies: list[float] = []
        tasks = start_readers(msg, readers, latencies)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.Popen([sys.executable, "-c", WRITER_PROCESS, url, msg.id, str(tokens), root],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        await asyncio.to_thread(proc.stdout.readline)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        await asyncio.gather(*tasks)
        await asyncio.to_thread(proc.wait)
        return latencies


async def baseline_latency(path: str, readers: int, tokens: int) -> list[float]:
    seed = SeedBaseline(path)
    await seed.create("m")
    latencies: list[float] = []
    tasks = [asyncio.create_task(seed.read("m", tokens, latencies)) for _ in range(readers)]
    await paced(tokens, lambda text: seed.chunk("m", text))
    await asyncio.gather(*tasks)
    return latencies


async def ours_throughput(url: str, writers: int, per_writer: int) -> float:
    async with await open_store(url) as store:
        msgs = [await QuandaMessage.create(store, role="bench") for _ in range(writers)]

        async def write(msg: QuandaMessage) -> None:
            w = QuandaWriter(msg)
            for _ in range(per_writer):
                await w.chunk("token ")
        start = time.perf_counter()
        await asyncio.gather(*(write(m) for m in msgs))
        return writers * per_writer / (time.perf_counter() - start)


async def baseline_throughput(path: str, writers: int, per_writer: int) -> float:
    seed = SeedBaseline(path)
    for n in range(writers):
        await seed.create(f"t{writers}-{n}")

    async def write(mid: str) -> None:
        for _ in range(per_writer):
            await seed.chunk(mid, "token ")
    start = time.perf_counter()
    await asyncio.gather(*(write(f"t{writers}-{n}") for n in range(writers)))
    return writers * per_writer / (time.perf_counter() - start)


def row(name: str, values: list[str]) -> str:
    return f"| {name:<28} | " + " | ".join(f"{v:>12}" for v in values) + " |"


def scratch_schema(url: str) -> tuple[str, str]:
    """`url` with a fresh schema for this run, and the schema's name."""
    schema = f"quanda_bench_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode([*parse_qsl(parts.query), ("schema", schema)]))), schema


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def postgres_figures(base_url: str, readers: int, tokens: int) -> dict[str, object]:
    """The same measurements as ours_* on the PostgreSQL store, in a schema dropped afterwards."""
    url, schema = scratch_schema(base_url)
    try:
        return {"lat": await ours_in_process(url, readers, tokens),
                "x": await ours_cross_process(url, readers, tokens),
                "w1": await ours_throughput(url, 1, 5000),
                "w100": await ours_throughput(url, 100, 200)}
    finally:
        await drop_schema(base_url, schema)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--db-dir", default=None)
    parser.add_argument("--postgres", default=os.environ.get("QUANDA_BENCH_POSTGRES_URL", ""),
                        help="also measure the PostgreSQL store on this database (a scratch schema)")
    args = parser.parse_args()
    tmp = args.db_dir or tempfile.mkdtemp(prefix="quanda-bench-")
    url = f"sqlite:///{tmp}/ours.db"
    base_path = f"{tmp}/seed.db"
    n, r = args.tokens, args.readers

    ours_lat = await ours_in_process(url, r, n)
    ours_x = await ours_cross_process(url, r, n)
    seed_lat = await baseline_latency(base_path, r, min(n, 500))
    ours_1 = await ours_throughput(url, 1, 5000)
    ours_100 = await ours_throughput(url, 100, 200)
    seed_1 = await baseline_throughput(base_path, 1, 1000)
    seed_100 = await baseline_throughput(base_path, 100, 20)
    pg = await postgres_figures(args.postgres, r, n) if args.postgres else None

    def cells(values: list[str], pg_value: str) -> list[str]:
        return values + [pg_value] if pg else values

    mean_ratio = statistics.mean(seed_lat) / statistics.mean(ours_lat)
    print(f"Quanda core fan-out: {r} readers, {n} tokens paced at {RATE}/s (baseline: {min(n, 500)} tokens), "
          f"SQLite WAL{', and the PostgreSQL store' if pg else ''}, {os.cpu_count()} cores\n")
    print(row("", cells(["Quanda", "seed baseline", "ratio"], "PostgreSQL")))
    print("|" + "-" * 30 + ("|" + "-" * 14) * (4 if pg else 3) + "|")
    print(row("in-process p50 (ms)", cells([f"{pct(ours_lat, 50):.3f}", f"{pct(seed_lat, 50):.1f}",
                                            f"{pct(seed_lat, 50) / pct(ours_lat, 50):.0f}x"],
                                           pg and f"{pct(pg['lat'], 50):.3f}")))
    print(row("in-process p99 (ms)", cells([f"{pct(ours_lat, 99):.3f}", f"{pct(seed_lat, 99):.1f}",
                                            f"{pct(seed_lat, 99) / pct(ours_lat, 99):.0f}x"],
                                           pg and f"{pct(pg['lat'], 99):.3f}")))
    print(row("in-process mean (ms)", cells([f"{statistics.mean(ours_lat):.3f}", f"{statistics.mean(seed_lat):.1f}",
                                             f"{mean_ratio:.0f}x"], pg and f"{statistics.mean(pg['lat']):.3f}")))
    print(row("cross-process p50 (ms)", cells([f"{pct(ours_x, 50):.3f}", f"{pct(seed_lat, 50):.1f}",
                                               f"{pct(seed_lat, 50) / pct(ours_x, 50):.0f}x"],
                                              pg and f"{pct(pg['x'], 50):.3f}")))
    print(row("cross-process p99 (ms)", cells([f"{pct(ours_x, 99):.3f}", f"{pct(seed_lat, 99):.1f}",
                                               f"{pct(seed_lat, 99) / pct(ours_x, 99):.0f}x"],
                                              pg and f"{pct(pg['x'], 99):.3f}")))
    print(row("1 writer, awaited (tok/s)", cells([f"{ours_1:,.0f}", f"{seed_1:,.0f}", f"{ours_1 / seed_1:.0f}x"],
                                                 pg and f"{pg['w1']:,.0f}")))
    print(row("100 writers, total (tok/s)", cells([f"{ours_100:,.0f}", f"{seed_100:,.0f}",
                                                   f"{ours_100 / seed_100:.0f}x"], pg and f"{pg['w100']:,.0f}")))
    if pg:
        print("\n(ratio: SQLite store vs seed baseline; PostgreSQL: the same runs on the PostgreSQL store, "
              "synchronous_commit as the server has it)")
    print(f"\ntokens seen: in-process {len(ours_lat)} / cross-process {len(ours_x)} / baseline {len(seed_lat)} "
          + (f"/ PostgreSQL {len(pg['lat'])} + {len(pg['x'])} " if pg else "") + "(each = readers x tokens)")


if __name__ == "__main__":
    asyncio.run(main())
