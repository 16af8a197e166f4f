"""What the PostgreSQL store adds to the contract: NOTIFY wake-ups with polling only while the listener is
down, facts too large for a notification, text PostgreSQL's `text` type cannot hold, lock order across
stores, and the URL. The contract suite itself runs on PostgreSQL through the `backend` fixture."""

import asyncio
import contextlib

import pytest

from quanda.core import QuandaError, QuandaMessage, QuandaReader, QuandaStoreError, QuandaWriter, open_store, replay
from quanda.core.reader import SAFETY_RECHECK_S
from quanda.core.store import postgres_listener
from quanda.core.store.postgres_client import split_url
from tests.backends import make_store, store_target

TIMEOUT_S = 10
pg = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


async def until(predicate, what, timeout=TIMEOUT_S):
    """Wait (woken by the event loop, not by a fixed sleep) until `predicate()`; fail saying `what` otherwise."""
    async def poll():
        while not predicate():
            await asyncio.sleep(0.005)
    try:
        await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


class Inbox:
    def __init__(self):
        self.facts = []
        self.changed = asyncio.Event()

    def __call__(self, topic, fact):
        self.facts.append((topic, fact))
        self.changed.set()

    async def wait_for(self, count):
        async def wait():
            while len(self.facts) < count:
                self.changed.clear()
                await self.changed.wait()
        try:
            await asyncio.wait_for(wait(), TIMEOUT_S)
        except asyncio.TimeoutError:
            raise AssertionError(f"expected {count} facts, got {len(self.facts)}: {self.facts[-3:]}") from None


@contextlib.asynccontextmanager
async def second_store(backend, store, tmp_path):
    other = await make_store(backend, tmp_path, shared=store_target(backend, store))
    try:
        yield other
    finally:
        await other.close()


def test_the_url_names_the_schema_and_passes_the_rest_to_asyncpg():
    assert split_url("postgresql://u@h:5/db") == ("postgresql://u@h:5/db", "public")
    assert split_url("postgresql://u@h/db?schema=team_a&synchronous_commit=off") == \
        ("postgresql://u@h/db?synchronous_commit=off", "team_a")
    with pytest.raises(QuandaError, match="invalid PostgreSQL schema"):
        split_url("postgresql://u@h/db?schema=a;drop")


async def test_an_unreachable_server_is_a_store_error_with_the_cause():
    with pytest.raises(QuandaStoreError) as info:
        await open_store("postgresql://root@127.0.0.1:1/test")
    assert isinstance(info.value.__cause__, OSError)


@pg
async def test_text_postgres_cannot_hold_in_text_columns_round_trips(backend, store):
    msg = await QuandaMessage.create(store, role="a\x00b", content="x\x00")
    w = QuandaWriter(msg)
    await w.chunk("\x00y", estimate="\x00")
    await w.warning("w\x00")
    await msg.refresh()
    assert (msg.role, msg.content, msg.estimate, msg.warning) == ("a\x00b", "x\x00\x00y", "\x00", "w\x00")
    assert [m.id for m in await store.select_messages(role="a\x00b")] == [msg.id]
    for key in ["b", "a", "\x00", "é", "Z", "aa", "a\x00", "\U0001f600"]:
        await store.put_record("todo", key, {"k": key})
    assert [k for k, _ in await store.list_records("todo")] == sorted(["b", "a", "\x00", "é", "Z", "aa", "a\x00",
                                                                       "\U0001f600"])
    assert [k for k, _ in await store.list_records("todo", prefix="a")] == ["a", "a\x00", "aa"]
    inbox = Inbox()
    await store.listen(inbox)
    await store.publish("t\x00", {"v": "\x00"})
    assert inbox.facts == [("t\x00", {"v": "\x00"})]


@pg
async def test_content_is_checkpointed_not_rewritten_on_every_chunk(backend, store):
    msg = await QuandaMessage.create(store, role="assistant")
    w = QuandaWriter(msg)
    for i in range(150):
        await w.chunk(f"{i},")
    async with store._conn("test") as conn:
        row = await conn.fetchrow(f"SELECT content, content_seq, last_seq FROM {store._s}.quanda_messages "
                                  f"WHERE id = $1", msg.id)
    assert (row["content_seq"], row["last_seq"]) == (128, 150)  # checkpoints at 64 and 128; 22 chunks after
    await msg.refresh()
    assert msg.content == "".join(f"{i}," for i in range(150))
    assert row["content"].decode() == "".join(f"{i}," for i in range(128))


@pg
async def test_another_process_is_woken_by_notify_without_polling(backend, store, tmp_path):
    async with second_store(backend, store, tmp_path) as other:
        msg = await QuandaMessage.create(store, role="assistant")
        reader = asyncio.create_task(_collect(QuandaReader(await QuandaMessage.from_id(other, msg.id))))
        await until(lambda: other._listening and other._watcher is not None and other._watch_wake.is_set() is False
                    and other._subscriptions, "the other store to listen and its watcher to park")
        polls = []
        original = other._poll_last_seqs

        async def counting(ids):
            polls.append(ids)
            return await original(ids)
        other._poll_last_seqs = counting
        w = QuandaWriter(msg)
        written = [await w.chunk(f"{i} ") for i in range(100)]
        written.append(await w.make_immutable())
        tokens = await asyncio.wait_for(reader, TIMEOUT_S)
        assert tokens[1:] == written[tokens[0].seq:]
        assert polls == []  # every wake-up came through NOTIFY


@pg
async def test_a_lost_listener_falls_back_to_polling_reconnects_and_catches_up(backend, store, tmp_path, monkeypatch):
    monkeypatch.setattr(postgres_listener, "RECONNECT_S", (0.3, 0.3))  # an outage long enough to publish into
    async with second_store(backend, store, tmp_path) as other:
        inbox = Inbox()
        await other.listen(inbox)
        msg = await QuandaMessage.create(store, role="assistant")
        reader = asyncio.create_task(_collect(QuandaReader(await QuandaMessage.from_id(other, msg.id))))
        w = QuandaWriter(msg)
        written = [await w.chunk(f"a{i} ") for i in range(20)]
        await store.publish("before", {"n": 0})
        await inbox.wait_for(1)
        first_generation = other._listener_gen
        polls = []
        original = other._poll_facts

        async def counting():
            polls.append(1)
            return await original()
        other._poll_facts = counting
        pid = other._listener_conn.get_server_pid()
        async with store._conn("test") as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        await until(lambda: not other._listening, "the listener to notice its connection is gone")
        for i in range(5):
            await store.publish("during", {"n": i})
        written += [await w.chunk(f"b{i} ") for i in range(20)]
        await inbox.wait_for(6)
        await until(lambda: other._listening and other._listener_gen > first_generation, "the listener to reconnect")
        assert polls, "the watcher polled while the listener was down"
        for i in range(5):
            await store.publish("after", {"n": i})
        written += [await w.chunk(f"c{i} ") for i in range(20)]
        written.append(await w.make_immutable())
        await inbox.wait_for(11)
        tokens = await asyncio.wait_for(reader, TIMEOUT_S)
        assert tokens[1:] == written[tokens[0].seq:]
        assert inbox.facts == [("before", {"n": 0})] + [("during", {"n": i}) for i in range(5)] + \
            [("after", {"n": i}) for i in range(5)]


@pg
async def test_facts_too_large_for_a_notification_arrive_in_order(backend, store, tmp_path):
    big = {"text": "é" * 6000}  # under the 7,000-character limit, 12,000 bytes of UTF-8: over NOTIFY's 8,000
    async with second_store(backend, store, tmp_path) as other:
        inbox = Inbox()
        await other.listen(inbox)
        await store.publish("small", {"n": 1})
        await store.publish("big", big)
        await store.publish("small", {"n": 2})
        await inbox.wait_for(3)
        assert inbox.facts == [("small", {"n": 1}), ("big", big), ("small", {"n": 2})]


@pg
async def test_a_notification_during_a_snapshot_is_not_forgotten(backend, store, tmp_path):
    """A commit after the reader's snapshot whose notification arrives before the snapshot query returns."""
    async with second_store(backend, store, tmp_path) as other:
        msg = await QuandaMessage.create(store, role="assistant")
        w = QuandaWriter(msg)
        await w.chunk("one ")
        await until(lambda: not other._closed and other._pool is not None, "the other store")
        notified = asyncio.Event()
        on_notify = other._on_notify

        def noting(*args):
            on_notify(*args)
            notified.set()
        other._on_notify = noting
        real_conn = other._conn
        raced = []

        @contextlib.asynccontextmanager
        async def racing_conn(what):
            async with real_conn(what) as conn:
                if what != "get_message" or raced or msg.id not in other._subscriptions:
                    yield conn
                    return

                class Racing:
                    async def fetchrow(self, *args):
                        row = await conn.fetchrow(*args)  # the snapshot: seq 1
                        notified.clear()
                        raced.append(await w.chunk("two "))  # committed after it
                        await asyncio.wait_for(notified.wait(), TIMEOUT_S)  # and other heard of it, before
                        return row                                          # the snapshot reaches the reader
                yield Racing()
        other._conn = racing_conn
        remote = await QuandaMessage.from_id(other, msg.id)
        parked = other.subscribe(msg.id)  # starts the listener and the watcher; wait until the watcher parks,
        await until(lambda: other._listening and not other._watch_wake.is_set(),  # so no poll can rescue us
                    "the other store to listen and its watcher to park")
        reader = QuandaReader(remote).__aiter__()
        assert (await asyncio.wait_for(reader.__anext__(), TIMEOUT_S)).seq == 1
        token = await asyncio.wait_for(reader.__anext__(), SAFETY_RECHECK_S / 5)  # not the 5 s safety net
        assert token == raced[0]
        await reader.aclose()
        parked.close()


@pg
async def test_two_stores_writing_to_many_messages_never_deadlock(backend, store, tmp_path):
    async with second_store(backend, store, tmp_path) as other:
        msgs = [await QuandaMessage.create(store, role="assistant") for _ in range(12)]

        async def writer(s, order, tag):
            for round_ in range(10):
                for m in order:
                    await QuandaWriter(await QuandaMessage.from_id(s, m.id)).chunk(f"{tag}{round_} ")

        # many tasks per store, so each store's batches hold several messages, locked in opposite orders
        tasks = [writer(store, msgs, f"s{n}") for n in range(6)] + \
                [writer(other, msgs[::-1], f"o{n}") for n in range(6)]
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        for m in msgs:
            tokens = await store.select_tokens(m.id, limit=1000)
            assert [t.seq for t in tokens] == list(range(1, 121))
            await m.refresh()
            assert replay(tokens).content == m.content


async def _collect(reader):
    return [token async for token in reader]


async def wal_of_a_message(store, chunks: int) -> int:
    """The WAL bytes PostgreSQL wrote for the appends of a `chunks`-chunk message of random text (which TOAST's
    compression cannot shrink), counted by the appending statements themselves (EXPLAIN ANALYZE's WAL
    counters: this connection's own, whatever else the shared server does meanwhile)."""
    import json
    import secrets

    import asyncpg
    msg = await QuandaMessage.create(store, role="assistant")
    wal = 0
    conn = await asyncpg.connect(store._dsn)
    try:
        for _ in range(chunks):
            text = secrets.token_urlsafe(15).encode()
            plan = await conn.fetchval(f"EXPLAIN (ANALYZE, WAL, FORMAT JSON) {store._sql_append}", store.channel,
                                       store.origin, [msg.id], ["chunk"], [text], [None], [None], [None],
                                       store.max_message_bytes, 1.0)
            wal += json.loads(plan)[0]["Plan"]["WAL Bytes"]
    finally:
        await conn.close()
    await msg.refresh()
    assert msg.last_seq == chunks  # the statement really appended, chunk after chunk
    return wal


@pg
async def test_the_wal_of_a_message_grows_linearly_with_it(backend, store):
    """Issue 21, item 6: the content was rewritten every 64 chunks, so the WAL of a message grew with its square:
    14x the content at 1,000 chunks, 40x at 4,000. Checkpoints at gaps growing with the message make it
    linear: 4,000 chunks write at most ~4.5x the WAL of 1,000."""
    short, long = await wal_of_a_message(store, 1000), await wal_of_a_message(store, 4000)
    assert long <= 4.5 * short, f"WAL {short:,} bytes for 1,000 chunks, {long:,} for 4,000: {long / short:.2f}x"


@pg
async def test_units_writing_the_same_records_in_opposite_orders_never_deadlock(backend, store, tmp_path):
    """Issue 21, item 11: `quanda_commit_records` locked records in the caller's order, so two units touching
    the same records in opposite orders could deadlock (40P01), which nobody retried."""
    keys = [f"k{i:02d}" for i in range(8)]
    async with second_store(backend, store, tmp_path) as other:
        async def units(s, order, tag):
            for round_ in range(15):
                assert await s.commit_records([("put", "todo", k, {"by": tag, "round": round_}) for k in order])

        await asyncio.wait_for(asyncio.gather(*[units(store, keys, f"s{n}") for n in range(4)],
                                              *[units(other, keys[::-1], f"o{n}") for n in range(4)]), 120)
    found = await store.list_records("todo")
    assert [k for k, _ in found] == keys
    assert len({(d["by"], d["round"]) for _k, d in found}) == 1  # every unit whole: one unit's values everywhere


@pg
async def test_a_process_uses_its_pool_size_plus_two_connections(backend, tmp_path):
    """Issue 21, item 11: 10 connections a process, not configurable, filled max_connections at ~9 servers."""
    from tests.backends import postgres_test_url
    store = await open_store(postgres_test_url(), pool_size=3)
    try:
        async def pid() -> int:
            async with store._conn("test") as conn:
                return await conn.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.05)")
        pooled = set(await asyncio.gather(*(pid() for _ in range(20))))
        assert len(pooled) <= 3
        await store.listen(lambda topic, fact: None)  # the listening connection
        await QuandaWriter(await QuandaMessage.create(store, role="a")).chunk("x")  # the writer's
        async with store._conn("test") as conn:
            others = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                                         "AND pid = ANY($1::int[])", [store._writer_conn._protocol.get_server_pid(),
                                                                      store._listener_conn._protocol.get_server_pid()])
        assert others == 2
    finally:
        await store.close()
