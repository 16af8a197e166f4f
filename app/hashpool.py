"""Password checks beside the event loop: a few worker threads and a bounded queue of checks waiting for them.

scrypt takes ~60 ms of CPU per check and releases the GIL while it runs, so a thread does it without stalling
the event loop (run on the loop, 100 wrong logins at once held every tab's round trip up for 5.6 s), at a lower
CPU priority than the loop's thread (WORKER_NICE). At most
`workers` checks run at once; at most `queue` wait, ordered by a priority the caller gives (the login route
gives its address's failure count, so a sign-in from an address with a clean record goes before an attacker's
hundredth guess). A check that finds the queue full either takes the place of the waiting check with the
worst priority (which is refused) or is refused itself: `PoolBusy`, answered 429 at once.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable


WORKER_NICE = 10  # the workers' niceness (Linux: per thread): the event loop's thread goes first for the CPU


def lower_priority() -> None:
    """Run in each worker as it starts: on a busy machine, a password check waits for the CPU rather than the
    event loop (a sign-in takes longer; nobody's page stalls)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: the workers keep the process's priority
        pass


class PoolBusy(Exception):
    """Too many checks are waiting: try again in a moment."""


def default_workers() -> int:
    """One fewer than the CPUs (the event loop keeps one), at least 1 and at most 4."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class HashPool:
    def __init__(self, workers: int = 0, queue: int = 100):
        self.workers = workers if workers > 0 else default_workers()
        self.queue = max(0, queue)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="quanda-hash",
                                            initializer=lower_priority)
        self._running = 0
        self._waiting: list[tuple[float, int, asyncio.Future]] = []  # a heap: best priority (lowest) first
        self._order = itertools.count()
        self.refused = 0  # checks answered PoolBusy (for operators: logged by the caller)

    @property
    def pending(self) -> int:
        return self._running + len(self._waiting)

    async def run(self, fn: Callable[..., Any], *args: Any, priority: float = 0.0) -> Any:
        """`fn(*args)` in a worker thread once one is free; PoolBusy when the queue is full of better checks."""
        if self._running < self.workers:
            self._running += 1
        else:
            await self._wait_turn(priority)  # the worker is counted ours when the turn comes
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self._running -= 1
            self._next()

    async def _wait_turn(self, priority: float) -> None:
        if len(self._waiting) >= self.queue:
            worst = max(self._waiting, default=None)
            if worst is None or worst[0] <= priority:
                self.refused += 1
                raise PoolBusy()
            self._waiting.remove(worst)
            heapq.heapify(self._waiting)
            self.refused += 1
            worst[2].set_exception(PoolBusy())
        turn = asyncio.get_running_loop().create_future()
        entry = (priority, next(self._order), turn)
        heapq.heappush(self._waiting, entry)
        try:
            await turn
        except asyncio.CancelledError:  # the client went away: its place goes to the next
            if entry in self._waiting:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            elif turn.done() and not turn.cancelled() and turn.exception() is None:
                self._running -= 1  # it had been given a worker: hand that on
                self._next()
            raise

    def _next(self) -> None:
        """A worker is free: give it to the best waiting check."""
        while self._waiting and self._running < self.workers:
            _priority, _n, turn = heapq.heappop(self._waiting)
            if not turn.done():
                self._running += 1
                turn.set_result(None)
                return

    def close(self) -> None:
        for _p, _n, turn in self._waiting:
            if not turn.done():
                turn.set_exception(PoolBusy())
        self._waiting.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
