"""MongoDB: the whole document's size accounted against `bson.encode`, the seal always fitting at the very edge
of the limit, O(token) oplog entries per append, and every size or BSON error a QuandaError.

mongomock runs the real pipeline updates here; the server's 16 MiB limit is modelled by `max_document_bytes`
(the server accepts a document whose `len(bson.encode(doc))` is at most 16,777,216 bytes)."""

import asyncio
import tempfile
from unittest import mock

import bson
import pytest
from bson import ObjectId
from bson.errors import InvalidDocument
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.errors import DocumentTooLarge, OperationFailure, WTimeoutError

from quanda.core import QuandaError, QuandaLimitError, QuandaMessage, QuandaReader, QuandaStoreError, QuandaWriter, replay
from quanda.core.store import mongo
from quanda.core.store.mongo_layout import MAX_DOCUMENT_BYTES, entry_bson_size, bytes_needed, Py, token_entry, value_bson
from quanda.core.token import CHUNK
from tests.backends import make_store

texts = st.text(st.characters(codec="utf-8"), max_size=12)  # emoji, NUL, U+FFFF, RTL marks; no lone surrogates
estimates = st.none() | texts
ops = st.one_of(st.tuples(st.just("chunk"), texts, estimates), st.tuples(st.just("override"), texts, st.none()),
                st.tuples(st.just("warning"), texts, st.none()))


async def raw(store, message_id):
    return await store._messages.find_one({"_id": ObjectId(message_id)})


def check_document(doc):
    """The stored bookkeeping agrees with the document: exact BSON size, content and tail byte counts."""
    assert doc["bson_size"] == len(bson.encode(doc))
    tail = "".join(e["t"] for e in doc["tokens"][doc["content_seq"]:] if e["k"] == "chunk")
    assert doc["tail_bytes"] == len(tail.encode())
    assert doc["content_bytes"] == len((doc["content"] + tail).encode())
    assert doc["estimate_bson"] == value_bson(doc["estimate"])
    assert doc["warning_bson"] == value_bson(doc["warning"])


async def run_accounting(steps, initial):
    with tempfile.TemporaryDirectory() as tmp:
        store = await make_store("mongomock", tmp)
        try:
            msg = await QuandaMessage.create(store, role="assistant", content=initial)
            w = QuandaWriter(msg)
            check_document(await raw(store, msg.id))
            for kind, text, estimate in steps:
                await (w.chunk(text, estimate=estimate) if kind == "chunk" else getattr(w, kind)(text))
                doc = await raw(store, msg.id)
                check_document(doc)
                await msg.refresh()
                assert msg.state == replay(await store.select_tokens(msg.id, limit=10_000))
            await w.make_immutable()
            doc = await raw(store, msg.id)
            check_document(doc)
            assert doc["content_seq"] == doc["last_seq"] and doc["tail_bytes"] == 0  # folded at the seal
            await msg.refresh()
            assert msg.state == replay(await store.select_tokens(msg.id, limit=10_000))
        finally:
            await store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(ops, max_size=30), initial=texts)
def test_bson_size_is_the_real_size_after_every_write(steps, initial):
    with mock.patch.object(mongo, "CHECKPOINT_EVERY", 3):  # fold often, so folds are exercised too
        asyncio.run(run_accounting(steps, initial))


def test_entry_sizes_are_what_bson_encodes():
    for kind, text, estimate in [("chunk", "", None), ("chunk", "héllo 🙂", "(40%)"), ("immutable", "", None),
                                 ("override", "x" * 300, None), ("warning", "\u202e\x00", None)]:
        entry = token_entry(kind, text, estimate)
        assert entry_bson_size(kind, len(text.encode()), estimate) == len(bson.encode(entry))
        for index in (0, 9, 10, 12345):  # an array entry costs its key and a type byte on top
            assert len(bson.encode({"a": [entry] * (index + 1)})) - len(bson.encode({"a": [entry] * index})) == \
                2 + len(str(index)) + len(bson.encode(entry))


def room_for_a_chunk(store, doc):
    """Bytes left beyond what an empty chunk would need (the admission check's arithmetic, in Python)."""
    return store.max_document_bytes - bytes_needed(Py(doc), CHUNK, entry_bson_size(CHUNK, 0, None), 0, 0)


async def fill_to_the_edge(store, msg):
    """Append chunks until the document, sealed and folded, is exactly `max_document_bytes`."""
    w = QuandaWriter(msg)
    while (room := room_for_a_chunk(store, await raw(store, msg.id))) >= 2 * store.max_token_bytes:
        await w.chunk("a" * store.max_token_bytes)
    while room % 2:  # each byte of chunk text costs two (the log, and the content it is folded into): an
        await w.chunk("", estimate="x")  # entry carrying an estimate costs 9 more, so the parity flips
        room = room_for_a_chunk(store, await raw(store, msg.id))
    await w.chunk("é" * (room // 4) + "b" * (room // 2 % 2))  # room / 2 bytes: nothing left
    return await raw(store, msg.id)


@pytest.mark.parametrize("limit", [6000, 6001])  # both parities: one fills the document to the byte
async def test_the_seal_fits_at_the_very_edge(tmp_path, limit):
    store = await make_store("mongomock", tmp_path, max_token_bytes=500)
    store.max_document_bytes = limit
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        reader = asyncio.create_task(asyncio.wait_for(collect(msg), 10))
        before = await fill_to_the_edge(store, msg)
        w = QuandaWriter(msg)
        for refused in (w.chunk(""), w.chunk("x"), w.warning("w")):
            with pytest.raises(QuandaLimitError, match="is full: MongoDB keeps a message"):
                await refused
        assert await raw(store, msg.id) == before  # nothing was written
        await w.make_immutable()
        sealed = await raw(store, msg.id)
        check_document(sealed)
        assert len(bson.encode(sealed)) == limit  # the admission check left exactly the seal's room
        tokens = await reader
        assert tokens[-1].kind == "immutable" and replay(tokens) == (await msg.refresh()).state
    finally:
        await store.close()


async def collect(msg):
    return [token async for token in QuandaReader(msg)]


async def test_at_the_real_16_mib_limit_the_sealed_document_is_exactly_16_mib(tmp_path):
    store = await make_store("mongomock", tmp_path)  # 1 MiB tokens, 16 MiB messages: the defaults
    assert store.max_document_bytes == MAX_DOCUMENT_BYTES == 16 * 1024 * 1024
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        await fill_to_the_edge(store, msg)
        with pytest.raises(QuandaLimitError):
            await QuandaWriter(msg).chunk("x")
        await QuandaWriter(msg).make_immutable()
        doc = await raw(store, msg.id)
        assert doc["bson_size"] == len(bson.encode(doc)) == MAX_DOCUMENT_BYTES  # what the server still accepts
        await msg.refresh()
        assert msg.immutable and len(msg.content.encode()) == doc["content_bytes"] > 8_000_000
    finally:
        await store.close()


# -- what an append costs the oplog ----------------------------------------------------------------------


def oplog_diff_bytes(pre: dict, post: dict) -> int:
    """About what MongoDB logs for a pipeline update ($v: 2 delta), modelled on the server's
    document_diff_calculator.cpp: a changed field's new value; for an array, only the entries that changed or
    were appended; a changed string is logged whole."""
    size = 0
    for key, value in post.items():
        old = pre.get(key, object())
        if isinstance(value, list) and isinstance(old, list):
            for i, entry in enumerate(value):
                if i >= len(old) or old[i] != entry:
                    size += len(bson.encode({f"u{i}": entry})) - 5
        elif type(old) is not type(value) or old != value:
            size += len(bson.encode({key: value})) - 5
    return size


async def test_an_append_ships_o_token_bytes_to_the_oplog(tmp_path):
    store = await make_store("mongomock", tmp_path)
    try:
        msg = await QuandaMessage.create(store, role="assistant", content="x" * 8000)  # a long answer already
        w = QuandaWriter(msg)
        pre = await raw(store, msg.id)
        plain, folds = [], []
        for i in range(600):
            await w.chunk("tok ", estimate=f"({i})")
            post = await raw(store, msg.id)
            (folds if post["content_seq"] != pre["content_seq"] else plain).append(oplog_diff_bytes(pre, post))
            pre = post
        # an append: its entry and a few counters, never the 8 KB content
        assert max(plain) < 200, max(plain)
        # the content is folded forward rarely: once the tail is a quarter of the checkpoint (2,000 bytes)
        assert len(plain) == 599 and len(folds) == 1 and 10_000 < folds[0] < 10_200, folds
    finally:
        await store.close()


# -- the server's size errors and BSON errors become QuandaErrors -----------------------------------------


class Failing:
    """A collection whose every call raises `error`."""

    def __init__(self, error):
        self.error = error

    def __getattr__(self, name):
        async def fail(*args, **kwargs):
            raise self.error
        return fail


TOO_LARGE = "Resulting document after update is larger than 16777216"


@pytest.mark.parametrize("error, expected", [
    (OperationFailure(TOO_LARGE, code=17419), QuandaLimitError),
    (OperationFailure(TOO_LARGE, code=10334), QuandaLimitError),  # BSONObjectTooLarge, on newer servers
    (DocumentTooLarge("BSON document too large (16777300 bytes)"), QuandaLimitError),
    (InvalidDocument("cannot encode object"), QuandaError),
    (OverflowError("BSON can only handle up to 8-byte ints"), QuandaError),
    (OperationFailure("not primary", code=10107), QuandaStoreError),
    (WTimeoutError("waiting for replication timed out", code=64), QuandaStoreError),
])
async def test_server_size_codes_and_bson_errors_are_quanda_errors(tmp_path, error, expected):
    store = await make_store("mongomock", tmp_path)
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        store._messages = Failing(error)
        with pytest.raises(expected) as info:
            await store.append(msg.id, "chunk", "x")
        assert info.value.__cause__ is error and type(info.value) is expected
        store._db = {"quanda_todo": Failing(error)}
        with pytest.raises(expected):
            await store.put_record("todo", "k", {"n": 1})
        with pytest.raises(expected):
            await store.commit_records([("insert", "todo", "k", {"n": 1})])
    finally:
        await store.close()
