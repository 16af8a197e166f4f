"""PostgreSQL behind a network that fails: every store call ends within the store's deadline (a silent
network included, where asyncpg alone would wait for TCP to give up, ~15 min), the errors say what
happened, and once the network heals the same store goes on by itself. Through `FaultProxy`."""

from __future__ import annotations

import asyncio
import time

import pytest

from quanda.core import QuandaMessage, QuandaStoreError, QuandaTimeoutError, QuandaWriter, open_store, replay
from tests.backends import postgres_test_url
from tests.faults.proxy import FaultProxy
from tests.reliability.harness import eventually

pytestmark = pytest.mark.faults
TIMEOUT_S = 1.0
SLACK_S = 1.0  # a loaded machine's scheduling, on top of the deadline


@pytest.fixture
async def proxied(postgres):
    url = postgres_test_url()
    host_port = url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    with FaultProxy(host, int(port)) as proxy:
        store = await asyncio.wait_for(open_store(proxy.url_for(url), timeout_s=TIMEOUT_S), 10)
        try:
            yield proxy, store
        finally:
            proxy.heal()
            await asyncio.wait_for(store.close(), 10)


async def bounded(call, what: str):
    """The call's outcome (or its exception) and how long it took; fails if it outlives every deadline."""
    start = time.monotonic()
    try:
        result = await asyncio.wait_for(call, 10 * TIMEOUT_S)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what} still pending after {10 * TIMEOUT_S:g} s: no deadline") from None
    except Exception as exc:  # noqa: BLE001 - the caller asserts on it
        result = exc
    return result, time.monotonic() - start


async def writes_resume(store, writer, what: str) -> None:
    async def one_write():
        try:
            return await writer.chunk("after ")
        except QuandaStoreError:
            return None
    await eventually(one_write, 15, what, every=0.2)


async def test_a_silent_network_fails_every_call_within_the_deadline_and_writes_resume_on_healing(proxied):
    proxy, store = proxied
    msg = await QuandaMessage.create(store, role="assistant")
    writer = QuandaWriter(msg)
    await writer.chunk("before ")
    await store.put_record("note", "k", {"v": 1})
    proxy.blackhole()
    for call, what in ((writer.chunk("lost? "), "an append"), (store.get_message(msg.id), "a pooled read"),
                       (store.put_record("note", "k", {"v": 2}), "a record write"),
                       (store.list_records("note"), "a listing")):
        outcome, took = await bounded(call, what)
        assert isinstance(outcome, QuandaTimeoutError), f"{what}: {outcome!r}"
        assert took <= TIMEOUT_S + SLACK_S, f"{what} took {took:.2f} s, over its {TIMEOUT_S} s deadline"
        assert f"within {TIMEOUT_S:g} s" in str(outcome)
    proxy.heal()
    await writes_resume(store, writer, "writes resume by themselves once the network heals")
    record = await store.get_message(msg.id)
    tokens = await store.select_tokens(msg.id, limit=100)
    assert replay(tokens).content == record.content and record.content.startswith("before ")
    assert record.content.endswith("after ")
    assert (await store.get_record("note", "k"))["v"] in (1, 2)  # the timed-out write may have landed


async def test_reset_connections_fail_at_once_and_the_store_reconnects(proxied):
    proxy, store = proxied
    msg = await QuandaMessage.create(store, role="assistant")
    writer = QuandaWriter(msg)
    await writer.chunk("a")
    proxy.reset()
    outcome, took = await bounded(writer.chunk("b"), "an append on a reset connection")
    assert isinstance(outcome, QuandaStoreError), outcome
    assert took <= TIMEOUT_S + SLACK_S
    proxy.heal()
    await writes_resume(store, writer, "writes resume after the connections were reset")


async def test_a_slow_network_is_slow_but_works(proxied):
    proxy, store = proxied
    msg = await QuandaMessage.create(store, role="assistant")
    await QuandaWriter(msg).chunk("fast ")
    proxy.delay(0.05)
    outcome, took = await bounded(QuandaWriter(msg).chunk("slow"), "an append over a slow link")
    assert outcome.seq == 2 and took >= 0.1  # there and back
    assert (await store.get_message(msg.id)).content == "fast slow"
