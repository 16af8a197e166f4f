"""Facts on PostgreSQL, mixed into `PostgresStore`: a row of `quanda_facts` and a notification, both sent
by the same statement.

A fact too large for a notification payload (under 8,000 bytes) is sent as its id and read from the
table. Notifications come through the store's listener (`postgres_listener.py`); after a lost connection
the table is read from the last settled id, deduplicated by id (a sequence's ids can commit out of order).
Rows older than FACTS_KEPT_S are pruned.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from ..errors import QuandaError
from .base import QuandaStore

log = logging.getLogger("quanda.store.postgres")

LISTEN_WAIT_S = 2.0  # how long a first fact listener waits for LISTEN to be in effect before relying on polls
NOTIFY_BODY_MAX = 7900  # bytes of a fact's inline body; the payload limit is 8,000 bytes in all
FACTS_KEPT_S = 120  # facts older than this are pruned
FACT_SETTLED_S = 10  # a fact row older than this has no uncommitted predecessor still to come
PRUNE_EVERY = 256


class PostgresFacts(QuandaStore):
    """Publishes and receives facts for `PostgresStore` (see the module docstring)."""

    _loop: asyncio.AbstractEventLoop  # PostgresStore's
    _s: str
    channel: str
    _conn: Callable[[str], AbstractAsyncContextManager[Any]]
    _listener_up: asyncio.Event  # PostgresListener's
    _ensure_listener: Callable[[], None]

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        self._fact_lock = asyncio.Lock()
        self._published = 0
        self._fact_start = 0  # facts with ids up to this were published before anyone here listened
        self._fact_floor = 0  # the poll reads ids above this
        self._facts_seen: dict[int, float] = {}
        self._fact_backlog: deque[tuple[int, str]] = deque()
        self._fact_drainer: asyncio.Task | None = None

    async def _publish_fact(self, topic: str, blob: str) -> None:
        topic_json = json.dumps(topic)  # ASCII, and no U+0000 (a notification payload cannot carry one)
        body = f"{len(topic_json)}:{topic_json}{blob}"
        if len(body.encode("utf-8")) > NOTIFY_BODY_MAX:
            body = ""  # too large for a notification: listeners read it from the table by its id
        async with self._fact_lock:  # one at a time: facts of this process commit in publishing order
            self._published += 1
            async with self._conn("publish") as conn:
                await conn.execute(
                    f"WITH f AS (INSERT INTO {self._s}.quanda_facts (origin, topic, data) VALUES ($1::text, $2, $3) "
                    f"RETURNING id) SELECT pg_notify($4::text, 'f' || $1::text || f.id || ':' || $5::text) FROM f",
                    self.origin, topic.encode(), blob, self.channel, body)
                if self._published % PRUNE_EVERY == 0:
                    await conn.execute(f"DELETE FROM {self._s}.quanda_facts WHERE at < now() - make_interval(secs => $1)",
                                       float(FACTS_KEPT_S))

    async def _start_facts(self) -> None:
        self._ensure_listener()
        try:  # not needed for correctness (the watcher polls from the cursor until LISTEN is in effect)
            await asyncio.wait_for(self._listener_up.wait(), LISTEN_WAIT_S)
        except asyncio.TimeoutError:
            log.warning("PostgreSQL listener not connected yet: facts are polled until it is")
        async with self._conn("listen") as conn:
            self._fact_start = self._fact_floor = await conn.fetchval(
                f"SELECT coalesce(max(id), 0) FROM {self._s}.quanda_facts")

    async def _poll_facts(self) -> list[tuple[str, str]]:
        """Facts of other processes after the floor not yet delivered (a fallback: NOTIFY brings them)."""
        async with self._conn("poll facts") as conn:
            rows = await conn.fetch(
                f"SELECT id, origin, topic, data, at < now() - make_interval(secs => $2) AS settled "
                f"FROM {self._s}.quanda_facts WHERE id > $1 ORDER BY id", self._fact_floor, float(FACT_SETTLED_S))
        facts = []
        for fact_id, origin, topic, data, settled in rows:
            if settled:
                self._fact_floor = fact_id  # an uncommitted fact below a settled one would be stuck for long
            if origin != self.origin and self._first_sight(fact_id):
                facts.append((topic.decode("utf-8"), data))
        return facts

    def _first_sight(self, fact_id: int) -> bool:
        """True the first time a fact id is seen (through a notification or a poll)."""
        if fact_id <= self._fact_start or fact_id in self._facts_seen:
            return False
        now = time.monotonic()
        self._facts_seen[fact_id] = now
        if len(self._facts_seen) % 1024 == 0:
            horizon = now - 2 * FACTS_KEPT_S
            self._facts_seen = {k: t for k, t in self._facts_seen.items() if t > horizon}
        return True

    def _on_fact(self, payload: str) -> None:
        """`f` + origin + id + ':' + body, body = `len(topic JSON)` ':' topic JSON, fact JSON — or empty."""
        if payload[1:25] == self.origin or not self._fact_listeners:
            return
        fact_id, _, body = payload[25:].partition(":")
        if not self._first_sight(int(fact_id)):
            return
        if body and not self._fact_backlog:
            self._remote_facts([_parse_body(body)])
            return
        self._fact_backlog.append((int(fact_id), body))  # behind a fact being read from the table: keep order
        if self._fact_drainer is None or self._fact_drainer.done():
            self._fact_drainer = self._loop.create_task(self._drain_facts())

    async def _drain_facts(self) -> None:
        while self._fact_backlog:
            fact_id, body = self._fact_backlog[0]
            facts = []
            if body:
                facts.append(_parse_body(body))
            else:
                try:
                    async with self._conn("read fact") as conn:
                        row = await conn.fetchrow(f"SELECT topic, data FROM {self._s}.quanda_facts WHERE id = $1",
                                                  fact_id)
                except QuandaError as exc:
                    log.warning("fact %d could not be read: %s", fact_id, exc)
                    row = None
                if row is not None:
                    facts.append((row["topic"].decode("utf-8"), row["data"]))
            self._fact_backlog.popleft()
            self._remote_facts(facts)


def _parse_body(body: str) -> tuple[str, str]:
    length, _, rest = body.partition(":")
    n = int(length)
    return json.loads(rest[:n]), rest[n:]
