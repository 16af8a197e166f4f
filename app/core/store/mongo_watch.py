"""Wake-ups from other processes on MongoDB: the change-stream watcher, mixed into `MongoStore`.

One change stream on the database, projected down to what readers need (the collection, the document key
and the new `last_seq`), matching `update` and `replace` events (servers log a pipeline update as a
replacement when that is smaller, and MongoDB 4.4 reports them so), wakes readers and fact listeners of
other processes. A stream that breaks is reopened with backoff, polling once meanwhile — a failover's
errors (HostUnreachable, NotWritablePrimary, a primary stepping down …) included: only the server saying
it has no change streams (not a replica set, no `$changeStream` stage, no privilege: `UNSUPPORTED_CODES`)
or a client without them (mongomock) make the base class poll instead, and even then the stream is tried
again every CHANGE_RECHECK_S (a standalone made a replica set, a privilege granted), never given up for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from typing import Any

from bson import ObjectId

from ..errors import QuandaError
from .base import QuandaStore
from .mongo_client import driver_errors, translated_errors
from .mongo_layout import FACTS, MESSAGES

log = logging.getLogger("quanda.store.mongo")

CHANGE_WAIT_MS = 1000  # a change stream's getMore waits this long for events (the watcher's idle tick)
CHANGE_RETRY_S = (0.05, 5.0)  # reopening a broken change stream: first delay, doubling up to the second
CHANGE_RECHECK_S = 60.0  # where the server has no change streams: polling, and trying one again this often
# the server has no change streams: 40573 "only supported on replica sets", 40324 unknown pipeline stage
# ($changeStream before 3.6), 13 Unauthorized, 115 CommandNotSupported, 20 IllegalOperation
UNSUPPORTED_CODES = frozenset({40573, 40324, 13, 115, 20})
_UNKNOWN_PROGRESS = 1 << 62  # an event that does not say the new last_seq: assume there is news


def _change_streams_unsupported(exc: BaseException) -> bool:
    """Whether opening a change stream failed because there are none here: a client without a usable
    watch() (mongomock's database answers `.watch` with a collection named so), or the server said so (not a
    replica set, no $changeStream stage, no privilege) — not a failover's passing error."""
    from pymongo.errors import OperationFailure
    if isinstance(exc, OperationFailure):
        return exc.code in UNSUPPORTED_CODES
    return isinstance(exc, (NotImplementedError, AttributeError, TypeError))


async def _aclose_quietly(stack: contextlib.AsyncExitStack) -> None:
    try:
        await stack.aclose()
    except Exception as exc:  # noqa: BLE001 - a stream that fails to close is gone anyway
        log.debug("closing a change stream failed: %s", exc)


# -- the change stream: a fresh pipeline per call (mongomock mutates what it is handed) ------------------


def change_pipeline() -> list[dict[str, Any]]:
    """What the watcher's change stream delivers: new `last_seq`s of messages (from `update` events that set
    it, and from `replace` events) and new facts, each projected down to a few dozen bytes."""
    return [
        {"$match": {"$or": [
            {"ns.coll": MESSAGES, "operationType": "update",
             "updateDescription.updatedFields.last_seq": {"$exists": True}},
            {"ns.coll": MESSAGES, "operationType": "replace"},
            {"ns.coll": FACTS, "operationType": "insert"},
        ]}},
        {"$project": {"operationType": 1, "ns.coll": 1, "documentKey": 1,
                      "updateDescription.updatedFields.last_seq": 1, "fullDocument.last_seq": 1}},
    ]


def event_last_seq(change: dict[str, Any]) -> int:
    """The new last_seq an `update` or `replace` event carries (or a huge number when it says none)."""
    for section, fields in (("updateDescription", "updatedFields"), ("fullDocument", None)):
        part = change.get(section) or {}
        value = (part.get(fields) or {}).get("last_seq") if fields else part.get("last_seq")
        if type(value) is int:
            return value
    return _UNKNOWN_PROGRESS


class MongoWatcher(QuandaStore):
    """Follows the database's change stream for `MongoStore` (see the module docstring)."""

    _db: Any  # MongoStore's database and collection
    _messages: Any
    _fact_cursor: int  # the fact bus's position and hole (mongo_facts.py)
    _fact_gap: tuple[int, float] | None

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        self._delivered = False  # whether the current change stream has delivered anything

    async def _poll_last_seqs(self, message_ids: list[str]) -> dict[str, int] | None:
        with translated_errors("poll messages"):
            cursor = self._messages.find({"_id": {"$in": [ObjectId(m) for m in message_ids]}}, {"last_seq": 1})
            docs = await cursor.to_list(length=len(message_ids))
        return {str(doc["_id"]): doc["last_seq"] for doc in docs}

    async def _watch(self) -> None:
        """Follow the database's change stream while anyone subscribes or listens; reopen it when it breaks
        (polling once meanwhile, so nothing waits for it); poll instead where the server has none."""
        retry = CHANGE_RETRY_S[0]
        while True:
            if not self._watching:
                self._watcher_exiting = True  # a subscribe() from now on starts a new watcher
                return
            outcome = await self._run_change_stream()
            if outcome == "idle":
                return  # `_watcher_exiting` was set when the decision was taken, before the stream closed
            if outcome == "unsupported":
                try:
                    await asyncio.wait_for(super()._watch(), CHANGE_RECHECK_S)
                    return  # nobody needs the watcher any more
                except asyncio.TimeoutError:
                    continue  # polled long enough: try a change stream again
            if outcome == "followed":  # it worked for a while: reopen at once
                retry = CHANGE_RETRY_S[0]
            await self._poll_once()
            await asyncio.sleep(retry)
            retry = min(retry * 2, CHANGE_RETRY_S[1])

    async def _run_change_stream(self) -> str:
        """'idle' (nobody needs the watcher any more), 'unsupported', 'broken' (could not open or failed at
        once) or 'followed' (failed after delivering)."""
        stack = contextlib.AsyncExitStack()
        try:
            stream = self._db.watch(change_pipeline(), max_await_time_ms=CHANGE_WAIT_MS)
            if inspect.isawaitable(stream):  # PyMongo's AsyncMongoClient; motor opens it on entering
                stream = await stream
            stream = await stack.enter_async_context(stream)
        except Exception as exc:  # noqa: BLE001 - sorted below
            await _aclose_quietly(stack)
            if _change_streams_unsupported(exc):
                log.info("no change streams on this server (%s); polling for other processes' writes", exc)
                return "unsupported"
            if isinstance(exc, driver_errors()):
                log.warning("cannot open a change stream (%s); polling until it reopens", exc)
                return "broken"
            raise
        self._delivered = False
        try:
            if await self._follow_changes(stream):
                return "idle"
            return "followed" if self._delivered else "broken"  # it ended (invalidated, closed)
        except Exception as exc:  # noqa: BLE001 - a broken stream must not leave readers without a watcher
            if isinstance(exc, (QuandaError, *driver_errors())):
                log.warning("change stream failed (%s); reopening", exc)
            else:
                log.exception("change stream handling failed; reopening")
            return "followed" if self._delivered else "broken"
        finally:
            await _aclose_quietly(stack)

    async def _follow_changes(self, stream: Any) -> bool:
        """Deliver what the stream reports; True when nobody needs the watcher any more, False when the
        stream ended (invalidated, closed)."""
        for subs in list(self._subscriptions.values()):  # commits made before the stream opened
            for sub in subs:
                sub.mark_stale()
        await self._deliver_remote_facts()
        while True:
            if not self._watching:
                self._watcher_exiting = True  # decided here, before any await: see base._ensure_watcher
                return True
            if not stream.alive:
                return False
            change = await stream.try_next()
            if change is None:  # an idle tick: retry a fact gap that may have expired
                if self._fact_gap is not None:
                    await self._deliver_remote_facts()
                continue
            self._delivered = True
            await self._on_change(change)

    async def _on_change(self, change: dict[str, Any]) -> None:
        collection = (change.get("ns") or {}).get("coll")
        key = (change.get("documentKey") or {}).get("_id")
        if collection == FACTS:
            if type(key) is not int or key > self._fact_cursor:
                await self._deliver_remote_facts()
        elif collection == MESSAGES and key is not None and str(key) in self._subscriptions:
            self._remote_progress({str(key): event_last_seq(change)})

    async def _poll_once(self) -> None:
        try:
            if self._subscriptions:
                changed = await self._poll_last_seqs(list(self._subscriptions))
                if changed:
                    self._remote_progress(changed)
            await self._deliver_remote_facts()
        except QuandaError as exc:
            log.warning("watcher: %s", exc)

    async def _deliver_remote_facts(self) -> None:
        if self._fact_listeners:
            facts = await self._poll_facts()
            if facts:
                self._remote_facts(facts)
