"""Facts on MongoDB, mixed into `MongoStore`: documents `{_id: seq, origin, topic, data, at}` in
`quanda_facts`, seqs from a counter (the integer key 0 of `quanda_counters`, which no public counter can
take), pruned by a TTL index.

A listener reads them in seq order (woken by the change stream, `mongo_watch.py`); a seq taken by a
publisher that crashed before inserting is filled with a tombstone after FACT_GAP_WAIT_S, by whichever
listener sees it first (a late publisher then takes a new seq).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from typing import Any

from ..errors import QuandaStoreError
from .base import QuandaStore
from .mongo_client import WRITE_RETRIES, translated_errors

log = logging.getLogger("quanda.store.mongo")

FACT_GAP_WAIT_S = 2.0  # a fact seq still missing after this, while later ones exist, is given up
FACT_GAP_FILL_MAX = 1000  # a longer hole is history pruned under a listener that fell behind: jumped
FACT_BATCH = 500
FACTS_KEPT_S = 120  # TTL of facts (a listener more than this behind has lost them anyway)
FACT_SEQ_KEY = 0  # the fact counter's key in quanda_counters: an int, so no string key can take it


class MongoFacts(QuandaStore):
    """Publishes and reads facts for `MongoStore` (see the module docstring)."""

    _facts: Any  # MongoStore's collections
    _counters: Any
    _increment: Callable[[Any], Coroutine[Any, Any, int]]  # MongoRecords' counter

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        self._fact_cursor = 0
        self._fact_gap: tuple[int, float] | None = None  # (missing seq, when first seen)

    async def _publish_fact(self, topic: str, blob: str) -> None:
        from pymongo.errors import DuplicateKeyError
        for _ in range(WRITE_RETRIES):
            seq = await self._increment(FACT_SEQ_KEY)
            with translated_errors("publish a fact"):
                try:
                    await self._facts.insert_one({"_id": seq, "origin": self.origin, "topic": topic, "data": blob,
                                                  "at": datetime.now(timezone.utc)})
                    return
                except DuplicateKeyError:  # we were so slow that a listener gave our seq up: take another
                    log.warning("fact seq %d was given up before it was written; publishing again", seq)
        raise QuandaStoreError("could not publish a fact: its seqs kept being given up")

    async def _start_facts(self) -> None:
        with translated_errors("read the fact counter"):
            doc = await self._counters.find_one({"_id": FACT_SEQ_KEY})
        self._fact_cursor = doc["value"] if doc else 0
        self._fact_gap = None

    async def _poll_facts(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        while True:
            with translated_errors("read facts"):
                cursor = self._facts.find({"_id": {"$gt": self._fact_cursor}}).sort("_id", 1).limit(FACT_BATCH)
                docs = await cursor.to_list(length=FACT_BATCH)
            again = len(docs) == FACT_BATCH
            for doc in docs:
                if doc["_id"] != self._fact_cursor + 1:
                    again = await self._give_up_gap(doc["_id"])
                    break
                self._fact_cursor = doc["_id"]
                self._fact_gap = None
                if doc.get("origin") not in (self.origin, None) and not doc.get("gap"):
                    out.append((doc["topic"], doc["data"]))
            if not again:
                return out

    async def _give_up_gap(self, next_present: int) -> bool:
        """The facts from `_fact_cursor + 1` up to `next_present` are missing (publishers between taking a seq
        and inserting, or crashed there). Wait FACT_GAP_WAIT_S, then fill the hole with tombstones — the same
        for every listener: a publisher still alive then gets a duplicate key and publishes again. True when
        a tombstone went in (read again). When every seq of the hole turns out to be there already, this
        listener's reads lag behind the primary (replication lag: the facts are written, not yet visible to a
        majority read): it waits FACT_GAP_WAIT_S more, rather than reading again at once, and again, for as
        long as the lag lasts."""
        from pymongo.errors import DuplicateKeyError
        missing = self._fact_cursor + 1
        now = time.monotonic()
        if self._fact_gap is None or self._fact_gap[0] != missing:
            self._fact_gap = (missing, now)
            return False
        if now - self._fact_gap[1] < FACT_GAP_WAIT_S:
            return False
        if next_present - missing > FACT_GAP_FILL_MAX:
            log.warning("facts %d to %d are gone (pruned?); skipping them", missing, next_present - 1)
            self._fact_cursor = next_present - 1
            return True
        filled = 0
        for seq in range(missing, next_present):
            with translated_errors("give up a fact seq"):
                try:
                    await self._facts.insert_one({"_id": seq, "gap": True, "at": datetime.now(timezone.utc)})
                    filled += 1
                except DuplicateKeyError:
                    pass  # it arrived after all (or another listener filled it)
        if filled:
            log.warning("fact seqs %d to %d never arrived; gave %d up", missing, next_present - 1, filled)
            return True
        self._fact_gap = (missing, now)  # all there, not yet visible here: lag; look again later
        return False
