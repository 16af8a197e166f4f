"""Invariants 4, 5 and 6: snapshot-then-live readers, resuming readers, live delivery without sleeping."""

import asyncio

import pytest

from quanda.core import QuandaMessage, QuandaReader, QuandaToken, QuandaWriter, replay
from quanda.core.store.base import QuandaStore
from quanda.core.store.subscription import MAX_PENDING, Subscription
from tests.backends import make_store, store_target


async def collect(reader, until_seq=None):
    tokens = []
    async for token in reader:
        tokens.append(token)
    return tokens


async def test_late_reader_gets_one_snapshot_then_warning_then_every_later_token(store):
    msg = await QuandaMessage.create(store, role="assistant")
    w = QuandaWriter(msg)
    await w.chunk("Hello", estimate="(1/3)")
    await w.warning("generating")
    reader = asyncio.create_task(collect(QuandaReader(msg)))
    await w.chunk(", world", estimate="(2/3)")
    await w.chunk("!")
    await w.make_immutable()
    tokens = await reader
    # the reader may have started before or after the writes above: its snapshot says which
    snapshot, rest = tokens[0], tokens[1:]
    assert snapshot.kind == "override"
    if rest and rest[0].kind == "warning" and rest[0].seq == snapshot.seq:
        rest = rest[1:]
    assert [t.seq for t in rest] == list(range(snapshot.seq + 1, 6))
    assert tokens[-1].kind == "immutable"
    await msg.refresh()
    assert replay(tokens) == msg.state


async def test_snapshot_carries_content_estimate_warning_and_last_seq(store):
    msg = await QuandaMessage.create(store, role="assistant")
    w = QuandaWriter(msg)
    await w.chunk("Hello", estimate="(1/3)")
    await w.warning("generating")
    reader = QuandaReader(msg).__aiter__()
    assert await reader.__anext__() == QuandaToken("override", "Hello", "(1/3)", 2)
    assert await reader.__anext__() == QuandaToken("warning", "generating", None, 2)
    await w.chunk(" you", estimate="(2/3)")
    assert await reader.__anext__() == QuandaToken("chunk", " you", "(2/3)", 3)
    await w.make_immutable()
    assert await reader.__anext__() == QuandaToken("immutable", "", None, 4)
    with pytest.raises(StopAsyncIteration):
        await reader.__anext__()


async def test_reader_of_an_immutable_message_yields_snapshot_and_ends(store):
    msg = await QuandaMessage.create(store, role="assistant")
    w = QuandaWriter(msg)
    await w.chunk("done")
    await w.make_immutable()
    assert await collect(QuandaReader(msg)) == [QuandaToken("override", "done", None, 2),
                                                QuandaToken("immutable", "", None, 2)]


@pytest.mark.parametrize("k", [0, 1, 3, 5])
async def test_resuming_reader_yields_exactly_the_tokens_after_k_then_live_ones(store, k):
    msg = await QuandaMessage.create(store, role="assistant")
    w = QuandaWriter(msg)
    written = [await w.chunk(f"t{i}", estimate=f"({i})") for i in range(1, 6)]
    reader = QuandaReader(msg, after_seq=k).__aiter__()
    for expected in written[k:]:
        assert await reader.__anext__() == expected
    live = asyncio.ensure_future(reader.__anext__())
    await asyncio.sleep(0)
    assert not live.done()  # nothing more to read yet: it waits
    token = await w.chunk("live")
    assert await live == token == QuandaToken("chunk", "live", None, 6)
    await w.make_immutable()
    assert (await reader.__anext__()).kind == "immutable"
    with pytest.raises(StopAsyncIteration):
        await reader.__anext__()


async def test_in_process_readers_are_woken_by_the_writer_without_querying(store, monkeypatch):
    msg = await QuandaMessage.create(store, role="assistant")
    w = QuandaWriter(msg)
    readers = [QuandaReader(msg).__aiter__() for _ in range(10)]
    for reader in readers:
        assert (await reader.__anext__()).kind == "override"
    queries = []
    original = type(store)._select_tokens

    async def counting(self, *args):
        queries.append(args)
        return await original(self, *args)

    monkeypatch.setattr(type(store), "_select_tokens", counting)
    pending = [asyncio.ensure_future(r.__anext__()) for r in readers]
    await asyncio.sleep(0)
    token = await w.chunk("pushed")
    assert [await p for p in pending] == [token] * 10
    assert queries == []  # delivered by the writer's own push, not by polling the store


async def test_a_reader_in_another_process_sees_commits_through_the_watcher(backend, store, tmp_path):
    """A second store on the same database stands in for another process (no shared wake-ups)."""
    other = await make_store(backend, tmp_path, shared=store_target(backend, store))
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        remote = await QuandaMessage.from_id(other, msg.id)
        reader = asyncio.create_task(collect(QuandaReader(remote)))
        w = QuandaWriter(msg)
        written = [await w.chunk(f"{i} ") for i in range(50)]
        written.append(await w.make_immutable())
        tokens = await asyncio.wait_for(reader, timeout=10)
        seen = [t for t in tokens if t.seq > tokens[0].seq]
        assert seen == written[tokens[0].seq:]
        await msg.refresh()
        assert replay(tokens) == msg.state
    finally:
        await other.close()


async def test_slow_reader_overflowing_its_buffer_still_sees_every_token_once(store):
    msg = await QuandaMessage.create(store, role="assistant")
    w = QuandaWriter(msg)
    reader = QuandaReader(msg).__aiter__()
    assert (await reader.__anext__()).kind == "override"
    written = [await w.chunk(str(i)) for i in range(MAX_PENDING * 3)]
    written.append(await w.make_immutable())
    assert [t async for t in reader] == written


def test_subscription_never_yields_past_a_gap():
    async def scenario():
        sub = Subscription("0" * 24, on_close=lambda s: None)
        sub.stale = False
        sub.cursor = 4
        sub.push([QuandaToken("chunk", "b", None, 6)])  # seq 5 committed elsewhere, not yet seen
        assert sub.take() is None  # the reader must ask the store
        sub.push([QuandaToken("chunk", "a", None, 5)])
        sub.cursor = 4
        assert sub.take() is None  # still out of order at the head: ask the store, which has 5 then 6
        sub._pending.clear()
        sub.push([QuandaToken("chunk", "a", None, 5), QuandaToken("chunk", "b", None, 6)])
        assert [t.seq for t in sub.take()] == [5, 6]
        assert sub.take() == []
    asyncio.run(scenario())


def test_watcher_backs_off_when_idle_and_tightens_on_change():
    assert QuandaStore.next_poll_delay(QuandaStore.poll_min, woke=False) == QuandaStore.poll_min * 2
    delay = QuandaStore.poll_min
    for _ in range(20):
        delay = QuandaStore.next_poll_delay(delay, woke=False)
    assert delay == QuandaStore.poll_max
    assert QuandaStore.next_poll_delay(delay, woke=True) == QuandaStore.poll_min
