"""Deadlines of store calls: every call that waits on the database fails within the store's `timeout_s`.

A backend whose calls are carried out elsewhere (SQLite's threads, PostgreSQL's writer task) hands each call's
future to a `Deadlines` watch; once the deadline passes, the future gets the exception its `expire` makes
(`QuandaTimeoutError`, saying whether the write may still be applied). One timer per store, not one per
call: the calls are watched in the order they were made, and with one timeout the deadlines come in that
order too, so the timer only ever looks at the oldest call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable

from ..errors import QuandaStoreError, QuandaTimeoutError

DEFAULT_TIMEOUT_S = 5.0


def timed_out(what: str, timeout_s: float, maybe_written: bool) -> QuandaTimeoutError:
    """The error of a call that missed its deadline; `maybe_written`: it had reached the database."""
    tail = ("; it may still be applied" if maybe_written else "; nothing was written")
    return QuandaTimeoutError(f"the database did not complete {what} within {timeout_s:g} s{tail}")


class Deadlines:
    """Fails the watched futures still pending at their deadline (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float):
        self._loop, self.timeout_s = loop, timeout_s
        self._pending: deque[tuple[float, asyncio.Future, Callable[[], BaseException]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, future: asyncio.Future, expire: Callable[[], BaseException]) -> None:
        """Give `future` the exception `expire()` returns unless it is done `timeout_s` from now."""
        pending = self._pending
        while pending and pending[0][1].done():  # calls end about in order: the finished ones go at once,
            pending.popleft()                    # keeping nothing alive (the garbage collector would pay)
        deadline = self._loop.time() + self.timeout_s
        pending.append((deadline, future, expire))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check)

    def _check(self) -> None:
        self._timer = None
        now, pending = self._loop.time(), self._pending
        while pending and (pending[0][1].done() or pending[0][0] <= now):
            _deadline, future, expire = pending.popleft()
            if not future.done():
                future.set_exception(expire())
        if pending:
            self._timer = self._loop.call_at(pending[0][0], self._check)

    def close(self) -> None:
        """The store is closing: calls still pending (a thread stuck on a frozen disk) fail now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            _deadline, future, _expire = self._pending.popleft()
            if not future.done():
                future.set_exception(QuandaStoreError("the store was closed before the database answered"))
