"""The store interface every backend implements, and what they share: validation, limits and wake-ups.

Backends implement the `_`-prefixed verbs; the public verbs validate their input first, so a bad call
reaches no database. Ids are 24-hex strings (BSON ObjectIds) on every backend.

Close to 400 lines because it is the whole contract of a store in one place (messages, records, counters,
the fact bus and the wake-ups), each verb with its validation; the backends' parts follow its sections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from bson import ObjectId

from ..errors import QuandaError, QuandaLimitError, QuandaStoreError
from ..token import IMMUTABLE, KINDS, OVERRIDE, QuandaToken
from ..validation import check_data, check_id, check_key, check_record_kind, check_seq, check_text, encode_record
from .subscription import Subscription

log = logging.getLogger("quanda.store")

DEFAULT_MAX_TOKEN_BYTES = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES = 16 << 20
MAX_FACT_BYTES = 7000  # under PostgreSQL's NOTIFY payload limit (8,000 bytes)
RECORD_VERBS = ("insert", "put", "delete")
RecordOp = tuple[str, str, str, "dict[str, Any] | None"]
FactListener = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message's stored state at one moment."""

    id: str
    role: str
    content: str
    estimate: str | None
    warning: str
    immutable: bool
    last_seq: int
    created_at: float
    updated_at: float



def new_id() -> str:
    return str(ObjectId())


def utf8_len(text: str | None) -> int:
    return len(text.encode("utf-8", "surrogatepass")) if text else 0


class QuandaStore(ABC):
    """A backend: messages with their token logs, plus keyed records for higher-level data."""

    #: cross-process watcher: poll interval bounds (seconds), tightened on change, doubled when idle
    poll_min = 0.001
    poll_max = 0.025
    #: whether `commit_records` is all-or-nothing (a transaction) on this backend
    atomic_records = True

    def __init__(self, *, max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.max_token_bytes = max_token_bytes
        self.max_message_bytes = max_message_bytes
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._watcher: asyncio.Task | None = None
        self._watcher_exiting = False
        self._fact_listeners: list[FactListener] = []
        self.origin = new_id()  # this process's name on the fact bus (its own facts it delivers directly)
        self._closed = False

    # -- messages -------------------------------------------------------------------------------------

    async def create_message(self, role: str, content: str = "") -> MessageRecord:
        """A new mutable message; non-empty initial content is logged as an `override` token (seq 1)."""
        self._check_open()
        if not isinstance(role, str) or not isinstance(content, str):
            raise TypeError("role and content must be str")
        if not role or len(role) > 64:
            raise QuandaError("role must be 1 to 64 characters")
        check_text(role, "role")
        check_text(content, "content")
        self._check_token_size(content, None)
        return await self._create_message(role, content, time.time())

    async def get_message(self, message_id: str) -> MessageRecord:
        self._check_open()
        return await self._get_message(check_id(message_id))

    async def append(self, message_id: str, kind: str, text: str = "",
                     estimate: str | None = None) -> QuandaToken:
        """Append one token atomically; returns it with its seq. Making an immutable message immutable
        again returns its existing `immutable` token and writes nothing."""
        self._check_open()
        message_id = check_id(message_id)
        if kind not in KINDS:
            raise QuandaError(f"unknown token kind {kind!r}; expected one of {', '.join(KINDS)}")
        if not isinstance(text, str):
            raise TypeError(f"token text must be str, not {type(text).__name__}")
        if estimate is not None and not isinstance(estimate, str):
            raise TypeError(f"estimate must be str or None, not {type(estimate).__name__}")
        if kind == IMMUTABLE:
            text, estimate = "", None
        elif kind == OVERRIDE:
            estimate = None
        check_text(text, "token text")
        if estimate is not None:
            check_text(estimate, "estimate")
        self._check_token_size(text, estimate)
        return await self._append(message_id, kind, text, estimate)

    async def select_tokens(self, message_id: str, gt: int = 0, limit: int = 1000) -> list[QuandaToken]:
        """Tokens with seq > gt, in seq order, at most `limit`."""
        self._check_open()
        message_id = check_id(message_id)
        gt = check_seq(gt, "gt")
        limit = check_seq(limit, "limit")
        return await self._select_tokens(message_id, gt, max(1, limit))

    async def select_messages(self, *, role: str | None = None, immutable: bool | None = None,
                              limit: int = 1000) -> list[MessageRecord]:
        """Messages (newest first) filtered by role and mutability."""
        self._check_open()
        return await self._select_messages(role, immutable, limit)

    def _check_open(self) -> None:
        if self._closed:
            raise QuandaStoreError("the store is closed")

    def _check_token_size(self, text: str, estimate: str | None) -> None:
        size = utf8_len(text) + utf8_len(estimate)
        if size > self.max_token_bytes:
            raise QuandaLimitError(
                f"token of {size} bytes is over the {self.max_token_bytes}-byte limit; nothing was written")

    def _over_message_limit(self, message_id: str, size: int) -> QuandaLimitError:
        return QuandaLimitError(f"message {message_id} would grow to {size} bytes, over its "
                                f"{self.max_message_bytes}-byte limit; nothing was written")

    # -- records: conversations, todos, plugin state ------------------------------------------------------

    async def insert_record(self, kind: str, key: str, data: dict[str, Any]) -> bool:
        """Store `data` under (kind, key) unless the key exists; True if written. The exactly-once primitive."""
        self._check_open()
        return await self._insert_record(check_record_kind(kind), check_key(key), check_data(data))

    async def put_record(self, kind: str, key: str, data: dict[str, Any]) -> None:
        self._check_open()
        await self._put_record(check_record_kind(kind), check_key(key), check_data(data))

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        self._check_open()
        return await self._get_record(check_record_kind(kind), check_key(key))

    async def delete_record(self, kind: str, key: str) -> bool:
        self._check_open()
        return await self._delete_record(check_record_kind(kind), check_key(key))

    async def list_records(self, kind: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """(key, data) pairs whose key starts with `prefix`, in key order."""
        self._check_open()
        if not isinstance(prefix, str):
            raise TypeError("prefix must be str")
        check_text(prefix, "record key prefix")
        return await self._list_records(check_record_kind(kind), prefix)

    async def list_last_records(self, kind: str, prefix: str, count: int) -> list[tuple[str, dict[str, Any]]]:
        """The last `count` records whose key starts with `prefix`, in key order (reading `count`, not all)."""
        self._check_open()
        if not isinstance(prefix, str) or not isinstance(count, int) or count < 1:
            raise TypeError("prefix must be str and count a positive int")
        check_text(prefix, "record key prefix")
        return await self._list_last_records(check_record_kind(kind), prefix, count)

    async def _list_last_records(self, kind: str, prefix: str, count: int) -> list[tuple[str, dict[str, Any]]]:
        return (await self._list_records(kind, prefix))[-count:]  # a backend that can reads only those

    async def delete_messages(self, message_ids: Sequence[str]) -> int:
        """Delete messages with their tokens (a deleted conversation's; none may still be written). Unknown
        ids are skipped; returns how many were deleted."""
        self._check_open()
        return await self._delete_messages(sorted({check_id(m) for m in message_ids}))

    async def _delete_messages(self, message_ids: list[str]) -> int:
        raise NotImplementedError

    async def commit_records(self, ops: Sequence[RecordOp]) -> bool:
        """Apply record operations as one unit: `("insert", kind, key, data)` (insert-if-absent),
        `("put", kind, key, data)`, `("delete", kind, key, None)`. An insert whose key exists rejects the
        unit and the call returns False. SQLite and PostgreSQL run the unit in one transaction: all or
        nothing. MongoDB applies the ops in order and stops at a rejected insert (earlier ops stay), so
        put the claim first and make the rest idempotent (puts of whole values, deletes)."""
        self._check_open()
        checked: list[RecordOp] = []
        for op in ops:
            if not isinstance(op, tuple) or len(op) != 4 or op[0] not in RECORD_VERBS:
                raise QuandaError(f"a record op is (verb, kind, key, data) with verb in {RECORD_VERBS}, not {op!r:.80}")
            verb, kind, key, data = op
            checked.append((verb, check_record_kind(kind), check_key(key),
                            None if verb == "delete" else check_data(data)))
        if not checked:
            return True
        return await self._commit_records(checked)

    async def bump_counter(self, key: str) -> int:
        """Atomically add one to the counter `key` (starting at 0) and return the new value."""
        self._check_open()
        return await self._bump_counter(check_key(key))

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
                delay = self.poll_max
            delay = self.next_poll_delay(delay, woke=woke)
            await asyncio.sleep(delay)

    @classmethod
    def next_poll_delay(cls, delay: float, woke: bool) -> float:
        """Tight while other processes write, doubling up to `poll_max` while they are idle."""
        return cls.poll_min if woke else min(delay * 2, cls.poll_max)

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except asyncio.CancelledError:
                pass
        await self._close()

    async def __aenter__(self) -> "QuandaStore":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- what a backend implements ------------------------------------------------------------------------

    @abstractmethod
    async def _create_message(self, role: str, content: str, now: float) -> MessageRecord: ...

    @abstractmethod
    async def _get_message(self, message_id: str) -> MessageRecord: ...

    @abstractmethod
    async def _append(self, message_id: str, kind: str, text: str, estimate: str | None) -> QuandaToken: ...

    @abstractmethod
    async def _select_tokens(self, message_id: str, gt: int, limit: int) -> list[QuandaToken]: ...

    @abstractmethod
    async def _select_messages(self, role: str | None, immutable: bool | None,
                               limit: int) -> list[MessageRecord]: ...

    @abstractmethod
    async def _poll_last_seqs(self, message_ids: list[str]) -> dict[str, int] | None:
        """last_seq of the given messages if anything may have changed since the last call, else None."""

    @abstractmethod
    async def _insert_record(self, kind: str, key: str, data: dict[str, Any]) -> bool: ...

    @abstractmethod
    async def _put_record(self, kind: str, key: str, data: dict[str, Any]) -> None: ...

    @abstractmethod
    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def _delete_record(self, kind: str, key: str) -> bool: ...

    @abstractmethod
    async def _list_records(self, kind: str, prefix: str) -> list[tuple[str, dict[str, Any]]]: ...

    @abstractmethod
    async def _commit_records(self, ops: list[RecordOp]) -> bool: ...

    @abstractmethod
    async def _bump_counter(self, key: str) -> int: ...

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

    @abstractmethod
    async def _close(self) -> None: ...
