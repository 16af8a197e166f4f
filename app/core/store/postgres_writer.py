"""The PostgreSQL store's writes, mixed into `PostgresStore`: one writer task per store, group commit.

Every append of this process goes through one writer task that drains a queue and sends whatever has
gathered as one call of the `quanda_append2` function (`postgres_migrations.py`): one round trip, one
transaction, one commit for the batch (group commit: a lone writer pays one commit per token, a hundred
concurrent writers share one). The function sorts nothing itself: the batch arrives ordered by message
id, so it row-locks the messages (`SELECT … FOR UPDATE`) in id order and two processes' batches never
deadlock. Under the lock it assigns seqs `last_seq + 1, …`, checks immutability and the size limit,
inserts the tokens, updates the row once per message (with a checkpoint of the content at gaps that grow
with the message, see `postgres.py`) and calls `pg_notify` once per message with `origin + message
id + ':' + last seq`: the notification is sent at commit, in commit order, to every process listening on
the database. Expected refusals (unknown id, immutable, over the limit, fenced out) are status codes, not
exceptions, so one bad write never fails the others in its batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import QuandaFencedError, QuandaImmutableError, QuandaNotFoundError, QuandaStoreError
from ..token import IMMUTABLE, QuandaToken
from .base import QuandaStore
from .deadline import Deadlines, timed_out
from .fencing import Fence
from .postgres_client import translated_errors, asyncpg, connection_broken, keep_alive
from .postgres_schema import STATUS_FENCED_OUT, STATUS_IMMUTABLE, STATUS_NOT_FOUND, STATUS_OK, STATUS_OVER_LIMIT, STATUS_SEALED

log = logging.getLogger("quanda.store.postgres")

MAX_BATCH = 512
STOP = object()


@dataclass(slots=True)
class _Append:
    message_id: str
    kind: str
    text: str
    estimate: str | None
    fence: Fence | None
    future: asyncio.Future
    timeout_s: float
    sent: bool = False  # handed to the database (a write past its deadline may then still be applied)

    def expired(self) -> BaseException:
        return timed_out(f"an append to message {self.message_id}", self.timeout_s, self.sent)


@dataclass(frozen=True, slots=True)
class _Written:
    """A token the batch committed (the writer's readers in this process get it pushed)."""

    token: QuandaToken


class PostgresWriter(QuandaStore):
    """The writer task and its connection for `PostgresStore` (see the module docstring)."""

    _loop: asyncio.AbstractEventLoop  # PostgresStore's
    _dsn: str
    _connect_options: dict[str, Any]
    _sql_append: str
    channel: str
    _safe_url: Callable[[], str]

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        self._queue: asyncio.Queue = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._writer_conn: Any = None
        self._deadlines: Deadlines | None = None

    async def _append(self, message_id: str, kind: str, text: str, estimate: str | None,
                      fence: Fence | None) -> QuandaToken:
        if self._closed:
            raise QuandaStoreError("the store is closed")
        if self._deadlines is None:
            self._deadlines = Deadlines(self._loop, self.timeout_s)
        future = self._loop.create_future()
        entry = _Append(message_id, kind, text, estimate, fence, future, self.timeout_s)
        self._queue.put_nowait(entry)
        self._deadlines.watch(future, entry.expired)
        if self._writer is None or self._writer.done():
            self._writer = self._loop.create_task(self._write_loop())
        return await future

    async def _write_loop(self) -> None:
        queue = self._queue
        while True:
            item = await queue.get()
            if item is STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH and not queue.empty():
                item = queue.get_nowait()
                if item is STOP:
                    stop = True
                    break
                batch.append(item)
            batch = [entry for entry in batch if not entry.future.done()]  # past its deadline: not sent
            if not batch:
                if stop:
                    return
                continue
            try:
                outcomes = await self._commit_batch(batch)
            except Exception as exc:  # noqa: BLE001 - whatever broke, no write may wait forever
                log.error("PostgreSQL writer failed a batch", exc_info=exc)
                error = QuandaStoreError(f"PostgreSQL write failed: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                outcomes = [error] * len(batch)
            self._settle(batch, outcomes)
            if stop:
                return

    async def _writer_connection(self) -> Any:
        conn = self._writer_conn
        if conn is None or conn.is_closed():
            with translated_errors(f"connecting to {self._safe_url()}", self.timeout_s):
                conn = await asyncpg.connect(self._dsn, timeout=self.timeout_s, command_timeout=self.timeout_s,
                                             **self._connect_options)
            keep_alive(conn, self.timeout_s)
            self._writer_conn = conn
        return conn

    async def _commit_batch(self, batch: list[_Append]) -> list[Any]:
        """One transaction for the batch. A driver error on a batch of several is retried write by write,
        so only a write that fails alone fails."""
        try:
            return await self._call_append(batch)
        except QuandaStoreError as exc:
            if len(batch) == 1 or not isinstance(exc.__cause__, asyncpg.PostgresError):
                return [exc] * len(batch)
        outcomes: list[Any] = []
        for entry in batch:
            try:
                outcomes.extend(await self._call_append([entry]))
            except QuandaStoreError as exc:
                outcomes.append(exc)
        return outcomes

    async def _call_append(self, batch: list[_Append]) -> list[Any]:
        order = sorted(range(len(batch)), key=lambda j: batch[j].message_id)  # stable: per message, in order
        entries = [batch[j] for j in order]
        with translated_errors("append", self.timeout_s):
            async with asyncio.timeout(self.timeout_s):  # connecting and the call: one deadline
                conn = await self._writer_connection()
                for entry in entries:
                    entry.sent = True
                try:
                    statuses, vals = await conn.fetchrow(
                        self._sql_append, self.channel, self.origin, [e.message_id for e in entries],
                        [e.kind for e in entries], [e.text.encode() for e in entries],
                        [None if e.estimate is None else e.estimate.encode() for e in entries],
                        [e.fence and e.fence.lease_key for e in entries], [e.fence and e.fence.fence for e in entries],
                        self.max_message_bytes, time.time())
                except BaseException as exc:
                    if connection_broken(exc):  # the connection may be gone, or stuck mid-call: renew it
                        self._writer_conn = None
                        conn.terminate()
                    raise
        outcomes: list[Any] = [None] * len(batch)
        for j, entry, status, value in zip(order, entries, statuses, vals):
            outcomes[j] = _Written(QuandaToken(entry.kind, entry.text, entry.estimate, value)) if status == STATUS_OK \
                else self._refusal(entry, status, value)
        return outcomes

    def _refusal(self, entry: _Append, status: int, value: int) -> Any:
        """What a write that added no token returns or raises."""
        if status == STATUS_SEALED:
            return QuandaToken(IMMUTABLE, "", None, value)
        if status == STATUS_NOT_FOUND:
            return QuandaNotFoundError(f"no message with id {entry.message_id!r}")
        if status == STATUS_IMMUTABLE:
            return QuandaImmutableError(f"message {entry.message_id} is immutable; nothing was written")
        if status == STATUS_OVER_LIMIT:
            return self._over_message_limit(entry.message_id, value)
        if status == STATUS_FENCED_OUT:
            return QuandaFencedError(f"message {entry.message_id}: the job's lease {entry.fence.lease_key} is no longer "
                                     f"held with fence {entry.fence.fence}; nothing was written")
        return QuandaStoreError(f"PostgreSQL append returned an unknown status {status}")

    def _settle(self, batch: list[_Append], outcomes: list[Any]) -> None:
        """Hand committed tokens to this process's readers, then answer the writers."""
        for entry, outcome in zip(batch, outcomes):
            if isinstance(outcome, _Written):
                self._publish(entry.message_id, [outcome.token])
        for entry, outcome in zip(batch, outcomes):
            if entry.future.done():
                continue
            if isinstance(outcome, _Written):
                entry.future.set_result(outcome.token)
            elif isinstance(outcome, BaseException):
                entry.future.set_exception(outcome)
            else:
                entry.future.set_result(outcome)
