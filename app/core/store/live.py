"""What every backend shares for live delivery: readers woken by the writer's process directly and by the
watcher for other processes' commits, the fact bus between the processes sharing a database, and the news of
trouble the store's own background work runs into. Mixed into `QuandaStore` (`base.py`)."""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from typing import Any, Callable

from ..errors import QuandaError, QuandaLimitError
from ..token import QuandaToken
from ..validation import check_id, check_text, encode_record
from .subscription import Subscription

log = logging.getLogger("quanda.store")

MAX_FACT_BYTES = 7000  # under PostgreSQL's NOTIFY payload limit (8,000 bytes)
FactListener = Callable[[str, dict[str, Any]], None]


class LiveStore(ABC):
    """Subscriptions, the watcher, the fact bus and trouble news (see the module docstring)."""

    #: cross-process watcher: poll interval bounds (seconds), tightened on change, doubled when idle
    poll_min = 0.001
    poll_max = 0.025

    def __init__(self) -> None:
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._watcher: asyncio.Task | None = None
        self._watcher_exiting = False
        self._fact_listeners: list[FactListener] = []
        self._trouble_listeners: list[Callable[[str], None]] = []
        self._closed = False

    # -- facts: a bus between the processes sharing this database ------------------------------------------

    async def publish(self, topic: str, fact: dict[str, Any]) -> None:
        """Tell every listener of every process on this database (this one first, at once) that `fact`
        happened. Delivery to other processes is at least once, in publishing order per process, within
        the watcher's latency; a process that starts listening later does not see older facts."""
        self._check_open()
        check_text(topic, "topic")
        if not topic or len(topic) > 64:
            raise QuandaError("a fact topic is 1 to 64 characters")
        blob = encode_record(fact)
        if len(blob) > MAX_FACT_BYTES:
            raise QuandaLimitError(f"fact of {len(blob)} bytes is over the {MAX_FACT_BYTES}-byte limit")
        await self._publish_fact(topic, blob)
        self._deliver_fact(topic, fact)

    async def listen(self, callback: FactListener) -> Callable[[], None]:
        """Call `callback(topic, fact)` on the event loop for every fact published from now on, by this
        process or another; returns the function that stops it."""
        self._check_open()
        if not self._fact_listeners:
            await self._start_facts()
        self._fact_listeners.append(callback)
        self._ensure_watcher()

        def stop() -> None:
            if callback in self._fact_listeners:
                self._fact_listeners.remove(callback)
        return stop

    def _deliver_fact(self, topic: str, fact: dict[str, Any]) -> None:
        for callback in list(self._fact_listeners):
            try:
                callback(topic, fact)
            except Exception:  # noqa: BLE001 - one listener's bug must not stop the others
                log.exception("fact listener failed on %s", topic)

    def _remote_facts(self, facts: list[tuple[str, str]]) -> None:
        """Facts (topic, JSON text) other processes published, in order: hand them to the listeners."""
        for topic, blob in facts:
            try:
                fact = json.loads(blob)
            except ValueError:
                log.warning("unreadable fact on %s dropped", topic)
                continue
            self._deliver_fact(topic, fact)

    # -- trouble: the database failing under the store's own background work ------------------------------

    def on_trouble(self, callback: Callable[[str], None]) -> None:
        """`callback(problem)` on the event loop when the store's own background work (its listener, its
        watcher) finds the database not answering: nobody's call failed, so nobody else would notice."""
        self._trouble_listeners.append(callback)

    def _trouble(self, problem: str) -> None:
        for callback in list(self._trouble_listeners):
            try:
                callback(problem)
            except Exception:  # noqa: BLE001 - one listener's bug must not hide the news from the others
                log.exception("a trouble listener failed")

    # -- live delivery ------------------------------------------------------------------------------------

    def subscribe(self, message_id: str) -> Subscription:
        """Register before reading a snapshot, so no commit can fall between the two."""
        message_id = check_id(message_id)
        sub = Subscription(message_id, self._unsubscribe)
        self._subscriptions.setdefault(message_id, set()).add(sub)
        self._ensure_watcher()
        return sub

    def _ensure_watcher(self) -> None:
        """Start the watcher unless one runs that will see the new interest (it re-checks before it exits)."""
        if self._watcher is None or self._watcher.done() or self._watcher_exiting:
            self._watcher_exiting = False
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    @property
    def _watching(self) -> bool:
        """Whether anyone needs the watcher: subscriptions or fact listeners."""
        return bool(self._subscriptions or self._fact_listeners) and not self._closed

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscriptions.get(sub.message_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscriptions[sub.message_id]

    def _publish(self, message_id: str, tokens: list[QuandaToken]) -> None:
        """Hand tokens this process committed to the local readers (on the event loop)."""
        for sub in self._subscriptions.get(message_id, ()):
            sub.push(tokens)

    def _remote_progress(self, last_seqs: dict[str, int]) -> bool:
        """Mark stale the subscriptions behind the given last seqs; True if any was."""
        woke = False
        for message_id, last_seq in last_seqs.items():
            for sub in self._subscriptions.get(message_id, ()):
                if last_seq > sub.known_seq:
                    sub.mark_stale()
                    woke = True
        return woke

    async def _poll_once(self) -> bool:
        """One poll for other processes' writes to the messages followed here, and for their facts; whether
        anything new was handed on."""
        changed = await self._poll_last_seqs(list(self._subscriptions)) if self._subscriptions else None
        woke = bool(changed) and self._remote_progress(changed)
        if self._fact_listeners:
            facts = await self._poll_facts()
            if facts:
                self._remote_facts(facts)
                woke = True
        return woke

    async def _watch(self) -> None:
        """Adaptive polling for commits by other processes, while anyone subscribes or listens."""
        delay = self.poll_min
        while True:
            if not self._watching:
                self._watcher_exiting = True  # a subscribe() from now on starts a new watcher
                return
            woke = False
            try:
                woke = await self._poll_once()
            except QuandaError as exc:
                log.warning("watcher: %s", exc)
                self._trouble(str(exc))
                delay = self.poll_max
            delay = self.next_poll_delay(delay, woke=woke)
            await asyncio.sleep(delay)

    @classmethod
    def next_poll_delay(cls, delay: float, woke: bool) -> float:
        """Tight while other processes write, doubling up to `poll_max` while they are idle."""
        return cls.poll_min if woke else min(delay * 2, cls.poll_max)


    @abstractmethod
    async def _poll_last_seqs(self, message_ids: list[str]) -> dict[str, int] | None:
        """last_seq of the given messages if anything may have changed since the last call, else None."""


    @abstractmethod
    async def _publish_fact(self, topic: str, blob: str) -> None:
        """Make the fact (its JSON text) visible to other processes' `_poll_facts` (or push it to them)."""


    @abstractmethod
    async def _start_facts(self) -> None:
        """Remember where the fact log ends now: `_poll_facts` reports what other processes publish after."""


    @abstractmethod
    async def _poll_facts(self) -> list[tuple[str, str]]:
        """Facts other processes published since the last call (or `_start_facts`), in order, as
        (topic, JSON text)."""
