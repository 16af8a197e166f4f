"""Subscription: how a reader learns of new tokens without sleeping on the hot path.

Writers in the same process push committed tokens straight into every subscription of the message (the
reader then yields them without a database round trip). Commits from other processes only mark the
subscription stale (the store's watcher noticed a change), and the reader fetches from the store.
A subscription holds O(1) state: at most `MAX_PENDING` tokens; past that it drops them and turns stale.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable

from ..token import QuandaToken

MAX_PENDING = 256


class Subscription:
    __slots__ = ("message_id", "cursor", "stale", "_pending", "_waiter", "_loop", "_on_close", "_deadline", "_timer")

    def __init__(self, message_id: str, on_close: Callable[["Subscription"], None]):
        self.message_id = message_id
        self.cursor = 0  # the last seq the reader has yielded
        self.stale = True  # the store may hold tokens we have not seen
        self._pending: deque[QuandaToken] = deque()
        self._waiter: asyncio.Future | None = None
        self._loop = asyncio.get_running_loop()
        self._on_close = on_close
        self._deadline = 0.0  # when the wait in progress turns stale
        self._timer: asyncio.TimerHandle | None = None  # one timer, moved along lazily, not one per wait

    @property
    def known_seq(self) -> int:
        return self._pending[-1].seq if self._pending else self.cursor

    def push(self, tokens: list[QuandaToken]) -> None:
        """Tokens committed by this process, in seq order (called on the event loop)."""
        if len(self._pending) + len(tokens) > MAX_PENDING:
            self._pending.clear()
            self.stale = True
        else:
            self._pending.extend(tokens)
        self._wake()

    def mark_stale(self) -> None:
        """Another process committed tokens of this message."""
        self.stale = True
        self._wake()

    def take(self) -> list[QuandaToken] | None:
        """Pending tokens that follow the cursor without a gap; None when the store must be asked."""
        pending = self._pending
        while pending and pending[0].seq <= self.cursor:
            pending.popleft()
        if not pending:
            return None if self.stale else []
        if pending[0].seq != self.cursor + 1:
            return None
        batch = []
        expected = self.cursor + 1
        while pending and pending[0].seq == expected:
            batch.append(pending.popleft())
            expected += 1
        return batch

    async def wait(self, timeout: float) -> None:
        """Until something is pushed or marked stale; after `timeout` turn stale (a safety net, not a poll).

        A reader at thousands of tokens a second waits thousands of times a second: the timer is not made
        and cancelled for each wait; one timer runs, and when it fires early (the wait in progress began
        later) it is set again for that wait's deadline."""
        if self._pending or self.stale:
            return
        loop = self._loop
        waiter = loop.create_future()
        self._waiter = waiter
        self._deadline = loop.time() + timeout
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._expire)
        try:
            await waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self._pending.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._on_close(self)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _expire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nobody waits: the next wait sets a timer of its own
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._expire)
            return
        self.stale = True
        waiter.set_result(None)
