"""Subscription: a wait ends when tokens are pushed, when the store marks it stale, or after its safety timeout
(then it is stale); one timer serves every wait, moved along lazily."""

from __future__ import annotations

import asyncio

from quanda.core import QuandaToken
from quanda.core.store.subscription import Subscription


async def started(sub: Subscription, timeout: float) -> asyncio.Task:
    task = asyncio.create_task(sub.wait(timeout))
    await asyncio.sleep(0)  # the wait begins
    assert sub._waiter is not None and not task.done()
    return task


async def test_a_push_or_a_stale_mark_ends_the_wait_and_the_timer_outlives_it():
    closed = []
    sub = Subscription("0123456789abcdef01234567", closed.append)
    sub.stale = False
    task = await started(sub, 1000)
    timer = sub._timer
    sub.push([QuandaToken("chunk", "a", None, 1)])
    await task
    assert sub.take() == [QuandaToken("chunk", "a", None, 1)] and not sub.stale
    task = await started(sub, 1000)
    assert sub._timer is timer  # the same timer, not one per wait
    sub.mark_stale()
    await task
    assert sub.stale
    sub.close()
    assert timer.cancelled() and sub._timer is None and closed == [sub]


async def test_the_timer_firing_before_the_current_wait_is_due_moves_along():
    loop = asyncio.get_running_loop()
    sub = Subscription("0123456789abcdef01234567", lambda _s: None)
    sub.stale = False
    task = await started(sub, 1000)
    sub._timer.cancel()
    sub._expire()  # as if a timer set by an earlier wait fired now
    assert not task.done() and sub._timer is not None and sub._timer.when() >= loop.time() + 999
    sub._deadline = loop.time() - 1  # the current wait is due
    sub._timer.cancel()
    sub._expire()
    await task
    assert sub.stale and sub._timer is None
    sub.close()


async def test_the_timer_firing_between_waits_leaves_the_next_wait_its_own():
    sub = Subscription("0123456789abcdef01234567", lambda _s: None)
    sub.stale = False
    task = await started(sub, 1000)
    sub.push([QuandaToken("chunk", "a", None, 1)])
    await task
    sub._timer.cancel()
    sub._expire()  # nobody waits
    assert sub._timer is None and not sub.stale
    sub.take()
    task = await started(sub, 1000)
    assert sub._timer is not None
    sub.mark_stale()
    await task
    sub.close()
