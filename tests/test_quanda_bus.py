"""The fact bus through the store: what one process publishes, every process listening on the database hears."""

import asyncio
import json
import sys

import pytest

from quanda.core import QuandaError, QuandaLimitError
from tests.backends import make_store, store_target, store_url

TIMEOUT_S = 10


class Inbox:
    def __init__(self):
        self.facts: list[tuple[str, dict]] = []
        self.changed = asyncio.Event()

    def __call__(self, topic, fact):
        self.facts.append((topic, fact))
        self.changed.set()

    async def wait_for(self, count, what="facts"):
        async def until():
            while len(self.facts) < count:
                self.changed.clear()
                await self.changed.wait()
        try:
            await asyncio.wait_for(until(), TIMEOUT_S)
        except asyncio.TimeoutError:
            raise AssertionError(f"expected {count} {what}, got {len(self.facts)}: {self.facts[-3:]}") from None


async def test_this_process_hears_its_own_facts_at_once(store):
    inbox = Inbox()
    stop = await store.listen(inbox)
    await store.publish("todo.changed", {"workspace": "w", "id": 3})
    assert inbox.facts == [("todo.changed", {"workspace": "w", "id": 3})]  # delivered before publish returns
    stop()
    await store.publish("todo.changed", {"workspace": "w", "id": 4})
    assert len(inbox.facts) == 1


async def test_another_store_on_the_same_database_hears_every_fact_once_in_order(backend, store, tmp_path):
    other = await make_store(backend, tmp_path, shared=store_target(backend, store))
    try:
        inbox, mine = Inbox(), Inbox()
        await other.listen(inbox)
        await store.listen(mine)
        for i in range(50):
            await store.publish("event.posted", {"i": i, "text": "é \u202e $x"})
        await store.publish("marker", {"from": "store"})
        await other.publish("marker", {"from": "other"})
        # a fact from one publisher never overtakes an earlier one: once the markers arrive, so has all else
        await inbox.wait_for(52)
        await mine.wait_for(52)
        sent = [("event.posted", {"i": i, "text": "é \u202e $x"}) for i in range(50)]
        assert [f for f in inbox.facts if f != ("marker", {"from": "other"})] == sent + [("marker", {"from": "store"})]
        # the publisher heard its own facts once, at once, never again through the database
        assert mine.facts == sent + [("marker", {"from": "store"}), ("marker", {"from": "other"})]
    finally:
        await other.close()


async def test_a_listener_does_not_get_facts_from_before_it_listened(backend, store, tmp_path):
    await store.publish("old", {"n": 1})
    other = await make_store(backend, tmp_path, shared=store_target(backend, store))
    try:
        inbox = Inbox()
        await other.listen(inbox)
        await store.publish("new", {"n": 2})
        await inbox.wait_for(1)
        assert inbox.facts == [("new", {"n": 2})]
    finally:
        await other.close()


async def test_bad_facts_are_refused(store):
    with pytest.raises(QuandaLimitError):
        await store.publish("big", {"text": "x" * 8000})
    with pytest.raises(QuandaError):
        await store.publish("", {})
    with pytest.raises(QuandaError):
        await store.publish("t", {"text": "\udc80"})


async def test_one_failing_listener_does_not_stop_the_others(store):
    def broken(topic, fact):
        raise RuntimeError("listener bug")
    inbox = Inbox()
    await store.listen(broken)
    await store.listen(inbox)
    await store.publish("t", {"n": 1})
    assert inbox.facts == [("t", {"n": 1})]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
async def test_a_fact_published_by_another_process_arrives(backend, store):
    inbox = Inbox()
    await store.listen(inbox)
    code = ("import asyncio, sys\nfrom quanda.core import open_store\n"
            "async def main():\n    async with await open_store(sys.argv[1]) as s:\n"
            "        for i in range(5):\n            await s.publish('from.child', {'i': i})\n"
            "asyncio.run(main())\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, store_url(backend, store))
    assert await asyncio.wait_for(proc.wait(), TIMEOUT_S) == 0
    await inbox.wait_for(5)
    assert [json.dumps(f) for _t, f in inbox.facts] == [json.dumps({"i": i}) for i in range(5)]
