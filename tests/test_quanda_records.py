"""Records beyond one key at a time: a unit of ops (the exactly-once claim with its effect) and counters."""

import asyncio

import pytest

from quanda.core import QuandaError


async def test_a_unit_writes_all_its_ops(store):
    await store.put_record("todo", "w:1", {"name": "old"})
    await store.put_record("todo", "w:2", {"name": "gone"})
    assert await store.commit_records([
        ("insert", "command", "m:0", {"state": "done"}),
        ("put", "todo", "w:1", {"name": "new"}),
        ("put", "todo", "w:3", {"name": "added"}),
        ("delete", "todo", "w:2", None),
    ]) is True
    assert await store.get_record("command", "m:0") == {"state": "done"}
    assert await store.list_records("todo", prefix="w:") == [("w:1", {"name": "new"}), ("w:3", {"name": "added"})]


async def test_a_claim_taken_before_rejects_the_unit(store):
    assert await store.commit_records([("insert", "command", "m:0", {"n": 1}), ("put", "todo", "a", {"n": 1})])
    assert await store.commit_records([("insert", "command", "m:0", {"n": 2}), ("put", "todo", "a", {"n": 2})]) \
        is False
    assert await store.get_record("command", "m:0") == {"n": 1}
    assert await store.get_record("todo", "a") == {"n": 1}  # the claim is first: nothing after it ran


async def test_on_a_transactional_backend_a_rejected_insert_undoes_the_whole_unit(store):
    if not store.atomic_records:
        pytest.skip("MongoDB applies a unit's ops in order (documented); the claim goes first")
    await store.put_record("todo", "taken", {"n": 0})
    ok = await store.commit_records([("insert", "command", "m:1", {"n": 1}), ("put", "todo", "x", {"n": 1}),
                                     ("insert", "todo", "taken", {"n": 1})])
    assert ok is False
    assert await store.get_record("command", "m:1") is None
    assert await store.get_record("todo", "x") is None
    assert await store.get_record("todo", "taken") == {"n": 0}


async def test_concurrent_units_with_one_claim_run_once(store):
    async def attempt(i):
        return await store.commit_records([("insert", "command", "same", {"by": i}),
                                           ("put", "effect", f"e{i}", {"by": i})])
    results = await asyncio.gather(*(attempt(i) for i in range(20)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert await store.list_records("effect") == [(f"e{winner}", {"by": winner})]


async def test_bad_ops_are_refused_before_anything_is_written(store):
    for bad in [("upsert", "todo", "k", {}), ("put", "Bad Kind", "k", {}), ("put", "todo", "", {}),
                ("put", "todo", "k", {"x": "\ud800"}), ("put", "todo", "k", {"x": float("nan")}), "put"]:
        with pytest.raises((QuandaError, TypeError)):
            await store.commit_records([("put", "todo", "first", {"n": 1}), bad])
    assert await store.get_record("todo", "first") is None
    assert await store.commit_records([]) is True


async def test_counters_count_once_each_under_concurrency(store):
    values = await asyncio.gather(*(store.bump_counter("todo:w") for _ in range(50)))
    assert sorted(values) == list(range(1, 51))
    assert await store.bump_counter("todo:other") == 1


async def test_the_last_records_of_a_prefix_in_key_order(store):
    for n in range(12):
        await store.put_record("chat", f"c1:{n:05d}", {"n": n})
    await store.put_record("chat", "c2:00001", {"n": 99})
    assert await store.list_last_records("chat", "c1:", 3) == [(f"c1:{n:05d}", {"n": n}) for n in (9, 10, 11)]
    assert len(await store.list_last_records("chat", "c1:", 50)) == 12
    assert await store.list_last_records("chat", "c3:", 5) == []


async def test_messages_are_deleted_with_their_tokens(store):
    from quanda.core import QuandaMessage, QuandaNotFoundError, QuandaWriter
    kept, gone = await QuandaMessage.create(store, role="q"), await QuandaMessage.create(store, role="assistant")
    for msg in (kept, gone):
        writer = QuandaWriter(msg)
        await writer.chunk("some text")
        await writer.make_immutable()
    assert await store.delete_messages([gone.id, "0" * 24]) == 1
    with pytest.raises(QuandaNotFoundError):
        await store.get_message(gone.id)
    try:
        assert await store.select_tokens(gone.id) == []  # (SQLite, PostgreSQL: tokens live apart)
    except QuandaNotFoundError:  # (MongoDB: the tokens were in the message's document)
        pass
    assert (await store.get_message(kept.id)).content == "some text"
    assert await store.delete_messages([]) == 0
