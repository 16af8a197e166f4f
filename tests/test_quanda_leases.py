"""Leases and fencing, on every backend (issue 21, item 8): a lease's expiry is decided by the database's
clock; of several takers of an expired lease one wins, with a fence higher than any before; a job's writes
(`fencing.fenced`) are refused by the store once its lease is someone else's — its tokens and its records."""

from __future__ import annotations

import asyncio

import pytest

from quanda.core import QuandaError, QuandaFencedError, QuandaMessage, QuandaWriter, replay
from quanda.core.store.fencing import fenced
from tests.reliability.harness import eventually

KEY = "6b16fa1fc2cac6485bc0bb7e"


async def expired(store, key: str = KEY) -> None:
    async def gone():
        return any(lease.key == key for lease in await store.expired_leases())
    await eventually(gone, 5, f"lease {key} expired")


async def test_a_lease_is_taken_by_one_held_until_it_expires_then_by_the_next_with_a_higher_fence(store):
    first = await store.acquire_lease(KEY, "server-a", 30, {"kind": "assistant"})
    assert first is not None and first.holder == "server-a" and first.data == {"kind": "assistant"}
    assert await store.acquire_lease(KEY, "server-b", 30, {}) is None  # held, not expired
    held = await store.get_lease(KEY)
    assert (held.fence, held.holder) == (first.fence, "server-a") and 25 < held.expires_in <= 30
    assert await store.expired_leases() == []
    assert await store.renew_lease(KEY, first.fence, 0.05)
    await expired(store)
    takers = await asyncio.gather(*(store.acquire_lease(KEY, f"server-{i}", 30, {}) for i in range(5)))
    won = [lease for lease in takers if lease is not None]
    assert len(won) == 1 and won[0].fence > first.fence  # one taker; a fence no earlier lease had
    assert not await store.renew_lease(KEY, first.fence, 30)  # the first holder lost it
    assert not await store.release_lease(KEY, first.fence)
    assert await store.release_lease(KEY, won[0].fence)
    again = await store.acquire_lease(KEY, "server-a", 30, {})
    assert again.fence > won[0].fence  # fences never go back, even after a release


async def test_a_job_that_lost_its_lease_can_write_nothing(store):
    msg = await QuandaMessage.create(store, role="assistant")
    old = await store.acquire_lease(msg.id, "server-a", 0.05, {})
    with fenced(msg.id, old.fence):
        await QuandaWriter(msg).chunk("mine ")
        await store.put_record("todo", "t:1", {"by": "a"})
    await expired(store, msg.id)
    with fenced(msg.id, old.fence):  # expired, but nobody took it: the holder may still write
        await QuandaWriter(msg).chunk("still mine ")
    new = await store.acquire_lease(msg.id, "server-b", 30, {})
    with fenced(msg.id, new.fence):
        await QuandaWriter(msg).warning("interrupted")
    with fenced(msg.id, old.fence):
        for write in (QuandaWriter(msg).chunk("late "), QuandaWriter(msg).make_immutable(),
                      store.put_record("todo", "t:1", {"by": "a, late"}), store.insert_record("todo", "t:2", {}),
                      store.delete_record("todo", "t:1"),
                      store.commit_records([("put", "todo", "t:3", {}), ("delete", "todo", "t:1", None)])):
            with pytest.raises(QuandaFencedError):
                await write
    record = await store.get_message(msg.id)
    assert (record.content, record.warning, record.immutable) == ("mine still mine ", "interrupted", False)
    assert replay(await store.select_tokens(msg.id)).content == record.content
    assert await store.list_records("todo") == [("t:1", {"by": "a"})]
    with fenced(msg.id, new.fence):  # the new holder writes on
        await QuandaWriter(msg).chunk("retried")
        await store.put_record("todo", "t:1", {"by": "b"})
    assert (await store.get_message(msg.id)).content.endswith("retried")
    await QuandaWriter(msg).chunk(" (by hand)")  # writes outside any job are not fenced


async def test_a_message_refuses_a_fence_lower_than_one_that_wrote_it(store):
    """What refuses an old job on MongoDB, where an append cannot look at the lease: the message's fence."""
    msg = await QuandaMessage.create(store, role="assistant")
    old = await store.acquire_lease(msg.id, "a", 0.05, {})
    await expired(store, msg.id)
    new = await store.acquire_lease(msg.id, "b", 30, {})
    with fenced(msg.id, new.fence):
        await QuandaWriter(msg).override("by the new job")
    await store.release_lease(msg.id, new.fence)
    with fenced(msg.id, old.fence):
        with pytest.raises(QuandaFencedError):
            await QuandaWriter(msg).chunk("old")
    assert (await store.get_message(msg.id)).content == "by the new job"


async def test_bad_lease_arguments_are_refused_before_the_database(store):
    for args in ((KEY, "", 10, {}), (KEY, "h", 0, {}), (KEY, "h", float("inf"), {}), (KEY, "h", True, {}),
                 ("", "h", 10, {})):
        with pytest.raises(QuandaError):
            await store.acquire_lease(*args)
    with pytest.raises(TypeError):
        await store.acquire_lease(KEY, "h", 10, ["not", "a", "dict"])
    with pytest.raises(QuandaError):
        await store.renew_lease(KEY, -1, 10)
