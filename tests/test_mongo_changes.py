"""MongoDB change streams, without a server: recorded event documents (in the shape the server documents for
`update`, `replace` and `insert` events) are run through the store's own pipeline — mongomock evaluates its
`$match` and `$project` as the server would — and fed to the watcher through a fake watch cursor, shaped as
motor's (`watch()` gives the stream) and as PyMongo's AsyncMongoClient's (`await watch()`)."""

import asyncio
import copy
from datetime import datetime

import bson
import mongomock
import pytest
from bson import ObjectId, Timestamp
from pymongo.errors import AutoReconnect, OperationFailure

from quanda.core import QuandaMessage, QuandaReader, QuandaWriter
from quanda.core.store import mongo_facts, mongo_watch
from quanda.core.store.mongo_facts import FACT_SEQ_KEY
from quanda.core.store.mongo_watch import change_pipeline, event_last_seq
from quanda.core.reader import SAFETY_RECHECK_S
from tests.backends import make_store, store_target

TIMEOUT_S = 5
assert TIMEOUT_S < 2 * SAFETY_RECHECK_S
WAKE_S = SAFETY_RECHECK_S / 2  # a wake-up must beat the readers' safety timer: it came from the event


def resume_token(n):
    return {"_data": f"8266A1F0C3{n:08X}2B042C0100296E5A1004F1D3A2B4C5D6E7F8091A2B3C4D5E6F7046645F6964"}


def update_event(message_id, last_seq, n=1):
    """An `update` event for an append: what a pipeline update logged as a $v:2 diff looks like."""
    return {
        "_id": resume_token(n), "operationType": "update", "clusterTime": Timestamp(1721888963, n),
        "wallTime": datetime(2024, 7, 25, 6, 29, 23, 512000),
        "ns": {"db": "quanda", "coll": "quanda_messages"}, "documentKey": {"_id": ObjectId(message_id)},
        "updateDescription": {
            "updatedFields": {f"tokens.{last_seq - 1}": {"k": "chunk", "t": " world", "e": "…"}, "last_seq": last_seq,
                              "updated_at": 1721888963.51, "bson_size": 612, "content_bytes": 11, "tail_bytes": 11,
                              "estimate": "…", "estimate_bson": 8},
            "removedFields": [], "truncatedArrays": []}}


def replace_event(message_id, last_seq, n=2):
    """A `replace` event: how MongoDB 4.4 (and later servers, when the diff is not smaller) report a pipeline
    update — with the whole new document."""
    return {
        "_id": resume_token(n), "operationType": "replace", "clusterTime": Timestamp(1721888964, n),
        "wallTime": datetime(2024, 7, 25, 6, 29, 24),
        "ns": {"db": "quanda", "coll": "quanda_messages"}, "documentKey": {"_id": ObjectId(message_id)},
        "fullDocument": {"_id": ObjectId(message_id), "role": "assistant", "last_seq": last_seq,
                         "content": "x" * 100_000, "tokens": [{"k": "chunk", "t": "y" * 100}] * last_seq}}


def fold_event(message_id, n=3):
    """The content folded forward: no new token, nothing for readers."""
    event = update_event(message_id, 1, n)
    event["updateDescription"]["updatedFields"] = {"content": "x" * 50_000, "content_seq": 64, "tail_bytes": 0}
    return event


def fact_event(seq, n=4):
    return {"_id": resume_token(n), "operationType": "insert", "clusterTime": Timestamp(1721888965, n),
            "ns": {"db": "quanda", "coll": "quanda_facts"}, "documentKey": {"_id": seq},
            "fullDocument": {"_id": seq, "origin": "66a1f0c2e4b0c8a1d2e3f4ff", "topic": "t", "data": "{}"}}


def other_events(message_id):
    """Events the watcher has no use for: a new message, a record change, a delete."""
    insert = fact_event(1, 5) | {"ns": {"db": "quanda", "coll": "quanda_messages"},
                                 "documentKey": {"_id": ObjectId(message_id)}}
    record = update_event(message_id, 3, 6) | {"ns": {"db": "quanda", "coll": "quanda_todo"},
                                               "documentKey": {"_id": "w:1"}}
    delete = {"_id": resume_token(7), "operationType": "delete", "ns": {"db": "quanda", "coll": "quanda_messages"},
              "documentKey": {"_id": ObjectId(message_id)}}
    return [insert, record, delete]


def as_served(events):
    """What the server sends for these events through the store's change stream pipeline."""
    collection = mongomock.MongoClient().db.events
    collection.insert_many(copy.deepcopy(events))
    return list(collection.aggregate(change_pipeline()))


def test_the_pipeline_keeps_updates_that_set_last_seq_replaces_and_facts_projected_small():
    mid = "66a1f0c2e4b0c8a1d2e3f405"
    events = [update_event(mid, 7), fold_event(mid), replace_event(mid, 8), fact_event(12), *other_events(mid)]
    served = as_served(events)
    assert [(e["operationType"], e["ns"]["coll"]) for e in served] == \
        [("update", "quanda_messages"), ("replace", "quanda_messages"), ("insert", "quanda_facts")]
    assert [event_last_seq(e) for e in served[:2]] == [7, 8]
    assert served[2]["documentKey"] == {"_id": 12}
    for event in served:
        assert event["_id"] in (resume_token(1), resume_token(2), resume_token(4))  # resumable
        assert len(bson.encode(event)) < 300  # the replace event's 100 KB document was projected away
    assert len(bson.encode(events[2])) > 100_000


def test_event_last_seq_reads_raw_events_too():
    mid = "66a1f0c2e4b0c8a1d2e3f405"
    assert event_last_seq(update_event(mid, 7)) == 7
    assert event_last_seq(replace_event(mid, 9)) == 9
    assert event_last_seq(fold_event(mid)) > 1 << 60  # says nothing: treated as news
    assert event_last_seq({"operationType": "update", "updateDescription": {"updatedFields": {"last_seq": True}}}) \
        > 1 << 60


def test_a_fresh_pipeline_per_call():
    first = change_pipeline()
    first[0]["$match"]["$or"].clear()
    assert change_pipeline()[0]["$match"]["$or"]


# -- a fake watch cursor ----------------------------------------------------------------------------------


class FakeChangeStream:
    """A change stream cursor: `try_next()` returns what arrived within its max await time, else None."""

    def __init__(self, max_await_s, fail_open=None):
        self.events: asyncio.Queue = asyncio.Queue()
        self.max_await_s = max_await_s
        self.fail_open = fail_open
        self.alive = True
        self.waiting = asyncio.Event()  # set while the watcher waits in try_next
        self.closing = asyncio.Event()
        self.release_close: asyncio.Event | None = None
        self.fail_next: Exception | None = None

    async def __aenter__(self):
        if self.fail_open:  # motor opens the stream (runs the aggregate) on entering
            raise self.fail_open
        return self

    async def __aexit__(self, *exc_info):
        self.closing.set()
        if self.release_close is not None:
            await self.release_close.wait()
        self.alive = False

    async def try_next(self):
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        self.waiting.set()
        try:
            return await asyncio.wait_for(self.events.get(), self.max_await_s)
        except asyncio.TimeoutError:
            return None
        finally:
            self.waiting.clear()

    def push(self, *events):
        for event in as_served(list(events)):
            self.events.put_nowait(event)


class FakeDatabase:
    """The store's database, with `watch()` answered by fake streams: motor-shaped (the stream itself) or
    PyMongo-shaped (a coroutine giving it)."""

    def __init__(self, db, awaitable, fail_open=None):
        self._db = db
        self.awaitable = awaitable
        self.fail_open = fail_open  # every open fails so
        self.fail_once: Exception | None = None  # the next open fails so
        self.open_gate: asyncio.Event | None = None  # opening waits for it (PyMongo-shaped only)
        self.streams: list[FakeChangeStream] = []
        self.calls: list[tuple[list, dict]] = []
        self.watched = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._db, name)

    def __getitem__(self, name):
        return self._db[name]

    def watch(self, pipeline, **kwargs):
        self.calls.append((pipeline, kwargs))
        error, self.fail_once = self.fail_open or self.fail_once, None
        stream = FakeChangeStream(kwargs["max_await_time_ms"] / 1000, None if self.awaitable else error)
        self.streams.append(stream)
        self.watched.set()
        if not self.awaitable:
            return stream

        async def opened():
            if self.open_gate is not None:
                await self.open_gate.wait()
            if error:  # PyMongo's AsyncMongoClient runs the aggregate in `await watch()`
                raise error
            return stream
        return opened()


async def until(predicate, what):
    async def check():
        while not predicate():
            await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(check(), TIMEOUT_S)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@pytest.fixture
async def two_stores(tmp_path, monkeypatch):
    """Store `a` watching through fake change streams (a 50 ms max await), store `b` writing to the same
    mongomock database as another process would."""
    monkeypatch.setattr(mongo_watch, "CHANGE_WAIT_MS", 50)
    a = await make_store("mongomock", tmp_path)
    b = await make_store("mongomock", tmp_path, shared=store_target("mongomock", a))
    yield a, b
    await b.close()
    await a.close()


def no_polling(store):
    async def refuse(*args):
        raise AssertionError("the watcher polled although its change stream works")
    store._poll_last_seqs = refuse


@pytest.mark.parametrize("awaitable", [False, True], ids=["motor", "pymongo"])
async def test_update_and_replace_events_wake_readers_in_another_process(two_stores, awaitable):
    a, b = two_stores
    db = a._db = FakeDatabase(a._db, awaitable)
    no_polling(a)
    msg = await QuandaMessage.create(b, role="assistant")
    reader = QuandaReader(await QuandaMessage.from_id(a, msg.id)).__aiter__()
    assert (await asyncio.wait_for(reader.__anext__(), TIMEOUT_S)).seq == 0  # the snapshot
    await asyncio.wait_for(db.watched.wait(), TIMEOUT_S)
    pipeline, options = db.calls[0]
    assert pipeline == change_pipeline() and options == {"max_await_time_ms": 50}
    stream = db.streams[0]
    writer = QuandaWriter(msg)
    for seq, event in [(1, update_event), (2, replace_event), (3, update_event)]:
        await writer.chunk(f"t{seq} ")
        stream.push(fold_event(msg.id), event(msg.id, seq))  # the fold is filtered out by the pipeline
        token = await asyncio.wait_for(reader.__anext__(), WAKE_S)
        assert (token.seq, token.text) == (seq, f"t{seq} ")
    await reader.aclose()


async def test_a_write_made_while_the_stream_opens_is_not_missed(two_stores):
    a, b = two_stores
    db = a._db = FakeDatabase(a._db, awaitable=True)
    db.open_gate = asyncio.Event()
    no_polling(a)
    msg = await QuandaMessage.create(b, role="assistant")
    reader = QuandaReader(await QuandaMessage.from_id(a, msg.id)).__aiter__()
    assert (await asyncio.wait_for(reader.__anext__(), TIMEOUT_S)).seq == 0
    await asyncio.wait_for(db.watched.wait(), TIMEOUT_S)
    await QuandaWriter(msg).chunk("early")  # before the stream exists: no event will tell of it
    db.open_gate.set()
    assert (await asyncio.wait_for(reader.__anext__(), WAKE_S)).text == "early"
    await reader.aclose()


async def test_an_event_naming_an_old_last_seq_wakes_nobody(two_stores):
    a, b = two_stores
    db = a._db = FakeDatabase(a._db, awaitable=True)
    msg = await QuandaMessage.create(a, role="assistant")
    await QuandaWriter(msg).chunk("a")
    sub = a.subscribe(msg.id)
    await asyncio.wait_for(db.watched.wait(), TIMEOUT_S)
    stream = db.streams[0]
    await asyncio.wait_for(stream.waiting.wait(), TIMEOUT_S)  # past its catch-up (which marks all stale)
    sub.cursor, sub.stale = 1, False
    stream.push(update_event(msg.id, 1), replace_event(msg.id, 1), update_event(msg.id, 2, n=9))
    await asyncio.wait_for(sub.wait(60), TIMEOUT_S)
    assert sub.stale and stream.events.empty()
    sub.close()


@pytest.mark.parametrize("awaitable", [False, True], ids=["motor", "pymongo"])
async def test_a_subscribe_during_the_watchers_exit_gets_a_watcher(two_stores, awaitable):
    a, _b = two_stores
    db = a._db = FakeDatabase(a._db, awaitable)
    msg = await QuandaMessage.create(a, role="assistant")
    first = a.subscribe(msg.id)
    await asyncio.wait_for(db.watched.wait(), TIMEOUT_S)
    old_watcher, old_stream = a._watcher, db.streams[0]
    old_stream.release_close = asyncio.Event()
    first.close()  # nobody needs the watcher: it decides to exit, then awaits its stream's close
    await asyncio.wait_for(old_stream.closing.wait(), TIMEOUT_S)
    assert not old_watcher.done()
    second = a.subscribe(msg.id)  # ...while the old watcher is still closing its stream
    assert a._watcher is not old_watcher and not a._watcher.done()
    await until(lambda: len(db.streams) == 2, "a second change stream")
    new_stream = db.streams[1]
    await asyncio.wait_for(new_stream.waiting.wait(), TIMEOUT_S)
    second.cursor, second.stale = 0, False
    new_stream.push(update_event(msg.id, 1))
    await asyncio.wait_for(second.wait(60), WAKE_S)
    assert second.stale
    old_stream.release_close.set()
    await asyncio.wait_for(old_watcher, TIMEOUT_S)
    second.close()


@pytest.mark.parametrize("awaitable", [False, True], ids=["motor", "pymongo"])
@pytest.mark.parametrize("error", [OperationFailure("The $changeStream stage is only supported on replica sets",
                                                    code=40573),
                                   OperationFailure("not authorized on quanda to execute command", code=13)])
async def test_a_server_without_change_streams_is_polled(two_stores, awaitable, error):
    a, b = two_stores
    db = a._db = FakeDatabase(a._db, awaitable, fail_open=error)
    msg = await QuandaMessage.create(b, role="assistant")
    reader = QuandaReader(await QuandaMessage.from_id(a, msg.id)).__aiter__()
    assert (await asyncio.wait_for(reader.__anext__(), TIMEOUT_S)).seq == 0
    await QuandaWriter(msg).chunk("polled")
    assert (await asyncio.wait_for(reader.__anext__(), WAKE_S)).text == "polled"
    assert len(db.calls) == 1  # tried once, then polled
    await reader.aclose()


async def test_a_broken_stream_is_reopened_and_nothing_written_meanwhile_is_missed(two_stores):
    a, b = two_stores
    db = a._db = FakeDatabase(a._db, awaitable=True)
    msg = await QuandaMessage.create(b, role="assistant")
    reader = QuandaReader(await QuandaMessage.from_id(a, msg.id)).__aiter__()
    assert (await asyncio.wait_for(reader.__anext__(), TIMEOUT_S)).seq == 0
    await asyncio.wait_for(db.watched.wait(), TIMEOUT_S)
    writer = QuandaWriter(msg)
    await writer.chunk("one")
    db.streams[0].push(update_event(msg.id, 1))
    assert (await asyncio.wait_for(reader.__anext__(), WAKE_S)).text == "one"
    db.fail_open = AutoReconnect("connection refused")  # out of reach (not refused): every reopen fails
    db.streams[0].fail_next = OperationFailure("resume point no longer in the oplog", code=286)
    await writer.chunk("two")  # while the stream is down: only a poll can tell
    assert (await asyncio.wait_for(reader.__anext__(), WAKE_S)).text == "two"
    db.fail_open = None
    await until(lambda: len(db.streams) > 1 and db.streams[-1].waiting.is_set(), "the stream reopened")
    await writer.chunk("three")
    db.streams[-1].push(update_event(msg.id, 3))
    assert (await asyncio.wait_for(reader.__anext__(), WAKE_S)).text == "three"
    await reader.aclose()


# -- the fact bus on MongoDB --------------------------------------------------------------------------------


class Inbox(list):
    def __call__(self, topic, fact):
        self.append((topic, fact))


@pytest.mark.parametrize("awaitable", [False, True], ids=["motor", "pymongo"])
async def test_facts_arrive_through_the_change_stream(two_stores, awaitable):
    a, b = two_stores
    db = a._db = FakeDatabase(a._db, awaitable)
    inbox, mine = Inbox(), Inbox()
    await a.listen(inbox)
    await b.listen(mine)
    await asyncio.wait_for(db.watched.wait(), TIMEOUT_S)
    await asyncio.wait_for(db.streams[0].waiting.wait(), TIMEOUT_S)
    for i in range(3):
        await b.publish("todo.changed", {"i": i})
    db.streams[0].push(*(fact_event(seq, n=10 + seq) for seq in (1, 2, 3)))
    await until(lambda: len(inbox) == 3, "three facts")
    assert inbox == [("todo.changed", {"i": i}) for i in range(3)]
    assert mine == inbox  # the publisher heard its own, once, directly


async def test_a_seq_taken_by_a_crashed_publisher_is_given_up_after_a_bounded_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(mongo_facts, "FACT_GAP_WAIT_S", 0.2)
    a = await make_store("mongomock", tmp_path)
    b = await make_store("mongomock", tmp_path, shared=store_target("mongomock", a))
    try:
        inbox = Inbox()
        await a.listen(inbox)
        await b.publish("before", {})
        crashed = await b._increment(FACT_SEQ_KEY)  # a publisher took seq 2 and died before inserting it
        await b.publish("after", {})
        await until(lambda: len(inbox) == 2, "the facts around the gap")
        assert inbox == [("before", {}), ("after", {})]
        tombstone = await a._facts.find_one({"_id": crashed})
        assert tombstone["gap"] is True and "origin" not in tombstone
        # a publisher that was merely slow finds its seq given up, and publishes again under a new one
        taken = iter([crashed])
        increment = b._increment

        async def slow_publisher_seq(key):
            return next(taken, None) or await increment(key)
        b._increment = slow_publisher_seq
        await b.publish("late", {"n": 1})
        await until(lambda: len(inbox) == 3, "the late fact")
        assert inbox[-1] == ("late", {"n": 1})
    finally:
        await b.close()
        await a.close()


async def test_facts_are_pruned_by_a_ttl_index(tmp_path):
    store = await make_store("mongomock", tmp_path)
    indexes = await store._facts.index_information()
    assert indexes["prune"]["key"] == [("at", 1)]
    assert indexes["prune"]["expireAfterSeconds"] == mongo_facts.FACTS_KEPT_S
    await store.publish("t", {})
    doc = await store._facts.find_one({})
    assert isinstance(doc["at"], datetime)  # a BSON date: what a TTL index needs
    await store.close()


# -- issue 21, item 9: no fallback is for good ----------------------------------------------------------------


@pytest.mark.parametrize("awaitable", [False, True], ids=["motor", "pymongo"])
async def test_a_failover_while_the_stream_opens_is_retried_not_polled_for_good(two_stores, awaitable):
    """A failover's OperationFailure (HostUnreachable, code 6) while opening the change stream switched the
    process to polling for good."""
    a, b = two_stores
    db = a._db = FakeDatabase(a._db, awaitable)
    db.fail_once = OperationFailure("Error connecting to h2:27017 :: caused by :: Connection refused", code=6)
    msg = await QuandaMessage.create(b, role="assistant")
    reader = QuandaReader(await QuandaMessage.from_id(a, msg.id)).__aiter__()
    assert (await asyncio.wait_for(reader.__anext__(), TIMEOUT_S)).seq == 0
    await until(lambda: len(db.streams) == 2, "the change stream opened again")
    stream = db.streams[1]
    await asyncio.wait_for(stream.waiting.wait(), TIMEOUT_S)
    no_polling(a)
    await QuandaWriter(msg).chunk("woken by the stream")
    stream.push(update_event(msg.id, 1))
    assert (await asyncio.wait_for(reader.__anext__(), WAKE_S)).text == "woken by the stream"
    await reader.aclose()


async def test_a_server_without_change_streams_is_asked_again_later(two_stores, monkeypatch):
    monkeypatch.setattr(mongo_watch, "CHANGE_RECHECK_S", 0.2)
    a, b = two_stores
    db = a._db = FakeDatabase(a._db, True, fail_open=OperationFailure("only supported on replica sets", code=40573))
    msg = await QuandaMessage.create(b, role="assistant")
    sub = a.subscribe(msg.id)
    await asyncio.wait_for(db.watched.wait(), TIMEOUT_S)
    db.fail_open = None  # made a replica set meanwhile
    await until(lambda: len(db.streams) >= 2 and db.streams[-1].alive and db.fail_open is None,
                "a change stream tried again after polling a while")
    sub.close()


async def test_a_fact_gap_under_replication_lag_does_not_spin_the_listener(tmp_path, monkeypatch):
    """A seq whose fact the primary has but this listener's majority reads do not show yet: each tombstone is
    a duplicate key, and the listener read again at once, for as long as the lag lasted (a busy loop)."""
    monkeypatch.setattr(mongo_facts, "FACT_GAP_WAIT_S", 0.05)
    a = await make_store("mongomock", tmp_path)
    b = await make_store("mongomock", tmp_path, shared=store_target("mongomock", a))
    try:
        await a._start_facts()
        await b.publish("one", {})
        await b.publish("two (lagging)", {})
        await b.publish("three", {})
        facts, reads = a._facts, []

        class Lagging:  # what a majority read shows while the second fact is not yet replicated
            def find(self, query):
                reads.append(query)
                return facts.find({"$and": [query, {"_id": {"$ne": 2}}]})

            def __getattr__(self, name):
                return getattr(facts, name)
        a._facts = Lagging()
        assert [t for t, _ in await asyncio.wait_for(a._poll_facts(), 2)] == ["one"]  # the gap: seen first
        await asyncio.sleep(0.1)  # past the gap's wait (no event marks it)
        assert [t for t, _ in await asyncio.wait_for(a._poll_facts(), 2)] == []  # not filled: it exists
        assert len(reads) <= 4, f"the listener read {len(reads)} times in one poll"
        a._facts = facts  # replicated
        assert [t for t, _ in await a._poll_facts()] == ["two (lagging)", "three"]
    finally:
        await b.close()
        await a.close()
