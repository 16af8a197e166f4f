"""Writer → reader latency and write throughput of the Quanda core, against the seed's design and against the
SQLite store as it was before issue 10, with the machine's raw SQLite commit rate as the yardstick, in one run.

    python bench/quanda_fanout.py [--tokens 2000] [--readers 10] [--repeat 5] [--db-dir DIR] [--postgres URL]

Ours: the SQLite store (app/core/store/sqlite.py: group commit on the event loop when the write lock is free,
on the writer thread when it is not; an append is one insert until the message row's next sync; readers woken
directly in-process, `PRAGMA data_version` polling across processes). "Before": the same store as of commit
e1594fc (bench/baseline_sqlite.py: every write handed to the writer thread, three statements and two pages per
append). Seed baseline: readers poll every 0.2 s; each chunk takes a lock, then `$inc`s last_seq, reads and
rewrites the content, and inserts the token, as separate database operations. "Raw SQLite single-row commit":
`BEGIN IMMEDIATE; INSERT one row; COMMIT` in a loop on one connection (Python's sqlite3, the same WAL settings,
the same directory): the fastest any awaited writer could be. Throughput runs are interleaved --repeat times
(each round in turn forwards and backwards) and each figure is the median; the two relative targets take the
median of each round's ratio (neighbours in time), so a burst of load on the machine hits both sides alike.
All SQLite files live in one temporary directory (--db-dir to choose it). With `--postgres
postgresql://user@host:port/db` (or QUANDA_BENCH_POSTGRES_URL) the same measurements run on the PostgreSQL
store too, in a scratch schema dropped afterwards, and fill a PostgreSQL column. Exit status 1 when a target
is missed.
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

from quanda.core import QuandaMessage, QuandaReader, QuandaWriter, open_store  # noqa: E402
from bench.common import MachineLoad, pct, verdict  # noqa: E402

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
        async for token in QuandaReader(msg, after_seq=0):  # every token, however late the reader starts
            if token.kind == "chunk":
                latencies.append((time.monotonic_ns() - int(token.text)) / 1e6)
    return [asyncio.create_task(read()) for _ in range(readers)]


async def open_before(url: str):
    """The store as it was before issue 10 (bench/baseline_sqlite.py) on the file `url` names."""
    from bench.baseline_sqlite import SQLiteStore as BeforeStore

    return await BeforeStore(url[len("sqlite:///"):]).open()


async def ours_in_process(url: str, readers: int, tokens: int, opener=open_store) -> list[float]:
    async with await opener(url) as store:
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
from quanda.core import QuandaWriter, open_store
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


async def ours_throughput(url: str, writers: int, per_writer: int, opener=open_store) -> float:
    async with await opener(url) as store:
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


def raw_commits(path: str, commits: int) -> float:
    """Single-row commits per second on one connection, with the stores' settings: the machine's yardstick."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS raw (k INTEGER PRIMARY KEY, v TEXT)")
    start = time.perf_counter()
    for _ in range(commits):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO raw (v) VALUES (?)", ("token ",))
        conn.execute("COMMIT")
    rate = commits / (time.perf_counter() - start)
    conn.close()
    return rate


def row(name: str, values: list[str]) -> str:
    return f"| {name:<32} | " + " | ".join(f"{v:>15}" for v in values) + " |"


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


WAL_CHUNKS = (1000, 4000)


async def postgres_wal(url: str) -> dict[int, tuple[int, int]]:
    """{chunks: (WAL bytes, content bytes)} of one message of random text (which TOAST's compression cannot
    shrink: repetitive text would hide a quadratic rewrite), its chunks awaited one by one through the store;
    WAL measured as `pg_current_wal_lsn()` after minus before (the whole server's: run it on a quiet one)."""
    import secrets

    import asyncpg
    from quanda.core.store.postgres_client import split_url
    found = {}
    async with await open_store(url) as store:
        conn = await asyncpg.connect(split_url(url)[0])
        try:
            for chunks in WAL_CHUNKS:
                writer = QuandaWriter(await QuandaMessage.create(store, role="assistant"))
                texts = [secrets.token_urlsafe(15) for _ in range(chunks)]
                before = await conn.fetchval("SELECT pg_current_wal_lsn()")
                for text in texts:
                    await writer.chunk(text)
                after = await conn.fetchval("SELECT pg_current_wal_lsn()")
                found[chunks] = (int(await conn.fetchval("SELECT pg_wal_lsn_diff($1, $2)", after, before)),
                                 sum(len(t) for t in texts))
        finally:
            await conn.close()
    return found


async def postgres_figures(base_url: str, readers: int, tokens: int) -> dict[str, object]:
    """The same measurements as ours_* on the PostgreSQL store, and its WAL per message, in a schema dropped
    afterwards."""
    url, schema = scratch_schema(base_url)
    try:
        return {"lat": await ours_in_process(url, readers, tokens),
                "x": await ours_cross_process(url, readers, tokens),
                "w1": await ours_throughput(url, 1, 5000),
                "w100": await ours_throughput(url, 100, 200),
                "wal": await postgres_wal(url)}
    finally:
        await drop_schema(base_url, schema)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5, help="interleaved throughput runs (medians reported)")
    parser.add_argument("--db-dir", default=None)
    parser.add_argument("--postgres", default=os.environ.get("QUANDA_BENCH_POSTGRES_URL", ""),
                        help="also measure the PostgreSQL store on this database (a scratch schema)")
    args = parser.parse_args()
    tmp = args.db_dir or tempfile.mkdtemp(prefix="quanda-bench-")
    url, before_url = f"sqlite:///{tmp}/ours.db", f"sqlite:///{tmp}/before.db"
    base_path = f"{tmp}/seed.db"
    n, r = args.tokens, args.readers
    load = MachineLoad((os.getpid(),)).start()

    ours_lat = await ours_in_process(url, r, n)
    before_lat = await ours_in_process(before_url, r, n, open_before)
    ours_x = await ours_cross_process(url, r, n)
    seed_lat = await baseline_latency(base_path, r, min(n, 500))
    runs: dict[str, list[float]] = {k: [] for k in ("raw", "w1", "w1_before", "w100", "w100_before")}
    measures = {"raw": lambda i: raw_commits(f"{tmp}/raw{i}.db", 5000),
                "w1": lambda i: ours_throughput(url, 1, 5000),
                "w1_before": lambda i: ours_throughput(before_url, 1, 5000, open_before),
                "w100": lambda i: ours_throughput(url, 100, 200),
                "w100_before": lambda i: ours_throughput(before_url, 100, 200, open_before)}
    for i in range(args.repeat):  # interleaved, in turn forwards and backwards: a burst of load hits pairs alike
        for key in (list(measures) if i % 2 == 0 else list(measures)[::-1]):
            value = measures[key](i)
            runs[key].append(await value if asyncio.iscoroutine(value) else value)
    med = {k: statistics.median(v) for k, v in runs.items()}
    # the targets compare neighbours in time: the median of the ratios of each round's pair
    share = statistics.median(w / r for w, r in zip(runs["w1"], runs["raw"]))
    share_before = statistics.median(w / r for w, r in zip(runs["w1_before"], runs["raw"]))
    gain = statistics.median(w / b for w, b in zip(runs["w100"], runs["w100_before"]))
    seed_1 = await baseline_throughput(base_path, 1, 1000)
    seed_100 = await baseline_throughput(base_path, 100, 20)
    pg = await postgres_figures(args.postgres, r, n) if args.postgres else None
    load.stop()

    def cells(values: list[str], pg_value: str) -> list[str]:
        return values + [pg_value] if pg else values

    def lat(values: list[float], p: float | None) -> float:
        return statistics.mean(values) if p is None else pct(values, p)

    print(f"Quanda core fan-out: {r} readers, {n} tokens paced at {RATE}/s (seed baseline: {min(n, 500)} tokens), "
          f"SQLite WAL{', and the PostgreSQL store' if pg else ''}; throughput: medians of {args.repeat} interleaved "
          f"runs.\nMachine: {load.describe()}.\n")
    print(row("", cells(["Quanda", "before issue 10", "seed baseline", "ours / before", "seed / ours"], "PostgreSQL")))
    print("|" + "-" * 34 + ("|" + "-" * 17) * (6 if pg else 5) + "|")
    for name, p in (("p50", 50), ("p99", 99), ("mean", None)):
        o, b, sd = lat(ours_lat, p), lat(before_lat, p), lat(seed_lat, p)
        print(row(f"in-process {name} (ms)", cells([f"{o:.3f}", f"{b:.3f}", f"{sd:.1f}", f"{o / b:.2f}x",
                                                    f"{sd / o:.0f}x"], pg and f"{lat(pg['lat'], p):.3f}")))
    for name, p in (("p50", 50), ("p99", 99)):
        o, sd = pct(ours_x, p), pct(seed_lat, p)
        print(row(f"cross-process {name} (ms)", cells([f"{o:.3f}", "", f"{sd:.1f}", "", f"{sd / o:.0f}x"],
                                                      pg and f"{pct(pg['x'], p):.3f}")))
    print(row("raw SQLite single-row commit/s", cells([f"{med['raw']:,.0f}", "", "", "", ""], "")))
    print(row("1 writer, awaited (tok/s)", cells([f"{med['w1']:,.0f}", f"{med['w1_before']:,.0f}", f"{seed_1:,.0f}",
                                                  f"{med['w1'] / med['w1_before']:.2f}x", f"{med['w1'] / seed_1:.0f}x"],
                                                 pg and f"{pg['w1']:,.0f}")))
    print(row("  as % of raw commit/s", cells([f"{100 * share:.0f} %", f"{100 * share_before:.0f} %",
                                               f"{100 * seed_1 / med['raw']:.0f} %", "", ""], "")))
    print(row("100 writers, total (tok/s)", cells([f"{med['w100']:,.0f}", f"{med['w100_before']:,.0f}",
                                                   f"{seed_100:,.0f}", f"{gain:.2f}x",
                                                   f"{med['w100'] / seed_100:.0f}x"], pg and f"{pg['w100']:,.0f}")))
    print("\nruns (tok/s or commit/s): " + "; ".join(f"{k} " + " / ".join(f"{x:,.0f}" for x in v)
                                                   for k, v in runs.items()))
    if pg:
        print("(PostgreSQL: the same runs on the PostgreSQL store, synchronous_commit as the server has it)")
        (short_wal, short_text), (long_wal, long_text) = (pg["wal"][c] for c in WAL_CHUNKS)
        print(f"PostgreSQL WAL per message (random text, pg_current_wal_lsn() after - before): "
              f"{WAL_CHUNKS[0]:,} chunks {short_wal / 1024:,.0f} kB ({short_wal / short_text:.1f}x its text), "
              f"{WAL_CHUNKS[1]:,} chunks {long_wal / 1024:,.0f} kB ({long_wal / long_text:.1f}x); "
              f"ratio {long_wal / short_wal:.2f}x for {WAL_CHUNKS[1] // WAL_CHUNKS[0]}x the chunks")
    print(f"tokens seen: in-process {len(ours_lat)} / before {len(before_lat)} / cross-process {len(ours_x)} / "
          f"seed {len(seed_lat)} " + (f"/ PostgreSQL {len(pg['lat'])} + {len(pg['x'])} " if pg else "")
          + "(each = readers x tokens)\n")
    checks = [
        (pct(ours_lat, 50) <= 1.0 and pct(ours_lat, 99) <= 5.0,
         f"in-process p50 <= 1 ms and p99 <= 5 ms with {r} readers: {pct(ours_lat, 50):.3f} / {pct(ours_lat, 99):.3f} ms"),
        (statistics.mean(seed_lat) / statistics.mean(ours_lat) >= 50,
         f"in-process mean >= 50x lower than the seed's: {statistics.mean(seed_lat) / statistics.mean(ours_lat):.0f}x"),
        (pct(ours_x, 99) <= 50.0, f"cross-process p99 <= 50 ms: {pct(ours_x, 99):.3f} ms"),
        (med["w1"] >= 5000, f"1 awaited writer >= 5,000 tokens/s: {med['w1']:,.0f}"),
        (share >= 0.4, f"1 awaited writer >= 40 % of the raw single-row commit rate: {100 * share:.0f} % (median of "
         f"each round's ratio; rounds: {' / '.join(f'{100 * w / r:.0f}' for w, r in zip(runs['w1'], runs['raw']))}; "
         f"before issue 10: {100 * share_before:.0f} %)"),
        (med["w100"] >= 20000, f"100 writers >= 20,000 tokens/s: {med['w100']:,.0f}"),
        (gain >= 2, f"100 writers >= 2x the store before issue 10: {gain:.2f}x (median of each round's ratio; "
         f"rounds: {' / '.join(f'{w / b:.2f}' for w, b in zip(runs['w100'], runs['w100_before']))})"),
    ]
    seen = {"in-process": len(ours_lat), "before": len(before_lat), "cross-process": len(ours_x)}
    if pg:
        seen.update({"PostgreSQL in-process": len(pg["lat"]), "PostgreSQL cross-process": len(pg["x"])})
        checks += [
            (pct(pg["x"], 99) <= 20.0, f"PostgreSQL cross-process p99 <= 20 ms: {pct(pg['x'], 99):.3f} ms"),
            (pg["w100"] >= 10000, f"PostgreSQL 100 writers >= 10,000 tokens/s: {pg['w100']:,.0f}"),
            (pg["wal"][4000][0] <= 4.5 * pg["wal"][1000][0],
             f"PostgreSQL WAL of a 4,000-chunk message <= 4.5x a 1,000-chunk one (linear, issue 21): "
             f"{pg['wal'][4000][0] / pg['wal'][1000][0]:.2f}x"),
        ]
    checks.append((all(count == r * n for count in seen.values()),
                   f"every reader saw every token ({r} x {n} each): "
                   + ", ".join(f"{name} {count}" for name, count in seen.items())))
    for passed, text in checks:
        print(verdict(passed, text))
    return 0 if all(p for p, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
