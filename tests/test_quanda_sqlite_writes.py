"""The SQLite store's write path: a chunk is one insert after the process's own last write (anyone else's write,
a seal too, takes that seq first and sends it the long way); the message row is synced now and then; writes go
to the writer thread while another connection holds the lock, in order; either writer failing fails its writes
fast and the store goes on; databases written before the content table still read and grow; the work per chunk
does not grow with the message."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from quanda.core import (QuandaImmutableError, QuandaLimitError, QuandaMessage, QuandaReader, QuandaStoreError,
                        QuandaWriter, open_store, replay)
from quanda.core.store import sqlite as sqlite_store
from quanda.core.store.sqlite import SQLiteStore
from quanda.core.store.sqlite_schema import CHECKPOINT_EVERY, CHECKPOINT_MAX, checkpoint_due


async def two_stores(tmp_path, **limits):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    return await open_store(url, **limits), await open_store(url, **limits)


async def turns(store: SQLiteStore, done, most: int = 100) -> None:
    """Yield to the event loop (no timing) until `done()`; fail after `most` turns."""
    for _ in range(most):
        if done():
            return
        await asyncio.sleep(0)
    raise AssertionError("the store did not get there")


async def test_writers_of_two_stores_interleaved_get_every_seq_once_in_order(tmp_path):
    a, b = await two_stores(tmp_path)
    try:
        msg = await QuandaMessage.create(a, role="assistant")
        wa, wb = QuandaWriter(msg), QuandaWriter(await QuandaMessage.from_id(b, msg.id))
        seqs = []
        for i in range(150):  # each store's next chunk finds the other's in its seq: the long way, once
            seqs.append((await (wa if i % 3 else wb).chunk(f"{i} ", estimate=f"({i})")).seq)
        assert seqs == list(range(1, 151))
        for store in (a, b):
            record = await store.get_message(msg.id)
            assert record.content == "".join(f"{i} " for i in range(150))
            assert (record.last_seq, record.estimate) == (150, "(149)")
            assert replay(await store.select_tokens(msg.id, limit=1000)).content == record.content
    finally:
        await a.close()
        await b.close()


async def test_a_seal_by_another_store_stops_the_next_chunk(tmp_path):
    a, b = await two_stores(tmp_path)
    try:
        msg = await QuandaMessage.create(a, role="assistant")
        wa = QuandaWriter(msg)
        for i in range(5):
            await wa.chunk(f"{i}")
        await QuandaWriter(await QuandaMessage.from_id(b, msg.id)).make_immutable()
        with pytest.raises(QuandaImmutableError):
            await wa.chunk("late")
        record = await a.get_message(msg.id)
        assert (record.content, record.immutable, record.last_seq) == ("01234", True, 6)
        assert (await wa.make_immutable()).seq == 6  # the seal again: the seal there is
    finally:
        await a.close()
        await b.close()


async def test_the_size_limit_counts_what_another_store_wrote(tmp_path):
    a, b = await two_stores(tmp_path, max_message_bytes=100)
    try:
        msg = await QuandaMessage.create(a, role="assistant")
        await QuandaWriter(msg).chunk("a" * 50)
        await QuandaWriter(msg).chunk("a" * 10)  # a knows 60 bytes now
        await QuandaWriter(await QuandaMessage.from_id(b, msg.id)).chunk("b" * 30)
        with pytest.raises(QuandaLimitError):
            await QuandaWriter(msg).chunk("a" * 20)  # 110 > 100, although a alone wrote 60
        assert (await QuandaWriter(msg).chunk("a" * 10)).seq == 4
        assert len((await b.get_message(msg.id)).content) == 100
    finally:
        await a.close()
        await b.close()


async def test_the_row_is_synced_now_and_then_and_reads_are_exact_between(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "SYNC_EVERY_S", 1e9)  # only the syncs every CHECKPOINT_EVERY chunks
    store = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        w = QuandaWriter(msg)
        last = 3 * CHECKPOINT_EVERY + 6
        for i in range(1, last + 1):
            await w.chunk(f"w{i} ", estimate=f"~{i}")
            if i in (1, CHECKPOINT_EVERY - 1, CHECKPOINT_EVERY, CHECKPOINT_EVERY + 1, last):
                record = await store.get_message(msg.id)
                assert (record.content, record.last_seq, record.estimate) == (
                    "".join(f"w{k} " for k in range(1, i + 1)), i, f"~{i}")
        synced = 3 * CHECKPOINT_EVERY
        row = await store._read("SELECT last_seq, content_bytes, estimate FROM quanda_messages WHERE id = ?",
                                (msg.id,), one=True)
        assert row == (synced, len("".join(f"w{k} " for k in range(1, synced + 1))), f"~{synced}")
        await w.warning("careful")  # any other token syncs the row
        row = await store._read("SELECT last_seq, estimate, warning FROM quanda_messages WHERE id = ?", (msg.id,),
                                one=True)
        assert row == (last + 1, f"~{last}", "careful")
        await w.make_immutable()
        record = await store.get_message(msg.id)
        assert (record.content, record.estimate, record.warning, record.immutable, record.last_seq) == (
            "".join(f"w{k} " for k in range(1, last + 1)), None, "", True, last + 2)
    finally:
        await store.close()


async def test_a_failure_at_a_checkpointing_chunk_leaves_nothing_half_written(tmp_path):
    store = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        w = QuandaWriter(msg)
        for i in range(1, CHECKPOINT_EVERY):
            await w.chunk(f"{i},")
        await store._write(lambda conn: conn.execute(
            "CREATE TRIGGER fail BEFORE INSERT ON quanda_content BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"))
        with pytest.raises(QuandaStoreError, match="disk on fire"):
            await w.chunk("boom")  # the chunk that checkpoints the content: token, row and content, or nothing
        record = await store.get_message(msg.id)
        assert record.last_seq == CHECKPOINT_EVERY - 1 and "boom" not in record.content
        assert len(await store.select_tokens(msg.id, limit=1000)) == CHECKPOINT_EVERY - 1
        await store._write(lambda conn: conn.execute("DROP TRIGGER fail"))
        assert (await w.chunk("again")).seq == CHECKPOINT_EVERY
        assert (await store.get_message(msg.id)).content.endswith(f"{CHECKPOINT_EVERY - 1},again")
    finally:
        await store.close()


async def test_writes_wait_on_the_thread_while_the_lock_is_held_elsewhere_and_keep_their_order(tmp_path):
    store = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    other = sqlite3.connect(tmp_path / "q.db", isolation_level=None, check_same_thread=False)
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        w = QuandaWriter(msg)
        other.execute("BEGIN IMMEDIATE")  # another process writing: the thread waits for the lock
        first = [asyncio.create_task(w.chunk(f"a{i} ")) for i in range(5)]
        await turns(store, lambda: store._detached == 1)  # the loop stopped waiting for it and goes on
        later = [asyncio.create_task(w.chunk(f"b{i} ")) for i in range(5)]  # the thread is busy: after the first
        await turns(store, lambda: store._detached == 2)
        assert not any(t.done() for t in first + later)
        other.execute("COMMIT")
        seqs = [t.seq for t in await asyncio.wait_for(asyncio.gather(*first, *later), 10)]
        assert seqs == list(range(1, 11))
        assert store._detached == 0
        assert (await store.get_message(msg.id)).content == "".join(f"a{i} " for i in range(5)) + "".join(
            f"b{i} " for i in range(5))
        assert (await w.chunk("next")).seq == 11
    finally:
        other.close()
        await store.close()


async def test_the_writer_thread_dying_fails_its_writes_fast_and_restarts(tmp_path, monkeypatch):
    store = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    other = sqlite3.connect(tmp_path / "q.db", isolation_level=None, check_same_thread=False)
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        real_commit = SQLiteStore._commit

        def die_on_the_thread(conn, batch):
            if threading.current_thread() is not threading.main_thread():
                raise SystemExit("the thread is gone")
            return real_commit(conn, batch)

        monkeypatch.setattr(SQLiteStore, "_commit", staticmethod(die_on_the_thread))
        other.execute("BEGIN IMMEDIATE")
        pending = [asyncio.create_task(QuandaWriter(msg).chunk("lost")) for _ in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 5)
        assert all(isinstance(r, QuandaStoreError) and "writer stopped" in str(r) for r in results), results
        other.execute("COMMIT")
        monkeypatch.setattr(SQLiteStore, "_commit", staticmethod(real_commit))
        await store._restart_writer()  # what the next write does first
        other.execute("BEGIN IMMEDIATE")
        again = asyncio.create_task(QuandaWriter(msg).chunk("after restart"))
        await turns(store, lambda: store._detached == 1)  # the new thread took it, and waits for the lock
        other.execute("COMMIT")
        assert (await asyncio.wait_for(again, 5)).seq == 1
        assert store._detached == 0
    finally:
        other.close()
        await store.close()


async def test_a_database_written_before_the_content_table_reads_and_grows(tmp_path):
    path = tmp_path / "old.db"
    store = await open_store(f"sqlite:///{path}")
    await store.close()
    mid = "0123456789abcdef01234567"
    conn = sqlite3.connect(path, isolation_level=None)
    for undo in ("DROP TABLE quanda_leases", "ALTER TABLE quanda_messages DROP COLUMN fence",  # no migrations yet
                 "DROP TABLE quanda_meta", "DROP TABLE quanda_content"):  # as the store wrote it before: content in
        conn.execute(undo)                                                  # the message row,
    conn.execute("INSERT INTO quanda_messages VALUES (?, 'assistant', 'Hello ', 6, 1, NULL, '', 0, 3, 1.0, 1.0)",
                 (mid,))  # checkpointed at seq 1, every token synced into the row
    conn.executemany("INSERT INTO quanda_tokens VALUES (?, ?, ?, ?, ?)",
                     [(mid, 1, "override", "Hello ", None), (mid, 2, "chunk", "old ", "(1)"),
                      (mid, 3, "chunk", "world", "(2)")])
    conn.execute("UPDATE quanda_messages SET content_bytes = 15, estimate = '(2)' WHERE id = ?", (mid,))
    conn.close()
    store = await open_store(f"sqlite:///{path}")
    try:
        record = await store.get_message(mid)
        assert (record.content, record.last_seq, record.estimate) == ("Hello old world", 3, "(2)")
        w = QuandaWriter(await QuandaMessage.from_id(store, mid))
        for i in range(4, CHECKPOINT_EVERY + 2):
            await w.chunk(f" {i}")
        text = "Hello old world" + "".join(f" {i}" for i in range(4, CHECKPOINT_EVERY + 2))
        assert (await store.get_message(mid)).content == text  # checkpointed at 64: into the content table
        await w.make_immutable()
        assert (await store.get_message(mid)).content == text
        tokens = [t async for t in QuandaReader(await QuandaMessage.from_id(store, mid))]
        assert [t.kind for t in tokens] == ["override", "immutable"] and tokens[0].text == text
    finally:
        await store.close()


def test_checkpoints_come_often_enough_and_copy_the_content_o1_times_per_chunk():
    due = [seq for seq in range(1, 200_001) if checkpoint_due(seq)]
    gaps = [b - a for a, b in zip([0, *due], due)]
    assert min(gaps) >= CHECKPOINT_EVERY and max(gaps) <= CHECKPOINT_MAX
    for n in (1_000, 10_000, 30_000):  # while the gap still grows with the message: copying stays linear
        assert sum(seq for seq in due if seq <= n) <= 8 * n


async def test_the_statements_per_chunk_do_not_grow_with_the_message(tmp_path, monkeypatch):
    store = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    monkeypatch.setattr(sqlite_store, "SYNC_EVERY_S", 1e9)  # syncs by time would depend on the machine's speed
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        w = QuandaWriter(msg)
        statements: list[str] = []
        store._writer_conn.set_trace_callback(statements.append)

        async def window(chunks: int) -> int:
            statements.clear()
            for _ in range(chunks):
                await w.chunk("word ")
            return len(statements)

        await window(10)
        early = await window(1024)
        for _ in range(20):
            await window(1024)
        late = await window(1024)
        assert late <= early  # 3 per chunk (begin, insert, commit), a sync every 64, checkpoints ever rarer
        assert late <= 3 * 1024 + 2 * 1024 // CHECKPOINT_EVERY + 8
    finally:
        await store.close()


async def test_writes_fail_together_at_their_deadline_while_another_process_holds_the_lock(tmp_path):
    """Issue 21, item 5: a batch that failed on a lock held elsewhere was retried write by write, each waiting
    out the whole busy timeout: N writes cost (N+1) × 30 s while everything queued behind them waited."""
    store = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    other = sqlite3.connect(tmp_path / "q.db", isolation_level=None, check_same_thread=False)
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        w = QuandaWriter(msg)
        await w.chunk("a")
        other.execute("BEGIN IMMEDIATE")  # another process writing, and not letting go
        start = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(*(w.chunk(f"{i}") for i in range(5)),
                                                        return_exceptions=True), 3 * store.timeout_s)
        took = time.monotonic() - start
        assert all(isinstance(r, QuandaStoreError) and "nothing was written" in str(r) for r in results), results
        assert took <= store.timeout_s + 2, f"5 writes waited {took:.1f} s for a lock held elsewhere"
        other.execute("ROLLBACK")
        assert (await w.chunk("b")).seq == 2  # none of the five was written; the next write goes through
        assert (await store.get_message(msg.id)).content == "ab"
    finally:
        other.close()
        await store.close()


async def test_prefix_listings_are_range_scans_of_the_key(tmp_path, monkeypatch):
    """Issue 21, item 10: `substr(key, 1, n) = prefix` scanned the whole table (21 ms a call at 200k rows,
    for every conversation, todo and reaper read)."""
    statements: list[str] = []
    real_connect = sqlite_store.connect_db

    def traced(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn
    monkeypatch.setattr(sqlite_store, "connect_db", traced)
    store = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        for owner in ("ann", "bob"):
            for i in range(3):
                await store.put_record("todo", f"{owner}:{i:09d}", {"i": i})
        statements.clear()
        assert [k for k, _ in await store.list_records("todo", prefix="bob:")] == [f"bob:{i:09d}" for i in range(3)]
        listing = next(s for s in statements if "quanda_todo" in s and "SELECT" in s)
        plan = " ".join(row[3] for row in sqlite3.connect(tmp_path / "q.db").execute(f"EXPLAIN QUERY PLAN {listing}"))
        assert "SEARCH" in plan and "SCAN" not in plan, plan
    finally:
        await store.close()


async def test_the_wal_is_cut_back_once_a_checkpoint_lets_it_restart(tmp_path, monkeypatch):
    """Issue 21, item 11: the WAL grew with every burst a reader held back and never shrank (no
    `journal_size_limit`, no truncating checkpoint)."""
    from quanda.core.store import sqlite_schema, sqlite_writer
    monkeypatch.setattr(sqlite_writer, "CHECKPOINT_PAGES", 20)
    monkeypatch.setattr(sqlite_schema, "WAL_SIZE_LIMIT", 64 << 10, raising=False)
    path = tmp_path / "q.db"
    store = await open_store(f"sqlite:///{path}")
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        w = QuandaWriter(msg)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM quanda_tokens").fetchone()  # a reader holding its snapshot
        for i in range(400):
            await w.chunk("x" * 4000)  # ~1.6 MB that no checkpoint may copy back while the reader holds on
        grown = (tmp_path / "q.db-wal").stat().st_size
        assert grown > 1 << 20
        reader.execute("COMMIT")

        async def cut_back() -> bool:
            await w.chunk("y")  # a checkpoint can now complete; the next write restarts the WAL, cut back
            return (tmp_path / "q.db-wal").stat().st_size <= 64 << 10
        for _ in range(200):
            if await cut_back():
                break
            await asyncio.sleep(0.01)  # the checkpointer thread runs on its own: give it a moment
        else:
            raise AssertionError(f"the WAL stayed at {(tmp_path / 'q.db-wal').stat().st_size} bytes (was {grown})")
    finally:
        reader.close()
        await store.close()
