"""Invariant 8: bad input gets a clear QuandaError (or TypeError) and nothing is written."""

import asyncio
import gc
import sqlite3
import warnings

import pytest

from quanda.core.store.base import MessageRecord
from quanda.core import (QuandaError, QuandaLimitError, QuandaMessage, QuandaNotFoundError, QuandaReader,
                        QuandaStoreError, QuandaWriter, open_store)
from tests.backends import make_store

MALFORMED_IDS = ["", "xyz", "g" * 24, "0" * 23, "0" * 25, "$where", "{'$gt': ''}", " " + "a" * 23, 123, None,
                 b"a" * 24, ["a" * 24]]
UNKNOWN_ID = "0123456789abcdef01234567"


@pytest.mark.parametrize("bad_id", MALFORMED_IDS + [UNKNOWN_ID])
async def test_malformed_or_unknown_id_is_not_found_everywhere(store, bad_id):
    with pytest.raises(QuandaNotFoundError):
        await QuandaMessage.from_id(store, bad_id)
    with pytest.raises(QuandaNotFoundError):
        await QuandaWriter.from_id(store, bad_id)
    with pytest.raises(QuandaNotFoundError):
        await store.append(bad_id, "chunk", "x")
    with pytest.raises(QuandaNotFoundError):
        await store.select_tokens(bad_id)


async def test_reader_of_unknown_id_fails_at_once(store):
    ghost = QuandaMessage(store, MessageRecord(UNKNOWN_ID, "assistant", "", None, "", False, 0, 0.0, 0.0))
    for after_seq in (None, 0, 5):
        with pytest.raises(QuandaNotFoundError):
            async for _ in QuandaReader(ghost, after_seq=after_seq):
                pass


@pytest.mark.parametrize("text", [None, 1, b"bytes", ["a"], {"t": "x"}])
async def test_non_str_text_is_a_type_error_and_writes_nothing(store, text):
    msg = await QuandaMessage.create(store, role="assistant")
    w = QuandaWriter(msg)
    for write in (lambda: w.chunk(text), lambda: w.override(text), lambda: w.warning(text)):
        with pytest.raises(TypeError):
            await write()
    with pytest.raises(TypeError):
        await w.chunk("ok", estimate=b"x")
    await msg.refresh()
    assert msg.last_seq == 0 and await store.select_tokens(msg.id) == []


async def test_unknown_kind_is_refused(store):
    msg = await QuandaMessage.create(store, role="assistant")
    with pytest.raises(QuandaError, match="unknown token kind"):
        await store.append(msg.id, "delete", "x")


async def test_token_over_the_limit_is_refused_and_nothing_written(backend, tmp_path):
    store = await make_store(backend, tmp_path, max_token_bytes=1000, max_message_bytes=5000)
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        w = QuandaWriter(msg)
        await w.chunk("a" * 1000)
        with pytest.raises(QuandaLimitError, match="1001 bytes is over the 1000-byte limit"):
            await w.chunk("a" * 1001)
        with pytest.raises(QuandaLimitError):
            await w.chunk("é" * 501)  # 1002 bytes in UTF-8
        with pytest.raises(QuandaLimitError):
            await w.chunk("a" * 900, estimate="b" * 101)
        with pytest.raises(QuandaLimitError):
            await QuandaMessage.create(store, role="q", content="x" * 1001)
        await msg.refresh()
        assert (msg.last_seq, len(msg.content)) == (1, 1000)
    finally:
        await store.close()


async def test_message_over_its_limit_is_refused_and_nothing_written(backend, tmp_path):
    store = await make_store(backend, tmp_path, max_token_bytes=1000, max_message_bytes=2500)
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        w = QuandaWriter(msg)
        await w.chunk("a" * 1000)
        await w.chunk("b" * 1000)
        with pytest.raises(QuandaLimitError, match="over its 2500-byte limit"):
            await w.chunk("c" * 501)
        await msg.refresh()
        assert (msg.last_seq, msg.content) == (2, "a" * 1000 + "b" * 1000)
        await w.chunk("c" * 500)  # exactly at the limit is fine
        await w.override("short")  # and an override can shrink it again
        await w.chunk("d" * 1000)
        await msg.refresh()
        assert (msg.content, msg.last_seq) == ("short" + "d" * 1000, 5)
    finally:
        await store.close()


async def test_closed_store_raises_a_quanda_error(backend, tmp_path):
    store = await make_store(backend, tmp_path)
    msg = await QuandaMessage.create(store, role="assistant")
    await store.close()
    with pytest.raises(QuandaError):
        await QuandaWriter(msg).chunk("x")


async def test_sqlite_driver_errors_become_store_errors_with_the_cause(tmp_path):
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(QuandaStoreError) as info:
        await open_store(f"sqlite:///{path}")
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


async def test_sqlite_write_failure_leaves_nothing_half_written(tmp_path):
    store = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        await QuandaWriter(msg).chunk("kept")
        # a trigger stands in for a disk failure after the token row is written, before the message row (a
        # warning writes both; a chunk writes the message row only now and then, see test_quanda_sqlite_writes)
        await store._write(lambda conn: conn.execute(
            "CREATE TRIGGER fail BEFORE UPDATE ON quanda_messages WHEN NEW.last_seq = 2 "
            "AND EXISTS (SELECT 1 FROM quanda_tokens WHERE text = 'boom') "
            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"))
        with pytest.raises(QuandaStoreError, match="disk on fire") as info:
            await QuandaWriter(msg).warning("boom")
        assert isinstance(info.value.__cause__, sqlite3.Error)
        await msg.refresh()
        assert (msg.content, msg.last_seq) == ("kept", 1)
        assert [t.text for t in await store.select_tokens(msg.id)] == ["kept"]
        assert (await QuandaWriter(msg).chunk(" more")).seq == 2
    finally:
        await store.close()


async def test_sqlite_one_operation_that_raises_fails_alone_and_the_writer_goes_on(tmp_path):
    store = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        msg = await QuandaMessage.create(store, role="assistant")

        def half_written_then_broken(conn):
            conn.execute("INSERT INTO quanda_tokens VALUES (?, 99, 'chunk', 'ghost', NULL)", (msg.id,))
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

        writes = [QuandaWriter(msg).chunk(f"t{i} ") for i in range(5)]
        broken = store._write(half_written_then_broken)
        results = await asyncio.wait_for(asyncio.gather(broken, *writes, return_exceptions=True), 5)
        assert isinstance(results[0], QuandaStoreError) and "UnicodeEncodeError" in str(results[0])
        assert [t.seq for t in results[1:]] == [1, 2, 3, 4, 5]  # everyone else in that batch committed
        assert (await asyncio.wait_for(QuandaWriter(msg).chunk("next"), 1)).seq == 6
        assert [t.text for t in await store.select_tokens(msg.id)][-1] == "next"  # no ghost row at seq 99
        assert len(await store.select_tokens(msg.id)) == 6
    finally:
        await store.close()


async def test_sqlite_a_dead_writer_thread_fails_pending_writes_fast_and_restarts(tmp_path, monkeypatch):
    from quanda.core.store.sqlite import SQLiteStore
    store = await open_store(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        real_commit = SQLiteStore._commit

        def die(conn, batch):
            raise SystemExit("the thread is gone")  # escapes every handler inside the loop
        monkeypatch.setattr(SQLiteStore, "_commit", staticmethod(die))
        pending = [QuandaWriter(msg).chunk("lost") for _ in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 5)
        assert all(isinstance(r, QuandaStoreError) and "writer stopped" in str(r) for r in results), results
        monkeypatch.setattr(SQLiteStore, "_commit", staticmethod(real_commit))
        assert (await asyncio.wait_for(QuandaWriter(msg).chunk("after restart"), 5)).seq == 1
    finally:
        await store.close()


async def test_mongo_driver_errors_become_store_errors_with_the_cause(tmp_path):
    from pymongo.errors import ServerSelectionTimeoutError

    from quanda.core.store.mongo import MongoStore

    class DeadCollection:
        def __getattr__(self, name):
            async def fail(*args, **kwargs):
                raise ServerSelectionTimeoutError("connection refused")
            return fail

    class DeadClient:
        def __getitem__(self, name):
            return self

        async def command(self, *args):
            raise ServerSelectionTimeoutError("connection refused")

        def close(self):
            self.closed = True

    client = DeadClient()
    with pytest.raises(QuandaStoreError, match="cannot reach MongoDB") as info:
        await MongoStore(client).open()
    assert isinstance(info.value.__cause__, ServerSelectionTimeoutError)
    assert client.closed  # nothing left open
    store = MongoStore(DeadClient())
    store._messages = DeadCollection()
    with pytest.raises(QuandaStoreError) as info:
        await store.append("0123456789abcdef01234567", "chunk", "x")
    assert isinstance(info.value.__cause__, ServerSelectionTimeoutError)


async def test_unsupported_url_is_a_clear_error():
    with pytest.raises(QuandaError, match="unsupported store URL"):
        await open_store("redis://localhost/x")
    with pytest.raises(QuandaError, match="file path"):
        await open_store("sqlite:///:memory:")


@pytest.mark.parametrize("driver", ["motor", "pymongo"])
async def test_a_dead_mongodb_is_a_clear_store_error_on_both_drivers(driver):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    with pytest.raises(QuandaStoreError, match="cannot reach MongoDB") as info:
        await open_store(f"mongodb://127.0.0.1:{port}/quanda?serverSelectionTimeoutMS=300", mongo_driver=driver)
    assert type(info.value.__cause__).__module__.startswith("pymongo")
    del info
    with warnings.catch_warnings():  # PyMongo 4.20's async client leaves its refused socket to the collector
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def test_record_kinds_the_stores_use_for_themselves_are_refused(store):
    for kind in ("messages", "tokens", "facts", "counters"):
        with pytest.raises(QuandaError, match="reserved"):
            await store.put_record(kind, "k", {"x": 1})
    assert (await store.select_messages()) == []  # nothing landed in the store's own tables
