"""MongoDB: the client (URL options win over our defaults, PyMongo's async client by default), the listing's
index, fresh projections, records as faithful as SQLite's, and units of records in a transaction."""

import asyncio
import json

import pytest
from pymongo import ReadPreference
from pymongo.errors import OperationFailure
from pymongo.write_concern import WriteConcern

from quanda.config import Settings
from bson import ObjectId

from quanda.core import QuandaError, QuandaImmutableError, QuandaMessage, QuandaNotFoundError, QuandaWriter, open_store
from quanda.core.store import mongo, mongo_client
from quanda.core.store.mongo_client import client_options, make_client
from tests.backends import make_store, mongomock_client


async def close(client):
    closing = client.close()
    if asyncio.iscoroutine(closing):
        await closing


@pytest.mark.parametrize("driver", ["pymongo", "motor"])
async def test_url_options_win_over_our_defaults(driver):
    url = ("mongodb://127.0.0.1:9/quanda?serverSelectionTimeoutMS=300&w=1&wtimeoutMS=50&readConcernLevel=local"
           "&retryWrites=false&appName=mine&readPreference=secondaryPreferred")
    client = make_client(url, driver)
    try:
        assert client.options.server_selection_timeout == 0.3
        assert client.write_concern == WriteConcern(w=1, wtimeout=50)
        assert client.read_concern.level == "local"
        assert client.options.retry_writes is False
        assert client.options.pool_options.metadata["application"] == {"name": "mine"}
        assert client.read_preference == ReadPreference.SECONDARY_PREFERRED
    finally:
        await close(client)
    client = make_client("mongodb://127.0.0.1:9/quanda", driver)
    try:
        assert client.options.server_selection_timeout == 5
        assert client.write_concern == WriteConcern(w="majority", wtimeout=10_000)
        assert client.read_concern.level == "majority"
        assert client.options.retry_writes is True
        assert client.options.pool_options.metadata["application"] == {"name": "quanda"}
        assert client.options.timeout == 5  # the store's deadline, PyMongo's client-side operation timeout
    finally:
        await close(client)


def test_url_option_names_are_case_insensitive_and_aliases_count():
    given = client_options("mongodb://h/db?SERVERSELECTIONTIMEOUTMS=1&wtimeout=5&ReadConcernLevel=local")
    assert given == {"w": "majority", "retryWrites": True, "appName": "quanda", "timeoutMS": 5000, "tz_aware": False}


def test_the_stores_deadline_is_the_clients_timeout_unless_the_url_sets_one():
    assert client_options("mongodb://h/db", timeout_s=2.5)["timeoutMS"] == 2500
    assert "timeoutMS" not in client_options("mongodb://h/db?timeoutMS=800", timeout_s=2.5)


async def test_pymongo_is_the_default_driver_and_motor_stays_selectable(monkeypatch):
    chosen = []

    def spy(url, driver, timeout_s=5.0):
        chosen.append(driver)
        return mongomock_client()
    monkeypatch.setattr(mongo_client, "make_client", spy)
    monkeypatch.delenv("QUANDA_MONGO_DRIVER", raising=False)
    assert Settings.from_env().mongo_driver == "pymongo"
    await (await open_store("mongodb://h/db")).close()
    monkeypatch.setenv("QUANDA_MONGO_DRIVER", "motor")
    await (await open_store("mongodb://h/db", mongo_driver=Settings.from_env().mongo_driver)).close()
    assert chosen == ["pymongo", "motor"]
    with pytest.raises(QuandaError, match="must be pymongo or motor"):
        make_client("mongodb://h/db", "mongoose")


# -- the listing ------------------------------------------------------------------------------------------


class Recording:
    """A collection that records each find's filter and sort."""

    def __init__(self, collection, calls):
        self._collection, self._calls = collection, calls

    def __getattr__(self, name):
        return getattr(self._collection, name)

    def find(self, query, *args, **kwargs):
        call = {"filter": query}
        self._calls.append(call)
        cursor = self._collection.find(query, *args, **kwargs)

        class Sorted:
            def __getattr__(self, name):
                return getattr(cursor, name)

            def sort(self, keys):
                call["sort"] = keys
                return cursor.sort(keys)
        return Sorted()


def serves(index_keys, query, sort):
    """An index serves the query's sort if its prefix is exactly the filtered fields (equalities or $in
    points) and the sort follows them, in order (or all reversed)."""
    prefix, rest = index_keys[:len(query)], index_keys[len(query):]
    return {field for field, _ in prefix} == set(query) and rest in (sort, [(f, -d) for f, d in sort])


async def test_every_listing_is_served_by_an_index_in_sort_order(tmp_path):
    store = await make_store("mongomock", tmp_path)
    try:
        indexes = [info["key"] for info in (await store._messages.index_information()).values()]
        messages = [await QuandaMessage.create(store, role) for role in ("q", "assistant", "q", "assistant")]
        await QuandaWriter(messages[1]).make_immutable()
        for msg in messages:  # one created_at for all: the _id breaks the tie, newest first
            await store._messages.update_one({"_id": mongo.ObjectId(msg.id)}, {"$set": {"created_at": 1.0}})
        calls = []
        store._messages = Recording(store._messages, calls)
        newest_first = [m.id for m in reversed(messages)]
        for role in (None, "assistant"):
            for immutable in (None, False, True):
                found = [r.id for r in await store.select_messages(role=role, immutable=immutable)]
                assert found == [m for m in newest_first
                                 if (role is None or (await store.get_message(m)).role == role)
                                 and (immutable is None or (await store.get_message(m)).immutable == immutable)]
                call = next(c for c in calls if "sort" in c)
                calls.clear()
                assert any(serves(keys, call["filter"], call["sort"]) for keys in indexes), call
    finally:
        await store.close()


# -- projections ------------------------------------------------------------------------------------------


class Mutating:
    """A collection that, like mongomock, changes the projection dicts it is handed (once done with them)."""

    def __init__(self, collection):
        self._collection = collection

    def __getattr__(self, name):
        attr = getattr(self._collection, name)
        if name not in ("find_one", "find_one_and_update"):
            return attr

        async def call(*args, **kwargs):
            result = await attr(*args, **kwargs)
            for projection in [*args[1:2], kwargs.get("projection")]:
                if isinstance(projection, dict):
                    projection["role"] = 0
            return result
        return call


async def test_each_call_gets_a_fresh_projection(tmp_path):
    store = await make_store("mongomock", tmp_path)
    try:
        msg = await QuandaMessage.create(store, role="assistant", content="hi")
        store._messages = Mutating(store._messages)
        for _ in range(3):
            assert (await store.get_message(msg.id)).role == "assistant"
            assert [r.role for r in await store.select_messages()] == ["assistant"]
            await QuandaWriter(msg).chunk("!")
    finally:
        await store.close()


async def test_a_seq_beyond_any_document_reads_nothing(tmp_path):
    store = await make_store("mongomock", tmp_path)
    try:
        msg = await QuandaMessage.create(store, role="assistant", content="hi")
        assert await store.select_tokens(msg.id, gt=(1 << 63) - 1, limit=(1 << 63) - 1) == []
        with pytest.raises(QuandaNotFoundError):
            await store.select_tokens("0" * 24, gt=(1 << 63) - 1)
    finally:
        await store.close()


# -- records ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "mongomock"], indirect=True)
async def test_records_come_back_as_json_would_on_every_backend(store):
    data = {1: "int key", "tuple": (1, 2), "k.with.dots": {"$where": "sleep(1)"}, "nul\x00key": None,
            "huge": 2 ** 70, "text": "é 🙂 \u202e"}
    expected = json.loads(json.dumps(data))
    await store.put_record("todo", "k", data)
    assert await store.insert_record("todo", "k2", data)
    assert await store.commit_records([("put", "todo", "k3", data)])
    assert await store.get_record("todo", "k") == expected
    assert await store.list_records("todo") == [("k", expected), ("k2", expected), ("k3", expected)]


async def test_records_written_as_documents_by_earlier_versions_still_read(tmp_path):
    store = await make_store("mongomock", tmp_path)
    try:
        await store._db["quanda_todo"].insert_one({"_id": "old", "data": {"name": "milk"}, "updated_at": 0.0})
        assert await store.get_record("todo", "old") == {"name": "milk"}
        assert await store.list_records("todo") == [("old", {"name": "milk"})]
    finally:
        await store.close()


# -- units of records in a transaction --------------------------------------------------------------------


class FakeSession:
    """A session whose transactions snapshot the record collections and restore them when the callback
    raises (mongomock has no sessions). One transaction at a time, as serialisable isolation would look."""

    lock = asyncio.Lock()

    def __init__(self, store, refuse=None):
        self.store, self.refuse, self.transactions = store, refuse, 0

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        return None

    async def with_transaction(self, callback):
        if self.refuse:
            raise self.refuse
        async with self.lock:
            self.transactions += 1
            db = self.store._db
            names = [n for n in await db.list_collection_names() if n.startswith("quanda_")]
            before = {n: await db[n].find().to_list(None) for n in names}
            try:
                return await callback(None)  # mongomock takes no session argument other than None
            except BaseException:
                for name in await db.list_collection_names():
                    await db[name].delete_many({})
                    if before.get(name):
                        await db[name].insert_many(before[name])
                raise


@pytest.fixture
async def transactional(tmp_path):
    store = await make_store("mongomock", tmp_path)
    session = FakeSession(store)
    store._transactions = store.atomic_records = True

    async def start_session():
        return session
    store._start_session = start_session
    store.fake_session = session
    yield store
    await store.close()


async def test_a_unit_runs_in_one_transaction_where_the_server_has_them(transactional):
    store = transactional
    await store.put_record("todo", "taken", {"n": 0})
    assert await store.commit_records([("insert", "command", "m:1", {"n": 1}), ("put", "todo", "x", {"n": 1}),
                                       ("insert", "todo", "taken", {"n": 1})]) is False
    assert await store.get_record("command", "m:1") is None  # undone with the rest
    assert await store.get_record("todo", "x") is None
    assert await store.commit_records([("insert", "command", "m:1", {"n": 1}), ("put", "todo", "x", {"n": 1}),
                                       ("delete", "todo", "taken", None)]) is True
    assert await store.list_records("todo") == [("x", {"n": 1})]
    assert store.fake_session.transactions == 2
    assert {"command", "todo"} <= store._known_collections  # created before the transactions


async def test_concurrent_transactional_units_with_one_claim_run_once(transactional):
    store = transactional
    results = await asyncio.gather(*(store.commit_records([("insert", "command", "same", {"by": i}),
                                                          ("put", "effect", f"e{i}", {"by": i})]) for i in range(10)))
    assert results.count(True) == 1
    assert await store.list_records("effect") == [(f"e{results.index(True)}", {"by": results.index(True)})]


async def test_a_server_refusing_transactions_falls_back_to_ordered_ops(transactional):
    store = transactional
    store.fake_session.refuse = OperationFailure(
        "Transaction numbers are only allowed on a replica set member or mongos", code=20)
    assert await store.commit_records([("insert", "command", "c", {}), ("put", "todo", "t", {"n": 1})])
    assert store.atomic_records is False and store._transactions is False
    assert await store.get_record("todo", "t") == {"n": 1}


class Hello:
    """The store's database, answering `hello` as a replica set member or a standalone would."""

    def __init__(self, db, reply):
        self._db, self.reply = db, reply

    def __getattr__(self, name):
        return getattr(self._db, name)

    def __getitem__(self, name):
        return self._db[name]

    async def command(self, name, *args, **kwargs):
        return self.reply if name == "hello" else await self._db.command(name, *args, **kwargs)


@pytest.mark.parametrize("reply, atomic", [
    ({"isWritablePrimary": True, "setName": "rs0", "logicalSessionTimeoutMinutes": 30}, True),
    ({"isWritablePrimary": True, "msg": "isdbgrid", "logicalSessionTimeoutMinutes": 30}, True),
    ({"isWritablePrimary": True, "logicalSessionTimeoutMinutes": 30}, False),  # a standalone
])
async def test_transactions_are_used_where_the_server_has_them(reply, atomic):
    store = mongo.MongoStore(mongomock_client())
    store._db = Hello(store._db, reply)
    await store.open()
    try:
        assert store.atomic_records is atomic
    finally:
        await store.close()


async def test_a_refused_transaction_turns_them_off_for_a_while_not_for_good(transactional, monkeypatch):
    """Issue 21, item 9: one refusal (codes 20/263) turned transactions off for the life of the process, silently
    leaving a replica set on the ordered path."""
    from quanda.core.store import mongo_records
    monkeypatch.setattr(mongo_records, "TRANSACTIONS_RECHECK_S", 0.0)
    store = transactional
    store.fake_session.refuse = OperationFailure("Transaction numbers are only allowed on a replica set member", code=20)
    assert await store.commit_records([("put", "todo", "a", {"n": 1})])
    assert store.atomic_records is False  # this unit ran in order
    store.fake_session.refuse = None
    assert await store.commit_records([("put", "todo", "b", {"n": 2})])
    assert store.atomic_records is True and store.fake_session.transactions == 1  # and back to transactions


async def test_an_append_refused_under_replication_lag_says_why(tmp_path):
    """Issue 21, item 9: the state read after a refused append came from a majority snapshot lagging behind the
    primary (still mutable there), so five immediate retries ended in 'kept conflicting' (a 503) instead of
    the immutable message (409) it was."""
    store = await make_store("mongomock", tmp_path)
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        await QuandaWriter(msg).chunk("a")
        messages = store._messages
        stale = await messages.find_one({"_id": ObjectId(msg.id)}, {"tokens": 0})
        await QuandaWriter(msg).make_immutable()

        class Majority:  # the majority snapshot has not caught up with the seal yet
            async def find_one(self, query, projection=None):
                return dict(stale)

            def __getattr__(self, name):
                return getattr(messages, name)
        store._messages = Majority()
        store._latest = messages  # the primary's latest (readConcern local)
        with pytest.raises(QuandaImmutableError):
            await asyncio.wait_for(QuandaWriter(msg).chunk("late"), 5)
    finally:
        store._messages = messages
        await store.close()
